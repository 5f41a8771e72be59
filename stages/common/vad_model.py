"""Where the pyannote VAD model lives once stage 2 has exported it to ONNX for stage 1 (both envs import this)."""

from __future__ import annotations

from pathlib import Path

from .cache import cache_root

# whisperx 3.3's VAD weights: its wheel's assets/pytorch_model.bin (whisperx checks this digest too)
PYANNOTE_SOURCE_SHA256 = "0b5b3216d60a2d32fc086b47ea8c67589aaeb26b7e07fcbe620d6d0b83e209ea"
EXPORT_COMMAND = "python -m stages.align_diarize.export_vad"


def pyannote_vad_files() -> tuple[Path, Path]:
    """(ONNX model, JSON sidecar) in the cache; named by the source weights, so another model never reuses them."""
    stem = cache_root() / "vad" / f"whisperx-segmentation-{PYANNOTE_SOURCE_SHA256[:12]}"
    return stem.with_suffix(".onnx"), stem.with_suffix(".json")
