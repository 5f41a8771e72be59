"""The long-lived worker loop both stages share (`python -m stages.<stage>.worker`), spoken in shared.worker_protocol.

The worker imports its stack and loads its models once, then runs many jobs, each exactly as the one-file CLI
would run it (same parser, same `run`, same outputs written atomically). A job that fails ends in a `Done` with its
exit code and one-line error, and the worker goes on with the next. While a job runs, everything written to
stderr and stdout (Python or C) goes to that job's log; between jobs, to the worker's own log. The protocol has
stdout to itself: the real stdout is moved to a private descriptor before any library can print on it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from shared.errors import ExitCode, StageError
from shared.progress import ProgressEvent, orchestrator_gone, send_events_to, stop_quietly_on_sigterm
from shared.worker_protocol import WORKER_PROTOCOL_VERSION, Done, Job, Prepare, Progress, Ready, Started, decode_to_worker, encode

GROUP_GATHER_S = 0.05


@dataclass(frozen=True)
class StageCommands:
    """What a stage hands the loop: its one-file CLI's parser and run, and what to load ahead of the first job."""

    stage: str
    parse: Callable[[list[str]], argparse.Namespace]
    run: Callable[[argparse.Namespace], object]
    label: Callable[[argparse.Namespace], str]  # the input, for the error line
    prepare: Callable[[list[str]], None] | None = None


def failure(stage: str, label: str, error: BaseException) -> tuple[int, str]:
    """Exit code and one-line message of a failed file, printed to stderr (its log) as the one-file CLI prints it;
    anything but a StageError is a bug, with its full traceback."""
    if isinstance(error, StageError):
        code, message = int(error.exit_code), error.message
    else:
        traceback.print_exception(error)
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        code, message = int(ExitCode.FAILED), f"unexpected failure on {label} ({reason}); please report it with the log"
    print(f"stagewhisper {stage}: error: {message}", file=sys.stderr)
    return code, message


class _Channel:
    """The protocol's end of stdout: messages only, one per line, flushed."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self._stream = io.TextIOWrapper(os.fdopen(os.dup(1), "wb", buffering=0), encoding="utf-8", write_through=True)
        os.dup2(2, 1)  # a library's print (or a C printf) now lands in the log, never inside the protocol
        self._lock = threading.Lock()

    def send(self, message: Ready | Started | Progress | Done) -> None:
        with self._lock:
            try:
                self._stream.write(encode(message))
            except BrokenPipeError:
                orchestrator_gone()


class GroupedJob:
    """One file of a group the stage decodes together (stage 1 batches their speech chunks): the handler runs its
    per-file steps inside `output()` and reports the file as soon as it has ended (`fail()`, or `succeeded()` once
    its outputs are written), so the orchestrator can hand it on while the others go on."""

    def __init__(self, job: Job, args: argparse.Namespace, worker: _Worker) -> None:
        self.job, self.args, self._worker = job, args, worker
        self.started = time.perf_counter()
        self.reported = False

    def output(self) -> contextlib.AbstractContextManager[None]:
        """Its log takes stderr/stdout, and progress events are its own."""
        return self._worker.working_on(self.job)

    def report(self, done: float, total: float, message: str = "") -> None:
        """Progress of this file while the group works on all of them."""
        self._worker.channel.send(Progress(job=self.job.id, done=done, total=total, message=message))

    def fail(self, error: BaseException) -> None:
        with self.output():
            code, message = failure(self._worker.commands.stage, self._worker.commands.label(self.args), error)
        self._send(code, message)

    def succeeded(self) -> None:
        self._send(int(ExitCode.OK), "")

    def _send(self, code: int, message: str) -> None:
        if not self.reported:
            self.reported = True
            self._worker.channel.send(Done(job=self.job.id, exit_code=code, error=message, seconds=time.perf_counter() - self.started))


GroupHandler = Callable[[list[GroupedJob]], None]


class _Worker:
    def __init__(self, commands: StageCommands, group: GroupHandler | None, group_limit: int) -> None:
        self.commands, self.group, self.group_limit = commands, group, group_limit
        self.channel = _Channel()
        self.worker_log = os.dup(2)
        self.current = ""

    def progress(self, event: ProgressEvent) -> None:
        self.channel.send(Progress(job=self.current, done=event.done, total=event.total, kind=event.kind, message=event.message))

    @contextlib.contextmanager
    def working_on(self, job: Job) -> Iterator[None]:
        before, self.current = self.current, job.id
        try:
            with _output_into(job.log_path, self.worker_log):
                yield
        finally:
            self.current = before

    def start(self, job: Job) -> None:
        with self.working_on(job):
            print(f"# worker {os.getpid()}: started this file", file=sys.stderr, flush=True)
        self.channel.send(Started(job=job.id))

    def run_one(self, job: Job) -> None:
        self.start(job)
        with self.working_on(job):
            self.channel.send(_run_job(self.commands, job))

    def run_group(self, group: list[Job]) -> None:
        """Several files at once through the stage's group handler; should the handler itself fail (a bug, not a
        file's error), the files it did not finish run one by one."""
        assert self.group is not None
        grouped: list[GroupedJob] = []
        for job in group:
            self.start(job)
            with self.working_on(job):
                try:
                    grouped.append(GroupedJob(job, self.commands.parse(job.argv), self))
                except SystemExit:
                    self.channel.send(Done(job=job.id, exit_code=int(ExitCode.USAGE), error=f"bad stage arguments {job.argv}"))
        try:
            self.group(grouped)
        except Exception:  # noqa: BLE001
            traceback.print_exc()
            unfinished = [item for item in grouped if not item.reported]
            print(f"# decoding {len(grouped)} files together failed: the {len(unfinished)} unfinished run alone", file=sys.stderr)
            for item in unfinished:
                with self.working_on(item.job):
                    self.channel.send(_run_job(self.commands, item.job))
            return
        for item in grouped:
            item.succeeded()  # what the handler did not report ended well


