"""Run inside the align_diarize env: checks of the GE2E embedding model on the sample's reference turns.

Usage: python diarization_ge2e.py AUDIO RTTM   -> prints one JSON object as the last stdout line.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch
from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding
from pyannote.database.util import load_rttm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `stages`

from stages.align_diarize.diarization.ge2e import GE2EEmbedding, resemblyzer_weights_path  # noqa: E402

NUM_MASK_FRAMES = 293  # what the bundled segmentation model outputs per 5 s chunk


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_turns(rttm: Path) -> dict[str, list[tuple[float, float]]]:
    """Each speaker's reference turns as (start, end) seconds, longest first."""
    reference = next(iter(load_rttm(rttm).values()))
    turns: dict[str, list[tuple[float, float]]] = {}
    for segment, _, label in reference.itertracks(yield_label=True):
        turns.setdefault(label, []).append((segment.start, segment.end))
    return {label: sorted(spans, key=lambda s: s[0] - s[1]) for label, spans in turns.items()}


def mel_check(model: GE2EEmbedding, samples: np.ndarray) -> dict[str, float]:
    """torch mel vs Resemblyzer's librosa call: worst error relative to the spectrogram's peak."""
    reference = librosa.feature.melspectrogram(y=samples, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    ours = model.mel_frames(torch.from_numpy(samples)[None, None])[0].numpy()
    error = ours - reference
    return {
        "shape_equal": ours.shape == reference.shape,
        "max_rel_error": float(np.abs(error).max() / reference.max()),
        "rel_frobenius_error": float(np.linalg.norm(error) / np.linalg.norm(reference)),
    }


def chunk_masks(chunk_start: float, turns: dict[str, list[tuple[float, float]]]) -> dict[str, np.ndarray]:
    """(293,) frame masks of each speaker's reference turns inside the 5 s chunk starting at `chunk_start`."""
    centres = chunk_start + (np.arange(NUM_MASK_FRAMES) + 0.5) * 5.0 / NUM_MASK_FRAMES
    return {label: np.any([(centres >= s) & (centres < e) for s, e in spans], axis=0).astype(np.float32) for label, spans in turns.items()}


def two_speaker_chunk(duration: float, turns: dict[str, list[tuple[float, float]]]) -> float:
    """Start of the 5 s chunk where the less talkative of the two speakers talks most (a speaker change)."""
    starts = np.arange(0.0, duration - 5.0, 0.1)
    return float(max(starts, key=lambda t: min(mask.sum() for mask in chunk_masks(t, turns).values())))


def main() -> None:
    audio_path, rttm_path = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    samples, sample_rate = sf.read(audio_path, dtype="float32")
    model = GE2EEmbedding.from_resemblyzer(resemblyzer_weights_path())
    turns = reference_turns(rttm_path)
    (a, b) = sorted(turns)

    def embed(start: float, end: float) -> np.ndarray:
        with torch.inference_mode():
            clip = torch.from_numpy(samples[int(start * sample_rate) : int(end * sample_rate)])[None, None]
            return model(clip)[0].numpy()

    emb = {label: [embed(*span) for span in spans[:2]] for label, spans in turns.items()}  # two longest turns each

    # A 5 s chunk where both speakers talk, masked per speaker, plus an empty mask.
    chunk_start = two_speaker_chunk(len(samples) / sample_rate, turns)
    chunk = torch.from_numpy(samples[int(chunk_start * sample_rate) : int((chunk_start + 5) * sample_rate)])
    masks = chunk_masks(chunk_start, turns)
    weights = torch.from_numpy(np.stack([masks[a], masks[b], np.zeros(NUM_MASK_FRAMES, np.float32)]))
    with torch.inference_mode():
        masked = model(chunk[None, None].repeat(3, 1, 1), weights).numpy()
    centroid = {label: np.mean(vectors, axis=0) for label, vectors in emb.items()}

    pipeline_view = PretrainedSpeakerEmbedding(model)  # the path pyannote's SpeakerDiarization takes
    print(
        json.dumps(
            {
                "speakers": [a, b],
                "chunk_start": chunk_start,
                "same_speaker": [cosine(*emb[a]), cosine(*emb[b])],
                "cross_speaker": [cosine(x, y) for x in emb[a] for y in emb[b]],
                "dimension": int(emb[a][0].shape[0]),
                "norms": [float(np.linalg.norm(v)) for vectors in emb.values() for v in vectors],
                "masked_a": {"to_a": cosine(masked[0], centroid[a]), "to_b": cosine(masked[0], centroid[b])},
                "masked_b": {"to_a": cosine(masked[1], centroid[a]), "to_b": cosine(masked[1], centroid[b])},
                "empty_mask_is_nan": bool(np.isnan(masked[2]).all()),
                "mel": mel_check(model, samples),
                "pipeline_view": {
                    "dimension": pipeline_view.dimension,
                    "sample_rate": pipeline_view.sample_rate,
                    "metric": pipeline_view.metric,
                    "min_num_samples": pipeline_view.min_num_samples,
                },
                "model_min_num_samples": model.min_num_samples,
                "specifications": {"problem": model.specifications.problem.name, "resolution": model.specifications.resolution.name},
                "finite": all(math.isfinite(x) for x in masked[:2].ravel().tolist()),
            }
        )
    )


if __name__ == "__main__":
    main()
