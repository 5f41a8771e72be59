"""Run inside the align_diarize env: the bundled diarization pipeline on real audio, scored against its RTTM.

Usage: python diarization_der.py AUDIO RTTM [REPEAT]   -> prints one JSON object as the last stdout line.
REPEAT > 1 diarizes the audio repeated that many times, against the reference shifted by the audio length each time.
DER is pyannote.metrics' DiarizationErrorRate(collar=0.25, skip_overlap=False): a 0.25 s total collar, overlap scored.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from pyannote.core import Annotation, Segment
from pyannote.database.util import load_rttm
from pyannote.metrics.diarization import DiarizationErrorRate

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `stages`

from stages.align_diarize.diarization.bundled import load_bundled_pipeline  # noqa: E402

SPEAKER_SETTINGS: dict[str, dict[str, int]] = {"auto": {}, "two": {"num_speakers": 2}, "min2_max4": {"min_speakers": 2, "max_speakers": 4}}


def repeated_reference(reference: Annotation, period: float, repeat: int) -> Annotation:
    """The reference turns shifted by `period` for each repeat: the same speakers come back."""
    shifted = Annotation(uri=reference.uri)
    for k in range(repeat):
        for segment, track, label in reference.itertracks(yield_label=True):
            shifted[Segment(segment.start + k * period, segment.end + k * period), (k, track)] = label
    return shifted


def main() -> None:
    audio_path, rttm_path = Path(sys.argv[1]), Path(sys.argv[2])
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 1
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")  # the checkpoint's "trained with pyannote 0.0.1" and torchaudio notices
    samples, sample_rate = sf.read(audio_path, dtype="float32")
    waveform = torch.from_numpy(np.tile(samples, repeat))[None]
    reference = repeated_reference(next(iter(load_rttm(rttm_path).values())), len(samples) / sample_rate, repeat)
    pipeline = load_bundled_pipeline()
    result: dict[str, object] = {"audio_seconds": waveform.shape[1] / sample_rate}
    for name, speakers in SPEAKER_SETTINGS.items():
        start = time.perf_counter()
        hypothesis = pipeline({"waveform": waveform, "sample_rate": sample_rate, "uri": "sample"}, **speakers)
        result[name] = {
            "der": DiarizationErrorRate(collar=0.25, skip_overlap=False)(reference, hypothesis),
            "num_speakers": len(hypothesis.labels()),
            "seconds": time.perf_counter() - start,
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
