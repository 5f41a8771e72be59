"""What stage 1 is asked (`TranscribeOptions`), progress reports, step timings and the packages its provenance names."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.flags import DEFAULT_MODEL

PROVENANCE_PACKAGES = [
    "numpy",
    "mlx",
    "mlx-metal",
    "mlx-cpu",
    "mlx-cuda-13",
    "mlx-whisper",
    "ctranslate2",
    "faster-whisper",
    "onnxruntime",
    "silero-vad",
    "huggingface-hub",
    "av",
    "pydantic",
]

# (seconds done, seconds total)
ProgressHook = Callable[[float, float], None]


@dataclass
class TranscribeOptions:
    model: str = DEFAULT_MODEL
    download_root: str | None = None
    compute_type: str | None = None  # None: float16 on a GPU, float32 on CPU
    # DecodingOptions fields as the user gave them (language None = detect); names are mlx_whisper's own.
    decoding: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # extra provenance (e.g. --threads)
    timings: dict[str, float] = field(default_factory=dict)  # steps timed before transcribe() (decode_audio)


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Seconds the block took, into `timings[step]` (the transcript's provenance.timings)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = round(time.perf_counter() - started, 3)
