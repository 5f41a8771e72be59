"""Running one stage as a subprocess of its own environment: progress on stdout, everything else in a log."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from shared.errors import ExitCode
from shared.progress import ProgressEvent, parse
from shared.provenance import recorded_settings

from . import envs, runtime

ERROR_MARKER = ": error: "
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


def run_stage(
    stage: str,
    audio: str,
    argv: Sequence[str],
    output_dir: Path,
    threads: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    on_event: Callable[[ProgressEvent], None] | None = None,
    log_name: str | None = None,
) -> StageOutcome:
    """Run `python -m stages.<stage> ARGV` in the stage's env; never raises for a stage's own failure.

    The log is LOG_NAME.STAGE.log (default: the input's file name) in OUTPUT_DIR/logs."""
    started = time.perf_counter()
    log_path = log_path_for(output_dir, log_name or audio, stage)
    python = envs.ensure_ready(stage)
    env = runtime.stage_environment(stage, threads=threads)
    env.update(extra_env or {})
    # -P: the user's folder is the working directory, and a `shared/` or `stages/` there must not shadow ours
    command = [str(python), "-P", "-m", f"stages.{stage}", *argv]
    outputs: list[Path] = []
    log_path, log_file = open_log(log_path)
    with log_file as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.write("".join(f"# {key}={value}\n" for key, value in sorted(recorded_settings(env).items())))
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            encoding="utf-8",
            errors="replace",
            # the user's folder: relative paths on the command line mean what they typed (the stages are installed in the env)
            cwd=None,
            # its own session: Ctrl-C (SIGINT to the terminal's process group) reaches the orchestrator only, which then
            # stops its stages itself (stop_running_stages) instead of each printing a KeyboardInterrupt traceback
            start_new_session=True,
        )
        with _registered(process):
            try:
                _read_events(process, log, outputs, on_event)
                exit_code = process.wait()
            except KeyboardInterrupt:  # Ctrl-C while this thread followed the stage: stop it and every other one
                log.write("# interrupted: stopping the stages\n")
                log.flush()
                stop_running_stages()
                interrupted, exit_code = True, process.wait()
            else:
                interrupted = False
        seconds = time.perf_counter() - started
        log.write(f"# exit status {exit_code} after {seconds:.1f} s\n")
    outcome = StageOutcome(stage, audio, exit_code, seconds, log_path, outputs)
    if process.pid in _stopped:
        outcome.exit_code, outcome.error = ExitCode.INTERRUPTED, "interrupted: stopped with the run"
    elif exit_code != ExitCode.OK:
        outcome.exit_code, outcome.error = describe_failure(stage, exit_code, log_path)
    if interrupted:
        raise StageInterrupted(outcome)
    return outcome


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C while the calling thread followed a stage: the stages were stopped; carries that stage's outcome."""

    def __init__(self, outcome: StageOutcome) -> None:
        super().__init__()
        self.outcome = outcome


def _read_events(
    process: subprocess.Popen[str], log: TextIO, outputs: list[Path], on_event: Callable[[ProgressEvent], None] | None
) -> None:
    """Progress events go to ON_EVENT (and outputs into OUTPUTS); anything else the stage prints, to its log."""
    assert process.stdout is not None
    for line in process.stdout:
        event = parse(line)
        if event is None:
            log.write(line)
            continue
        if event.kind == "output":
            outputs.append(Path(event.message))
        if on_event:
            on_event(event)


@contextlib.contextmanager
def _registered(process: subprocess.Popen[str]) -> Iterator[None]:
    with _running_lock:
        _running[process.pid] = process
    try:
        yield
    finally:
        with _running_lock:
            _running.pop(process.pid, None)


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


def describe_failure(stage: str, exit_code: int, log_path: Path) -> tuple[int, str]:
    """The stage's own one-line error if it printed one, else what killed it."""
    if exit_code < 0:
        name = signal.Signals(-exit_code).name if -exit_code in signal.Signals._value2member_map_ else str(-exit_code)
        return ExitCode.STAGE_CRASHED, f"stage {stage} was killed by {name}; see {log_path}"
    stated = last_error_line(log_path)
    if stated and exit_code in ExitCode._value2member_map_:
        return exit_code, stated
    return ExitCode.STAGE_CRASHED, f"stage {stage} exited with code {exit_code}; see {log_path}"


def last_error_line(log_path: Path) -> str:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if ERROR_MARKER in line and line.startswith("stagewhisper "):
            return line.split(ERROR_MARKER, 1)[1].strip()
    return ""
