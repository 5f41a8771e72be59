"""The language stage 1 transcribes: the user's, English for English-only models, or detected (on the first 30 s
for mlx_whisper's sequential decoding; by a vote over the longest VAD chunks for the batched pipeline)."""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.contract import LanguageInfo, LanguageVote
from shared.errors import ExitCode, StageError
from stages.common.audio import SAMPLE_RATE, DecodedAudio

from ..backends.base import Backend
from ..vad.options import SpeechChunk
from .batched import window

LANGUAGE_VOTE_CHUNKS = 8


def refuse_english_only(requested: str | None, multilingual: bool) -> None:
    """An English-only (.en) model would transcribe in English whatever it is told, and stage 2 align with the wrong model."""
    if requested and requested != "en" and not multilingual:
        raise StageError(ExitCode.USAGE, f"--language {requested}: the model is English-only; use --language en or a multilingual model")


def sequential_language(model: Any, audio: DecodedAudio, language: str | None, compute_type: str) -> LanguageInfo:
    """The user's language, English for .en models, else detected on the first 30 s with its probability."""
    refuse_english_only(language, model.is_multilingual)
    if language:
        return LanguageInfo(code=language, probability=None, source="user")
    if not model.is_multilingual:
        return LanguageInfo(code="en", probability=None, source="model")
    import mlx.core as mx
    from mlx_whisper.audio import N_FRAMES, log_mel_spectrogram, pad_or_trim

    mel = log_mel_spectrogram(audio.samples[: 30 * SAMPLE_RATE], n_mels=model.dims.n_mels)
    mel = pad_or_trim(mel, N_FRAMES, axis=-2).astype(getattr(mx, compute_type))
    _, probabilities = model.detect_language(mel)
    code = max(probabilities, key=probabilities.get)
    return LanguageInfo(code=code, probability=round(float(probabilities[code]), 4), source="detected")


def vote_language(backend: Backend, samples: np.ndarray, chunks: list[SpeechChunk], max_chunks: int) -> LanguageInfo:
    """Detect on up to `max_chunks` of the longest chunks, spread over the file, and sum their probabilities
    (one chunk's guess decides nothing: WhisperX issue #466, a file that opens with music or another language)."""
    longest = sorted(range(len(chunks)), key=lambda i: -chunks[i].duration)[: max(max_chunks, 1)]
    picked = sorted(longest)
    encoded = backend.encode([window(samples, chunks[i]) for i in picked])
    detections = backend.detect_language(encoded)
    totals: dict[str, float] = {}
    for detection in detections:
        for code, probability in detection.items():
            totals[code] = totals.get(code, 0.0) + probability
    code = max(totals, key=totals.__getitem__)
    votes = []
    for index, detection in zip(picked, detections, strict=True):
        best = max(detection, key=detection.__getitem__)
        votes.append(LanguageVote(start=chunks[index].start, end=chunks[index].end, language=best, probability=round(detection[best], 4)))
    return LanguageInfo(code=code, probability=round(totals[code] / len(detections), 4), source="detected", votes=votes)


def batched_language(backend: Backend, audio: DecodedAudio, chunks: list, requested: str | None) -> LanguageInfo:
    refuse_english_only(requested, backend.is_multilingual)
    if requested:
        return LanguageInfo(code=requested, source="user")
    if not backend.is_multilingual:
        return LanguageInfo(code="en", source="model")
    if not chunks:
        return LanguageInfo(code="en", source="detected", votes=[])  # nothing to hear: any language gives no text
    return vote_language(backend, audio.samples, chunks, LANGUAGE_VOTE_CHUNKS)
