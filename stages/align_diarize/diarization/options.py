"""What the user asked of diarization: light (no torch or pyannote), so that a run without --diarize never imports them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.errors import ExitCode, StageError

DEFAULT_PIPELINE = "pyannote/speaker-diarization-3.1"
DiarizeSpeed = Literal["exact", "fast"]


@dataclass(frozen=True)
class DiarizeOptions:
    pipeline: str = DEFAULT_PIPELINE
    hf_token: str | None = None
    model_dir: str | None = None
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    speaker_embeddings: bool = False
    speed: DiarizeSpeed = "exact"

    def __post_init__(self) -> None:
        for name in ("num_speakers", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise StageError(ExitCode.USAGE, f"--{name} must be at least 1, got {value}")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise StageError(ExitCode.USAGE, f"--min_speakers {self.min_speakers} is above --max_speakers {self.max_speakers}")
