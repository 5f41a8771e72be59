"""Files the demo and tests use that ship inside the stage environments' packages."""

from __future__ import annotations

from pathlib import Path

from shared.errors import ExitCode, StageError

from .envs import env_dir


def sample_audio() -> Path:
    """pyannote.audio's sample.wav (a real two-speaker call), found without importing pyannote."""
    venv = env_dir("align_diarize") / ".venv"
    for candidate in sorted(venv.glob("lib/python3*/site-packages/pyannote/audio/sample/sample.wav")):
        return candidate
    raise StageError(ExitCode.ENV_BROKEN, f"pyannote's sample.wav is not in {venv}: run `stagewhisper setup`")
