"""What the VAD is asked (`VadOptions`, checked as the flags are) and what chunking gives (`SpeechChunk`)."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ExitCode, StageError

MAX_CHUNK = 30.0  # Whisper's window
PYANNOTE_DEFAULT_OFFSET = 0.363  # WhisperX's --vad_offset for its pyannote model


@dataclass(frozen=True)
class VadOptions:
    method: str = "silero"  # "silero" | "pyannote" (WhisperX's model, run from its ONNX export: vad/pyannote.py)
    onset: float = 0.5  # speech starts when the probability reaches this
    offset: float | None = None  # ... and ends below this (None: silero's onset - 0.15; 0.363 for pyannote, WhisperX's)
    min_speech_duration_ms: int = 250  # shorter spans are dropped (clicks, breaths): silero's default
    # Pauses shorter than this stay inside a span. 160 ms is what faster-whisper's batched pipeline uses: long
    # enough not to cut words at stop consonants, short enough to find a cut point in normal conversation.
    min_silence_duration_ms: int = 160
    speech_pad_ms: int = 30  # each span grows this much into the silence around it (silero's default)
    chunk_size: float = 30.0  # seconds: the longest chunk handed to Whisper

    def __post_init__(self) -> None:
        if self.method not in ("silero", "pyannote"):
            raise StageError(ExitCode.USAGE, f"--vad_method must be 'silero' or 'pyannote' (got {self.method!r})")
        if not 0.0 < self.onset < 1.0:
            raise StageError(ExitCode.USAGE, f"--vad_onset must be between 0 and 1 (got {self.onset})")
        if self.offset is not None and not 0.0 < self.offset <= self.onset:
            raise StageError(ExitCode.USAGE, f"--vad_offset must be above 0 and at most --vad_onset {self.onset} (got {self.offset})")
        if min(self.min_speech_duration_ms, self.min_silence_duration_ms, self.speech_pad_ms) < 0:
            raise StageError(ExitCode.USAGE, "VAD durations must not be negative")
        if not 1.0 <= self.chunk_size <= MAX_CHUNK:
            raise StageError(ExitCode.USAGE, f"--chunk_size must be between 1 and {MAX_CHUNK:g} seconds (got {self.chunk_size})")
        if self.speech_pad_ms / 1000 > self.chunk_size / 4:  # spans cut to fit must keep room for speech
            raise StageError(ExitCode.USAGE, f"speech_pad_ms must be at most a quarter of --chunk_size (got {self.speech_pad_ms} ms)")

    @property
    def resolved_offset(self) -> float:
        if self.offset is not None:
            return self.offset
        return PYANNOTE_DEFAULT_OFFSET if self.method == "pyannote" else max(self.onset - 0.15, 0.01)


@dataclass(frozen=True)
class SpeechChunk:
    start: float  # seconds in the file
    end: float
    spans: tuple[tuple[float, float], ...]  # the speech spans merged into it (file seconds)

    @property
    def duration(self) -> float:
        return self.end - self.start
