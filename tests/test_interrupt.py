"""Ctrl-C or SIGTERM on the orchestrator: the stages stop cleanly, the summary shows what finished, exit 128 + signal.
And a stage whose orchestrator was killed outright stops at its next progress line, quietly."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.errors import ExitCode

from .factories import repeat_wav
from .test_bad_input import worker_on

REPO = Path(__file__).resolve().parents[1]


def _wait_for(path: Path, deadline_s: float) -> None:
    started = time.monotonic()
    while not path.exists() and time.monotonic() - started < deadline_s:
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.parametrize(("sent", "expected"), [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_interrupt_stops_the_stage_prints_what_finished_and_leaves_no_traceback(
    tmp_path: Path, sample_wav: Path, sent: signal.Signals, expected: int
) -> None:
    first, second = tmp_path / "first.wav", tmp_path / "second.wav"
    shutil.copy(sample_wav, first)
    repeat_wav(sample_wav, second, times=10)  # other bytes (no reuse of the first's transcript) and long enough to interrupt
    output_dir = tmp_path / "out"
    command = ["stagewhisper", "transcribe", first, second, "--model", "bundled-tiny.en", "--language", "en", "--output_dir", output_dir]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    # its own process group, as a shell gives a foreground job: Ctrl-C is SIGINT to the whole group
    with subprocess.Popen(
        list(map(str, command)), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env, start_new_session=True
    ) as run:
        worker = worker_on(output_dir / "logs" / "second.wav.transcribe.log", deadline_s=300)
        _wait_for(output_dir / "first.transcript.json", deadline_s=120)  # the worker holds both; first is the short one
        time.sleep(1.5)  # decoding the second
        if sent == signal.SIGINT:
            os.killpg(run.pid, sent)
        else:  # a kill of the orchestrator alone
            run.send_signal(sent)
        _, stderr = run.communicate(timeout=60)
    assert worker, "stage 1 of the second file never started"
    assert run.returncode == expected, stderr
    assert re.search(r"first\.wav\s*│\s*transcribe\s*│\s*ok", stderr), stderr  # the summary: what finished
    assert "interrupted" in stderr, stderr
    assert (output_dir / "first.transcript.json").is_file()
    time.sleep(0.5)
    assert not Path(f"/proc/{worker}").exists()  # the worker is gone
    log = (output_dir / "logs" / "second.wav.transcribe.log").read_text()
    assert "Traceback" not in log and "unexpected failure" not in log, log
    assert not [path.name for path in output_dir.iterdir() if path.name.startswith("second")]


def test_a_stage_whose_orchestrator_is_gone_stops_quietly(tmp_path: Path) -> None:
    """Progress written to a closed pipe (the orchestrator was killed): one line in the log, no traceback, exit 130."""
    code = "from shared.progress import ProgressEvent, emit\nemit(ProgressEvent('transcribe', 'x.wav', 1.0, 2.0))\nprint('still running')"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-c", code], stdout=write_end, stderr=subprocess.PIPE, text=True, cwd=REPO, timeout=60)
    finally:
        os.close(write_end)
    assert done.returncode == ExitCode.INTERRUPTED, done.stderr
    assert done.stderr.strip().splitlines() == ["stagewhisper: stopped: the orchestrator reading this stage's progress has gone"], (
        done.stderr
    )
