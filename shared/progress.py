"""Progress events a stage prints on stdout, one JSON object per line, for the orchestrator to show.

Everything else a stage prints goes to stderr, which the orchestrator keeps in the stage's log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Literal, NoReturn, TextIO

from .errors import ExitCode

EVENT_PREFIX = "@stagewhisper "


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    file: str
    done: float  # seconds of audio processed so far
    total: float  # seconds of audio in the file
    kind: Literal["progress", "output"] = "progress"
    message: str = ""


# A long-lived worker sends events as its own protocol messages (stages.common.worker); None: print them on stdout.
_sink: Callable[[ProgressEvent], None] | None = None


def send_events_to(sink: Callable[[ProgressEvent], None] | None) -> None:
    global _sink
    _sink = sink


def emit(event: ProgressEvent, stream: TextIO | None = None) -> None:
    if _sink is not None and stream is None:
        _sink(event)
        return
    stream = stream or sys.stdout
    try:
        stream.write(EVENT_PREFIX + json.dumps(asdict(event)) + "\n")
        stream.flush()
    except BrokenPipeError:
        orchestrator_gone()


def orchestrator_gone() -> NoReturn:
    """The orchestrator reading our progress was killed: stop now, with one line in the log instead of a traceback."""
    with contextlib.suppress(OSError, ValueError):  # no second BrokenPipeError when Python flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print("stagewhisper: stopped: the orchestrator reading this stage's progress has gone", file=sys.stderr)
    raise SystemExit(ExitCode.INTERRUPTED)


def stop_quietly_on_sigterm() -> None:
    """SIGTERM (the orchestrator stopping its stages after Ctrl-C) ends the stage through SystemExit: temp files are
    removed on the way out, and the log gets one line, not a traceback."""

    def stop(signum: int, frame: FrameType | None) -> NoReturn:
        print("stagewhisper: stopped by SIGTERM (the run was interrupted)", file=sys.stderr)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def parse(line: str) -> ProgressEvent | None:
    """The event a line carries, or None for any other line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        return ProgressEvent(**json.loads(line[len(EVENT_PREFIX) :]))
    except (ValueError, TypeError):
        return None
