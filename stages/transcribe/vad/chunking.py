"""Chunks for Whisper (WhisperX's "VAD cut & merge"): speech spans from the chosen VAD, merged greedily into chunks
of at most `chunk_size` seconds; fixed windows for --no_vad."""

from __future__ import annotations

import numpy as np

from . import pyannote, silero
from .options import SpeechChunk, VadOptions


def speech_spans(samples: np.ndarray, options: VadOptions) -> list[tuple[float, float]]:
    """Speech spans (file seconds, in order, none overlapping), none longer than options.chunk_size."""
    if options.method == "pyannote":  # WhisperX's VAD, exported to ONNX by stage 2's env
        return pyannote.speech_spans(samples, options)
    return silero.speech_spans(samples, options)


def merge_chunks(spans: list[tuple[float, float]], chunk_size: float) -> list[SpeechChunk]:
    """Greedily merge consecutive spans while the chunk (first span's start to last span's end) fits in
    chunk_size: the pauses between them stay inside, and fuller windows mean fewer to decode."""
    chunks: list[SpeechChunk] = []
    group: list[tuple[float, float]] = []
    for start, end in spans:
        if end - start > chunk_size + 1e-9 or (group and start < group[-1][1]):
            raise ValueError(f"span ({start}, {end}) is longer than {chunk_size} s or out of order")
        if group and end - group[0][0] > chunk_size + 1e-9:  # tolerance: float seconds of whole-sample spans
            chunks.append(SpeechChunk(group[0][0], group[-1][1], tuple(group)))
            group = []
        group.append((start, end))
    if group:
        chunks.append(SpeechChunk(group[0][0], group[-1][1], tuple(group)))
    return chunks


def fixed_chunks(duration: float, chunk_size: float) -> list[SpeechChunk]:
    """Consecutive chunk_size windows covering [0, duration] exactly (for --no_vad)."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive (got {chunk_size})")
    count = int(np.ceil(duration / chunk_size)) if duration > 0 else 0
    bounds = [(float(i * chunk_size), float(min(duration, (i + 1) * chunk_size))) for i in range(count)]
    return [SpeechChunk(start, end, ((start, end),)) for start, end in bounds]


def vad_chunks(samples: np.ndarray, options: VadOptions) -> list[SpeechChunk]:
    """The chunks to hand to Whisper: speech only, each at most options.chunk_size seconds."""
    return merge_chunks(speech_spans(samples, options), options.chunk_size)
