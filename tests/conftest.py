"""Shared fixtures. Tests that need a stage environment get it through `stage_envs` (synced once a session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"

# Missing models must fail fast, never wait on a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def stage_envs() -> dict[str, Path]:
    """Both stage environments, created/synced from their locks; maps stage name to its python."""
    from orchestrator import envs

    envs.setup_all(quiet=True)
    return {stage: envs.env_python(stage) for stage in envs.STAGES}


@pytest.fixture(scope="session")
def transcribe_python(stage_envs: dict[str, Path]) -> Path:
    return stage_envs["transcribe"]


@pytest.fixture(scope="session")
def sample_wav(stage_envs: dict[str, Path]) -> Path:
    """pyannote.audio's sample: a real 30 s two-speaker phone call (16 kHz mono)."""
    from orchestrator import assets

    return assets.sample_audio()


@pytest.fixture(scope="session")
def sample_reference_text() -> str:
    """The sample's reference transcript, from pyannote.audio 4.0.7's sample.stm (MIT)."""
    lines = (DATA / "sample.stm").read_text(encoding="utf-8").splitlines()
    return " ".join(line.split(maxsplit=5)[5] for line in lines if line.strip())


@pytest.fixture(scope="session")
def align_python(stage_envs: dict[str, Path]) -> Path:
    return stage_envs["align_diarize"]


@pytest.fixture(scope="session")
def sample_rttm(sample_wav: Path) -> Path:
    """The sample's reference speaker turns (10 turns, two speakers, 1.87 s of overlap)."""
    return sample_wav.with_suffix(".rttm")


@pytest.fixture(scope="session")
def random_ctc_model(tmp_path_factory: pytest.TempPathFactory, align_python: Path) -> Path:
    """A small random-init wav2vec2 CTC folder (no CTC model ships on PyPI): for alignment plumbing, not accuracy."""
    import subprocess

    folder = tmp_path_factory.mktemp("models") / "random-ctc"
    subprocess.run([str(align_python), str(Path(__file__).parent / "env_scripts" / "random_ctc_model.py"), str(folder)], check=True)
    return folder


@pytest.fixture(scope="session")
def transcript_path(tmp_path_factory: pytest.TempPathFactory, sample_wav: Path) -> Path:
    """Stage 1 once per session on a copy of the sample (call.wav beside it), with cross-attention word times.

    Tests must leave this folder as they found it: later tests read the transcript and its audio.
    """
    import shutil
    import subprocess

    work = tmp_path_factory.mktemp("stage1")
    audio = work / "call.wav"
    shutil.copy(sample_wav, audio)
    command = ["stagewhisper", "transcribe", str(audio), "--model", "bundled-tiny.en", "--language", "en", "--word_timestamps", "True"]
    result = subprocess.run(
        [*command, "--output_dir", str(work)], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode == 0, result.stderr
    return work / "call.transcript.json"