def serve(commands: StageCommands, group: GroupHandler | None = None, group_limit: int = 1) -> int:
    """Run jobs until stdin closes. With GROUP, up to GROUP_LIMIT jobs waiting together are handed to it at once."""
    stop_quietly_on_sigterm()
    worker = _Worker(commands, group, group_limit)
    messages = _read_messages()
    send_events_to(worker.progress)
    worker.channel.send(Ready(protocol=WORKER_PROTOCOL_VERSION, stage=commands.stage, pid=os.getpid()))
    waiting: list[Job | Prepare | None] = []
    while (message := waiting.pop(0) if waiting else messages.get()) is not None:
        if isinstance(message, Prepare):
            _prepare(commands, message)
            continue
        jobs = [message]
        while group is not None and len(jobs) < group_limit and not waiting:
            try:  # jobs sent together arrive a moment apart: wait that moment for the second
                more = messages.get(timeout=GROUP_GATHER_S) if len(jobs) == 1 else messages.get_nowait()
            except queue.Empty:
                break
            if isinstance(more, Job):
                jobs.append(more)
            else:
                waiting.append(more)  # a Prepare, or the end: after this group
        if len(jobs) == 1:
            worker.run_one(jobs[0])
        else:
            worker.run_group(jobs)
    return int(ExitCode.OK)


def _run_job(commands: StageCommands, job: Job) -> Done:
    started = time.perf_counter()
    try:
        args = commands.parse(job.argv)
    except SystemExit as stop:  # argparse printed why; a job's flags come from the orchestrator, so this is a bug there
        code = stop.code if isinstance(stop.code, int) else ExitCode.USAGE
        return Done(job=job.id, exit_code=code, error=f"bad stage arguments {job.argv}", seconds=time.perf_counter() - started)
    try:
        commands.run(args)
    except Exception as error:  # noqa: BLE001 - one file's failure, whatever it is, must not stop the others
        code, message = failure(commands.stage, commands.label(args), error)
        return Done(job=job.id, exit_code=code, error=message, seconds=time.perf_counter() - started)
    return Done(job=job.id, exit_code=int(ExitCode.OK), seconds=time.perf_counter() - started)


def _prepare(commands: StageCommands, message: Prepare) -> None:
    """Best effort: what fails here fails again in the first job, which reports it properly."""
    if commands.prepare is None:
        return
    started = time.perf_counter()
    try:
        commands.prepare(message.argv)
    except (Exception, SystemExit) as error:  # noqa: BLE001
        print(f"# prepare: {type(error).__name__}: {error} (the first job will say it again)", file=sys.stderr)
        return
    print(f"# prepared in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def _read_messages() -> queue.Queue[Job | Prepare | None]:
    """Messages from stdin, read by a thread so the loop can see what is queued; None when stdin closes."""
    messages: queue.Queue[Job | Prepare | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                messages.put(decode_to_worker(line))
            except ValueError as error:
                print(f"# ignored a line that is not a job: {str(error).splitlines()[0]}", file=sys.stderr)
        messages.put(None)

    threading.Thread(target=read, name="jobs", daemon=True).start()
    return messages


@contextlib.contextmanager
def _output_into(log_path: str, worker_log: int) -> Iterator[None]:
    """stderr and stdout (descriptors 2 and 1, so C libraries' output too) appended to LOG_PATH for one job."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        log = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as error:  # the orchestrator made the log; if it is gone, the worker's own log takes the job
        print(f"# cannot append to {log_path} ({error}); this job's messages follow here", file=sys.stderr)
        yield
        return
    os.dup2(log, 2)
    os.dup2(log, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(worker_log, 2)
        os.dup2(worker_log, 1)
        os.close(log)
