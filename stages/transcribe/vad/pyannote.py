"""`--vad_method pyannote`: WhisperX's VAD (pyannote segmentation, the model in the whisperx wheel) without torch.

Stage 2's env exports the model to ONNX once (stages/align_diarize/export_vad.py; the orchestrator runs it). Here
onnxruntime slides it over the audio as pyannote's `Inference` does (5 s windows every 0.5 s, speech = the most
active of its 3 speaker outputs, overlapping windows averaged with Hamming weights), then WhisperX's `Binarize`
(onset/offset hysteresis; a region longer than a chunk is cut at its least speech-like frame in its second half).
tests/test_vad.py compares the regions with whisperx's own VAD pipeline on the sample.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shared.errors import ExitCode, StageError
from stages.common.vad_model import EXPORT_COMMAND, pyannote_vad_files

if TYPE_CHECKING:
    import onnxruntime

    from .options import VadOptions

BATCH = 32  # windows per onnxruntime call (pyannote's default batch size)


@dataclass(frozen=True)
class SlidingModel:
    session: onnxruntime.InferenceSession
    sample_rate: int
    window: int  # samples per window
    step: int  # samples between window starts
    frame_duration: float  # seconds: the receptive field of one output frame
    frame_step: float  # seconds between output frames


@functools.cache
def load_model() -> SlidingModel:
    import onnxruntime

    model_path, sidecar_path = pyannote_vad_files()
    if not (model_path.is_file() and sidecar_path.is_file()):
        raise StageError(
            ExitCode.MODEL_UNAVAILABLE,
            f"the pyannote VAD has not been exported for stage 1 yet ({model_path}): run `stagewhisper transcribe --vad_method "
            f"pyannote ...` (it exports it once from the align_diarize env) or `{EXPORT_COMMAND}` there; or use --vad_method silero",
        )
    meta = json.loads(Path(sidecar_path).read_text(encoding="utf-8"))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
    return SlidingModel(
        session=session,
        sample_rate=int(meta["sample_rate"]),
        window=int(meta["window_samples"]),
        step=round(float(meta["step_seconds"]) * int(meta["sample_rate"])),
        frame_duration=float(meta["frame_duration"]),
        frame_step=float(meta["frame_step"]),
    )


def _window_starts(n_samples: int, model: SlidingModel) -> list[int]:
    """Where pyannote's windows start: every step while a whole window fits, plus a zero-padded last one for the rest."""
    full = 1 + (n_samples - model.window) // model.step if n_samples >= model.window else 0
    has_last = n_samples < model.window or (n_samples - model.window) % model.step > 0
    return [index * model.step for index in range(full + has_last)]


def _windows(audio: np.ndarray, starts: list[int], window: int) -> np.ndarray:
    batch = np.zeros((len(starts), 1, window), dtype=np.float32)
    for row, start in enumerate(starts):
        piece = audio[start : start + window]
        batch[row, 0, : piece.size] = piece
    return batch


def speech_scores(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(speech score per output frame, each frame's middle in seconds), aggregated as pyannote's Inference does."""
    model = load_model()
    audio = np.ascontiguousarray(samples, dtype=np.float32)
    starts = _window_starts(audio.size, model)
    per_window = []
    for first in range(0, len(starts), BATCH):
        batch = _windows(audio, starts[first : first + BATCH], model.window)
        scores = model.session.run(None, {"waveform": batch})[0]  # (windows, frames, speakers)
        per_window.append(scores.max(axis=-1))  # pyannote's VAD hook: speech if any speaker speaks
    scores = np.concatenate(per_window)
    frames_per_window = scores.shape[1]
    weights = np.hamming(frames_per_window)
    seconds = model.window / model.sample_rate
    total = round((seconds + (len(starts) - 1) * model.step / model.sample_rate) / model.frame_step) + 1
    summed, weight = np.zeros(total), np.zeros(total)
    for start, window_scores in zip(starts, scores, strict=True):
        first = round(start / model.sample_rate / model.frame_step)
        summed[first : first + frames_per_window] += window_scores * weights
        weight[first : first + frames_per_window] += weights
    average = summed / np.maximum(weight, 1e-12)
    kept = min(total, int(np.ceil(audio.size / model.sample_rate / model.frame_step)) + 1)  # as pyannote's "loose" crop
    middles = np.arange(kept) * model.frame_step + model.frame_duration / 2
    return average[:kept], middles


def binarize(scores: np.ndarray, times: np.ndarray, onset: float, offset: float, max_duration: float) -> list[tuple[float, float]]:
    """WhisperX's Binarize: active from a score above onset until one below offset; an active region longer than
    max_duration is cut at the lowest score in its second half, and the rest goes on as a new region."""
    regions: list[tuple[float, float]] = []
    if scores.size == 0:
        return regions
    start, active = float(times[0]), bool(scores[0] > onset)
    region_scores, region_times = [float(scores[0])], [start]
    t = start
    for t, y in zip(times[1:].tolist(), scores[1:].tolist(), strict=True):
        if active:
            if t - start > max_duration:
                search_after = len(region_scores) // 2
                cut = search_after + int(np.argmin(region_scores[search_after:]))
                regions.append((start, region_times[cut]))
                start = region_times[cut]
                region_scores, region_times = region_scores[cut + 1 :], region_times[cut + 1 :]
            elif y < offset:
                regions.append((start, t))
                start, active = t, False
                region_scores, region_times = [], []
            region_scores.append(y)
            region_times.append(t)
        elif y > onset:
            start, active = t, True
    if active:
        regions.append((start, t))
    return regions


def speech_spans(samples: np.ndarray, options: VadOptions) -> list[tuple[float, float]]:
    """Speech spans (file seconds, in order), none longer than options.chunk_size."""
    scores, middles = speech_scores(samples)
    duration = np.asarray(samples).size / load_model().sample_rate
    spans = binarize(scores, middles, options.onset, options.resolved_offset, options.chunk_size)
    return [(max(0.0, a), min(duration, b)) for a, b in spans if b > a]
