"""Progress events a stage prints on stdout, one JSON object per line, for the orchestrator to show.

Everything else a stage prints goes to stderr, which the orchestrator keeps in the stage's log.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Literal, TextIO

EVENT_PREFIX = "@stagewhisper "


@dataclass(frozen=True)
class ProgressEvent:
    stage: str
    file: str
    done: float  # seconds of audio processed so far
    total: float  # seconds of audio in the file
    kind: Literal["progress", "output"] = "progress"
    message: str = ""


def emit(event: ProgressEvent, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(EVENT_PREFIX + json.dumps(asdict(event)) + "\n")
    stream.flush()


def parse(line: str) -> ProgressEvent | None:
    """The event a line carries, or None for any other line."""
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        return ProgressEvent(**json.loads(line[len(EVENT_PREFIX) :]))
    except (ValueError, TypeError):
        return None
