"""Awkward but valid audio, broken audio and broken output folders, through `stagewhisper run` as users call it.

One batch holds every awkward input: each must give a valid result (or one clear error line) and never stop the
others. Disk full and read-only folders are real: a tiny tmpfs and a read-only tmpfs (needs root, skipped otherwise).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.contract import Result, Transcript
from shared.errors import ExitCode
from shared.io import load_document

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Batch:
    returncode: int
    stderr: str
    output_dir: Path
    inputs: dict[str, Path]


def stagewhisper(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    return subprocess.run(["stagewhisper", *map(str, args)], capture_output=True, text=True, env=env)


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *map(str, args)], check=True)


def make_inputs(folder: Path, sample: Path) -> dict[str, Path]:
    """Silence, a 0.2 s clip, stereo 48 kHz speech, and an m4a cut short (its index is at the end)."""
    inputs = {name: folder / name for name in ("silence.wav", "short.wav", "stereo48k.wav", "truncated.m4a")}
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "8", inputs["silence.wav"])
    ffmpeg("-i", sample, "-ss", "8.4", "-t", "0.2", inputs["short.wav"])
    ffmpeg("-i", sample, "-ac", "2", "-ar", "48000", "-t", "15", inputs["stereo48k.wav"])
    whole = folder / "whole.m4a"
    ffmpeg("-i", sample, "-t", "10", "-c:a", "aac", whole)
    inputs["truncated.m4a"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return inputs


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, sample_wav: Path) -> Batch:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is needed to make the test inputs (apt-get install ffmpeg)")
    folder = tmp_path_factory.mktemp("inputs")
    inputs = make_inputs(folder, sample_wav)
    output_dir = tmp_path_factory.mktemp("out")
    result = stagewhisper(
        "run", *inputs.values(), "--model", "bundled-tiny.en", "--language", "en", "--word_timestamps", "True",
        "--no_align", "--diarize", "--diarize_model", "bundled", "--output_format", "all", "--output_dir", output_dir,
    )  # fmt: skip
    return Batch(result.returncode, result.stderr, output_dir, inputs)


def test_the_broken_file_fails_alone_with_one_line(batch: Batch) -> None:
    assert batch.returncode == ExitCode.BAD_AUDIO, batch.stderr
    lines = [line for line in batch.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "truncated.m4a" in lines[0] and "cannot decode audio" in lines[0], batch.stderr
    assert not [path for path in batch.output_dir.iterdir() if path.name.startswith("truncated.")]
    for name in ("silence", "short", "stereo48k"):
        assert (batch.output_dir / f"{name}.json").is_file(), name


def test_silence_gives_a_valid_empty_result(batch: Batch) -> None:
    result = load_document(batch.output_dir / "silence.json", Result)
    assert result.segments == [] and result.word_segments == []
    assert (batch.output_dir / "silence.txt").read_text(encoding="utf-8") == ""
    assert (batch.output_dir / "silence.srt").read_text(encoding="utf-8").strip() == ""


def test_a_clip_shorter_than_a_window_keeps_every_time_inside_it(batch: Batch) -> None:
    result = load_document(batch.output_dir / "short.json", Result)
    assert result.audio.duration == pytest.approx(0.2, abs=0.01)
    for turn in result.speaker_turns:
        assert 0.0 <= turn.start < turn.end <= result.audio.duration, turn
    for speaker in result.speakers:
        assert speaker.speaking_time <= result.audio.duration
    for word in result.word_segments:
        assert word.start is not None and word.end is not None and word.end <= result.audio.duration


def test_stereo_48k_is_transcribed_and_recorded_as_it_was(batch: Batch, sample_reference_text: str) -> None:
    transcript = load_document(batch.output_dir / "stereo48k.transcript.json", Transcript)
    assert (transcript.audio.sample_rate, transcript.audio.channels) == (48000, 2)
    assert transcript.audio.duration == pytest.approx(15.0, abs=0.05)
    text = " ".join(segment.text for segment in transcript.segments).lower()
    assert "hello" in text and "diane" in text
    result = load_document(batch.output_dir / "stereo48k.json", Result)
    assert all(word.speaker for word in result.word_segments)


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real small or read-only file system at `folder` (root only), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_disk_full_leaves_no_partial_outputs_and_the_next_file_still_runs(tmp_path: Path, sample_wav: Path) -> None:
    """40 KiB (tmpfs counts 4 KiB pages): too small for the 30 s call's outputs (~11 pages), enough for the 0.2 s clip's."""
    tiny_clip = tmp_path / "blip.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0.2", tiny_clip)
    with tmpfs(tmp_path / "full", "size=40k") as output_dir:
        result = stagewhisper(
            "transcribe", sample_wav, tiny_clip, "--model", "bundled-tiny.en", "--language", "en",
            "--word_timestamps", "True", "--output_format", "all", "--output_dir", output_dir,
        )  # fmt: skip
        assert result.returncode == ExitCode.OUTPUT_UNWRITABLE, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "No space left on device" in errors[0] and "--output_dir" in errors[0], result.stderr
        names = sorted(path.name for path in output_dir.iterdir())
        assert not [name for name in names if name.startswith(("sample.", ".sample."))], names
        assert (output_dir / "blip.transcript.json").is_file()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_read_only_output_folder_is_one_clear_error(tmp_path: Path) -> None:
    clip = tmp_path / "blip.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0.5", clip)
    with tmpfs(tmp_path / "ro", "ro,size=64k") as output_dir:
        result = stagewhisper("transcribe", clip, "--model", "bundled-tiny.en", "--output_dir", output_dir)
        assert result.returncode == ExitCode.OUTPUT_UNWRITABLE, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Read-only file system" in errors[0] and "--output_dir" in errors[0], result.stderr
        assert "(log: " in errors[0] and Path(errors[0].rsplit("(log: ", 1)[1].rstrip(")")).is_file()
        assert list(output_dir.iterdir()) == []


def test_a_stage_killed_mid_run_is_reported_and_the_next_file_still_runs(tmp_path: Path, sample_wav: Path) -> None:
    """kill -9 of the stage-1 worker while it decodes two files together: each is retried alone on a new worker; kill
    -9 of that one on the first file: exit 8 with its log path, no half-written output, and file 2 is done."""
    doomed, survivor = tmp_path / "doomed.wav", tmp_path / "survivor.wav"
    shutil.copy(sample_wav, doomed)
    shutil.copy(sample_wav, survivor)
    output_dir = tmp_path / "out"
    command = ["stagewhisper", "transcribe", doomed, survivor, "--model", "bundled-tiny.en", "--language", "en", "--output_dir", output_dir]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    with subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env) as run:
        log = output_dir / "logs" / "doomed.wav.transcribe.log"
        first = _kill_stage_of(log, deadline_s=60)
        second = _kill_stage_of(log, deadline_s=60, other_than=first) if first else None
        _, stderr = run.communicate(timeout=300)
    assert first and second, "the stage process of the first file never showed up, or was not retried"
    assert "retried alone" in log.read_text()
    assert run.returncode == ExitCode.STAGE_CRASHED, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "doomed.wav" in errors[0] and "SIGKILL" in errors[0], stderr
    assert errors[0].count("logs/doomed.wav.transcribe.log") == 1, stderr  # "see LOG", not the log twice
    assert (output_dir / "survivor.transcript.json").is_file()
    assert not [path.name for path in output_dir.iterdir() if "doomed" in path.name]  # nor any temp file


def worker_on(log: Path, deadline_s: float, other_than: int | None = None) -> int | None:
    """The pid of the stage worker that started the file whose log is LOG (it says so there), once one has; with
    OTHER_THAN, the next worker to start it after that one."""
    import re
    import time

    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        with contextlib.suppress(OSError):
            pids = [int(pid) for pid in re.findall(r"^# worker (\d+): started this file$", log.read_text(), re.MULTILINE)]
            fresh = [pid for pid in pids if pid != other_than]
            if fresh:
                return fresh[-1]
        time.sleep(0.1)
    return None


def _kill_stage_of(log: Path, deadline_s: float, other_than: int | None = None) -> int | None:
    """SIGKILL the stage worker working on the file of LOG once it has run a moment (it is then decoding)."""
    import signal
    import time

    pid = worker_on(log, deadline_s, other_than)
    if pid is not None:
        time.sleep(1.0)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pid


def test_relative_paths_mean_the_users_folder_even_with_a_shared_folder_there(tmp_path: Path, sample_wav: Path) -> None:
    """Stages run in the user's folder: `call.wav -o out` resolve there, and a local `shared/` shadows nothing."""
    shutil.copy(sample_wav, tmp_path / "call.wav")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "__init__.py").write_text("raise ImportError('the wrong shared package')\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    for command in (
        ["transcribe", "call.wav", "--model", "bundled-tiny.en", "--language", "en", "-o", "out", "--output_format", "json"],
        ["align-diarize", "out/call.transcript.json", "--no_align", "--diarize", "--diarize_model", "bundled"],
    ):
        result = subprocess.run(["stagewhisper", *command], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir() if path.is_file())[:3] == ["call.json", "call.rttm", "call.srt"]
