"""What the orchestrator and a long-lived stage worker say to each other: one JSON message per line.

A worker (`python -m stages.<stage>.worker`) loads its stack once and takes many files. The orchestrator writes
`Job` lines to its stdin (closing stdin stops it); the worker writes `Ready` once, then per job `Started`,
`Progress` and one `Done` to its stdout. A job is the argv the stage's one-file CLI takes (`python -m stages.<stage> ARGV`), so a
file run by a worker and a file run alone give the same outputs. Each line is `PREFIX + JSON`; anything else a
library prints on stdout is not a message and ends in the log.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# 1: job/ready/progress/done. A worker of another version refuses to start (its env holds other code: rerun setup).
WORKER_PROTOCOL_VERSION = 1
MESSAGE_PREFIX = "@stagewhisper-worker "


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Job(_Message):
    """One file for the worker: the stage CLI's argv, and the log its messages go to (appended)."""

    type: Literal["job"] = "job"
    id: str
    argv: list[str]
    log_path: str


class Prepare(_Message):
    """Load what jobs with these flags will need (libraries, models) while the worker waits for its first file."""

    type: Literal["prepare"] = "prepare"
    argv: list[str]


class Ready(_Message):
    type: Literal["ready"] = "ready"
    protocol: int
    stage: str
    pid: int


class Started(_Message):
    """The worker began a job (until then a file it holds is only queued there: a worker that dies loses only the
    files it had started)."""

    type: Literal["started"] = "started"
    job: str


class Progress(_Message):
    """A job's progress (seconds of audio done of total), or an output it wrote (kind "output", the path in message)."""

    type: Literal["progress"] = "progress"
    job: str
    done: float
    total: float
    kind: Literal["progress", "output"] = "progress"
    message: str = ""


class Done(_Message):
    """A job ended: exit code as the one-file CLI would return it, and its one-line error when it failed."""

    type: Literal["done"] = "done"
    job: str
    exit_code: int
    error: str = ""
    seconds: Annotated[float, Field(ge=0.0)] = 0.0


ToWorker = Annotated[Job | Prepare, Field(discriminator="type")]
FromWorker = Annotated[Ready | Started | Progress | Done, Field(discriminator="type")]
_to_worker: TypeAdapter[Job | Prepare] = TypeAdapter(ToWorker)
_from_worker: TypeAdapter[Ready | Started | Progress | Done] = TypeAdapter(FromWorker)


def encode(message: _Message) -> str:
    return MESSAGE_PREFIX + message.model_dump_json() + "\n"


def decode_to_worker(line: str) -> Job | Prepare:
    """The message a line to a worker carries; ValueError for anything else (the worker says so and goes on)."""
    return _to_worker.validate_json(_payload(line))


def decode_from_worker(line: str) -> Ready | Started | Progress | Done | None:
    """The message a worker's line carries, or None for any other output (a library's print)."""
    if not line.startswith(MESSAGE_PREFIX):
        return None
    try:
        return _from_worker.validate_json(line[len(MESSAGE_PREFIX) :])
    except ValidationError:
        return None


def _payload(line: str) -> str:
    if not line.startswith(MESSAGE_PREFIX):
        raise ValueError(f"not a worker message (no {MESSAGE_PREFIX.strip()!r} prefix): {line[:80]!r}")
    return line[len(MESSAGE_PREFIX) :]
