"""Stage 1: audio in, validated `Transcript` out: the batched pipeline, or mlx_whisper's sequential decoding when asked."""

from __future__ import annotations

from shared.contract import Transcript
from stages.common.audio import DecodedAudio

from .batched_run import transcribe_batched
from .options import ProgressHook, TranscribeOptions
from .sequential import transcribe_sequential


def transcribe(audio: DecodedAudio, options: TranscribeOptions, on_progress: ProgressHook | None = None) -> Transcript:
    backend = options.decoding.get("backend", "auto")
    if backend == "mlx_whisper":
        return transcribe_sequential(audio, options, on_progress)
    return transcribe_batched(audio, options, on_progress)
