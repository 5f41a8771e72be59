"""What running a stage process involves besides the process itself: outcomes, logs, and stopping them all on Ctrl-C."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from shared.errors import ExitCode

STOP_GRACE_S = 5.0  # how long a stopped stage may take to exit on SIGTERM before SIGKILL

# the stage processes running now, to stop them on Ctrl-C; and those stopped so, to report them as interrupted
_running: dict[int, subprocess.Popen[str]] = {}
_stopped: set[int] = set()
_running_lock = threading.Lock()


@dataclass
class StageOutcome:
    stage: str
    audio: str
    exit_code: int
    seconds: float
    log_path: Path
    outputs: list[Path] = field(default_factory=list)
    error: str = ""
    reused: bool = False  # outputs written from a kept artifact: the stage did not run
    retried: str = ""  # on a cluster: the nodes lost while on it, and where it ran again

    @property
    def ok(self) -> bool:
        return self.exit_code == ExitCode.OK


def log_path_for(output_dir: Path, log_name: str, stage: str) -> Path:
    """Logs live beside the outputs, as LOG_NAME.STAGE.log; an unwritable output folder sends them to the temp folder."""
    name = f"{Path(log_name).name}.{stage}.log"
    folder = output_dir / "logs"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder / name
    except OSError:
        pass
    return fallback_log_path(name)


def fallback_log_path(name: str) -> Path:
    fallback = Path(tempfile.gettempdir()) / "stagewhisper-logs"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback / name


def open_log(log_path: Path) -> tuple[Path, TextIO]:
    """The log opened for writing; a full disk (or a folder that refuses files as root) falls back to the temp folder."""
    try:
        return log_path, log_path.open("w", encoding="utf-8")
    except OSError:
        log_path = fallback_log_path(log_path.name)
        return log_path, log_path.open("w", encoding="utf-8")


def register_process(process: subprocess.Popen[str]) -> None:
    """A stage process to stop with the run (Ctrl-C, SIGTERM)."""
    with _running_lock:
        _running[process.pid] = process


def unregister_process(process: subprocess.Popen[str]) -> None:
    with _running_lock:
        _running.pop(process.pid, None)


def was_stopped(process: subprocess.Popen[str]) -> bool:
    """Whether stop_running_stages stopped it (its files were interrupted, not crashed)."""
    with _running_lock:
        return process.pid in _stopped


def signal_name(number: int) -> str:
    return signal.Signals(number).name if number in signal.Signals._value2member_map_ else str(number)


def stop_running_stages(grace_s: float = STOP_GRACE_S) -> None:
    """Stop every stage process this orchestrator runs (Ctrl-C, SIGTERM): SIGTERM to each one's process group, which
    the stages turn into a quiet exit, then SIGKILL for any still alive after GRACE_S."""
    with _running_lock:
        processes = list(_running.values())
        _stopped.update(process.pid for process in processes)
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[str], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)  # its own session: the group's id is its pid, and takes any child it started
