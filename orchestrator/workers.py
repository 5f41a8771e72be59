"""Long-lived stage workers: each a process of its stage's env that loads its stack once and takes many files.

A `WorkerPool` runs one stage's jobs on up to N workers, speaking shared.worker_protocol over their stdin/stdout.
`submit` returns at once with a Future of the job's `StageOutcome`, so stage 1 can queue every file (its worker
batches what is queued) while stage 2 takes transcripts as they come. A worker that dies (crash, `kill -9`, out
of memory) loses only its file: the pool reports that file with its log and starts a new worker for the rest.
When a worker dies with several files in hand, each is retried alone, so only the file that kills it fails.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from shared.errors import ExitCode
from shared.progress import ProgressEvent
from shared.provenance import recorded_settings
from shared.worker_protocol import WORKER_PROTOCOL_VERSION, Done, Job, Prepare, Progress, Ready, Started, decode_from_worker, encode

from . import envs, runtime
from .stage_runner import StageOutcome, open_log, register_process, signal_name, unregister_process, was_stopped

EventHook = Callable[[ProgressEvent], None]
CLOSE_GRACE_S = 30.0  # how long an idle worker may take to exit once its stdin closes, before SIGKILL


class StagePool(Protocol):
    """What the CLI needs of a stage's workers: the local `WorkerPool`, or a Ray cluster's (orchestrator.cluster.driver)."""

    stage: str

    def submit(self, argv: Sequence[str], label: str, log_path: Path, on_event: EventHook | None = None) -> Future[StageOutcome]: ...

    def start(self) -> None: ...

    def close(self, cancel: bool = False) -> None: ...

    def shutdown(self, timeout_s: float = CLOSE_GRACE_S) -> None: ...


@dataclass
class _Task:
    """A file's job, from submit to its outcome."""

    job: Job
    label: str
    log_path: Path
    on_event: EventHook | None
    future: Future[StageOutcome] = field(default_factory=Future)
    outputs: list[Path] = field(default_factory=list)
    sent_at: float = 0.0
    started: bool = False  # the worker began it (until then it only waits in the worker's queue)
    alone: bool = False  # retried after a worker died with it among others: sent only to an otherwise idle worker


class StageWorker:
    """One worker process: sends jobs, follows its messages, and tells the pool when it ends."""

    def __init__(self, pool: WorkerPool, env: Mapping[str, str], log_path: Path) -> None:
        self.stage = pool.stage
        self.tasks: dict[str, _Task] = {}  # guarded by the pool's lock
        self._pool = pool
        stage = self.stage
        python = envs.ensure_ready(stage)
        # -P: the user's folder is the working directory, and a `shared/` or `stages/` there must not shadow ours
        command = [str(python), "-P", "-m", f"stages.{stage}.worker"]
        self.log_path, self._log = open_log(log_path)
        self._log.write(f"$ {shlex.join(command)}\n")
        self._log.write("".join(f"# {key}={value}\n" for key, value in sorted(recorded_settings(env).items())))
        self._log.flush()
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=dict(env),
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            # its own session: Ctrl-C reaches the orchestrator only, which then stops its workers itself
            start_new_session=True,
        )
        register_process(self.process)
        self.protocol_error = ""
        self.reader = threading.Thread(target=self._follow, name=f"{stage}-worker-{self.process.pid}", daemon=True)
        self.reader.start()

    @property
    def alive(self) -> bool:
        return self.process.poll() is None and not self.protocol_error

    def send(self, message: Job | Prepare) -> bool:
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(encode(message))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):  # it died: _follow reports its tasks
            return False
        return True

    def close(self) -> None:
        """No more jobs: the worker finishes what it has and exits."""
        with contextlib.suppress(OSError, ValueError):
            assert self.process.stdin is not None
            self.process.stdin.close()

    def _follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            message = decode_from_worker(line)
            if message is None:
                self._log.write(line)  # only before the worker claims stdout: all later output goes to logs
                self._log.flush()
            elif isinstance(message, Ready):
                self._check(message)
            elif isinstance(message, Started):
                with self._pool.lock:
                    if message.job in self.tasks:
                        self.tasks[message.job].started = True
            elif isinstance(message, Progress):
                self._progress(message)
            else:
                self._done(message)
        exit_code = self.process.wait()
        unregister_process(self.process)
        self._log.write(f"# worker exit status {exit_code}\n")
        self._log.close()
        self._pool.worker_ended(self)

    def _check(self, ready: Ready) -> None:
        if ready.protocol != WORKER_PROTOCOL_VERSION or ready.stage != self.stage:
            self.protocol_error = (
                f"the {self.stage} environment runs other stagewhisper code (worker protocol {ready.protocol}, "
                f"expected {WORKER_PROTOCOL_VERSION}); run `stagewhisper setup --force`"
            )
            self.process.kill()

    def _progress(self, message: Progress) -> None:
        with self._pool.lock:
            task = self.tasks.get(message.job)
        if task is None:
            return
        event = ProgressEvent(self.stage, task.label, message.done, message.total, message.kind, message.message)
        if event.kind == "output":
            task.outputs.append(Path(event.message))
        if task.on_event:
            task.on_event(event)

    def _done(self, message: Done) -> None:
        with self._pool.lock:
            task = self.tasks.pop(message.job, None)
        if task is None:
            return
        seconds = time.perf_counter() - task.sent_at
        _append(task.log_path, f"# exit status {message.exit_code} after {seconds:.1f} s\n")
        task.future.set_result(
            StageOutcome(self.stage, task.label, message.exit_code, seconds, task.log_path, task.outputs, error=message.error)
        )
        self._pool.dispatch()  # room for the next queued file

    def lost_task_outcome(self, task: _Task) -> StageOutcome:
        """The outcome of a task this worker held when it ended."""
        seconds = time.perf_counter() - task.sent_at
        if was_stopped(self.process):
            _append(task.log_path, "# interrupted: the worker was stopped with the run\n")
            interrupted = "interrupted: stopped with the run"
            return StageOutcome(self.stage, task.label, int(ExitCode.INTERRUPTED), seconds, task.log_path, error=interrupted)
        if self.protocol_error:
            return StageOutcome(self.stage, task.label, int(ExitCode.ENV_BROKEN), seconds, task.log_path, error=self.protocol_error)
        code = self.process.returncode
        how = f"was killed by {signal_name(-code)}" if code is not None and code < 0 else f"exited with code {code}"
        _append(task.log_path, f"# the {self.stage} worker (pid {self.process.pid}) {how} while on this file\n")
        error = f"the {self.stage} worker {how} while on this file (the other files went on); see {task.log_path}"
        return StageOutcome(self.stage, task.label, int(ExitCode.STAGE_CRASHED), seconds, task.log_path, error=error)


class WorkerPool:
    """Up to SIZE workers of one stage, each holding up to CAPACITY jobs (stage 1 batches what it holds)."""

    def __init__(
        self,
        stage: str,
        size: int,
        threads: int | None,
        extra_env: Mapping[str, str] | None,
        worker_log: Callable[[str], Path],
        capacity: int = 1,
        prepare_argv: Sequence[str] | None = None,
    ) -> None:
        self.stage, self.size, self.capacity = stage, max(1, size), max(1, capacity)
        self._env = {**runtime.stage_environment(stage, threads=threads), **(extra_env or {})}
        self._worker_log = worker_log  # a worker's log path from its name
        self._prepare = list(prepare_argv) if prepare_argv is not None else None
        self._queue: deque[_Task] = deque()
        self._workers: list[StageWorker] = []
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self._closed = False
        self._cancelled = False

    def submit(self, argv: Sequence[str], label: str, log_path: Path, on_event: EventHook | None = None) -> Future[StageOutcome]:
        """Queue one file's job (ARGV as `python -m stages.<stage>` takes it); its log is written at LOG_PATH."""
        log_path, log = open_log(log_path)
        with log:
            log.write(f"$ python -m stages.{self.stage} {shlex.join(argv)}\n")
            log.write("".join(f"# {key}={value}\n" for key, value in sorted(recorded_settings(self._env).items())))
        task = _Task(Job(id=str(next(self._ids)), argv=list(argv), log_path=str(log_path)), label, log_path, on_event)
        with self.lock:
            if self._cancelled:  # the run was interrupted: nothing new starts
                task.future.cancel()
                return task.future
            self._queue.append(task)
            self.dispatch()
        return task.future

    def start(self) -> None:
        """Start a worker now, so it imports its stack while other work runs (e.g. stage 2's while stage 1 decodes)."""
        with self.lock:
            if not self._workers and not self._closed:
                self._start_worker()

    def close(self, cancel: bool = False) -> None:
        """No more jobs. CANCEL: queued jobs that no worker holds yet are cancelled (Ctrl-C)."""
        with self.lock:
            self._closed = True
            self._cancelled = self._cancelled or cancel
            if cancel:
                while self._queue:
                    self._queue.popleft().future.cancel()
            self.dispatch()

    def shutdown(self, timeout_s: float = CLOSE_GRACE_S) -> None:
        """Close, and wait for the workers to exit (SIGKILL past TIMEOUT_S) and their readers to finish."""
        self.close()
        deadline = time.monotonic() + timeout_s
        with self.lock:
            workers = list(self._workers)
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(worker.process.pid, signal.SIGKILL)
            worker.reader.join(timeout=max(1.0, deadline - time.monotonic()))

    def dispatch(self) -> None:
        """Hand queued jobs to workers with room, starting workers up to SIZE; once closed and drained, tell the
        workers no more jobs come (they exit after what they hold)."""
        with self.lock:
            while self._queue:
                task = self._queue[0]
                worker = self._worker_for(task)
                if worker is None:
                    return
                self._queue.popleft()
                task.sent_at = time.perf_counter()
                worker.tasks[task.job.id] = task
                if not worker.send(task.job):
                    return  # it is dying: its end requeues or fails the task
            if self._closed:
                for worker in self._workers:
                    worker.close()

    def _worker_for(self, task: _Task) -> StageWorker | None:
        alive = [worker for worker in self._workers if worker.alive]
        limit = 1 if task.alone else self.capacity
        for worker in alive:
            if len(worker.tasks) < limit and not any(held.alone for held in worker.tasks.values()):
                return worker
        if len(alive) < self.size:
            return self._start_worker()
        return None

    def _start_worker(self) -> StageWorker:
        index = len(self._workers) + 1
        log_path = self._worker_log(f"worker-{os.getpid()}-{index}")
        worker = StageWorker(self, self._env, log_path)
        self._workers.append(worker)
        if self._prepare is not None:
            worker.send(Prepare(argv=self._prepare))
        return worker

    def worker_ended(self, worker: StageWorker) -> None:
        """Its reader saw the end. Files it held but had not started go back to the queue; a file it was on fails
        (its log says how the worker ended), unless it was on several at once: then each is retried alone once."""
        with self.lock:
            self._workers.remove(worker)
            held = list(worker.tasks.values())
            worker.tasks.clear()
            stopped = was_stopped(worker.process) or bool(worker.protocol_error)
            on = [task for task in held if task.started]
            again: list[_Task] = []
            for task in held:
                if stopped:
                    task.future.set_result(worker.lost_task_outcome(task))
                elif not task.started:
                    again.append(task)
                elif len(on) > 1 and not task.alone:
                    task.alone, task.started = True, False
                    _append(task.log_path, f"# the {self.stage} worker ended while on this file and others: retried alone\n")
                    again.append(task)
                else:
                    task.future.set_result(worker.lost_task_outcome(task))
            self._queue.extendleft(reversed(again))  # first in line, in their order
            if stopped:  # Ctrl-C, or an env every other file would meet too
                while self._queue:
                    task = self._queue.popleft()
                    if worker.protocol_error:
                        task.future.set_result(worker.lost_task_outcome(task))
                    else:
                        task.future.cancel()
            else:
                self.dispatch()
        if not worker.protocol_error and worker.process.returncode == 0:
            _remove_log(worker.log_path)


def _append(path: Path, text: str) -> None:
    with contextlib.suppress(OSError), path.open("a", encoding="utf-8") as log:
        log.write(text)


def _remove_log(path: Path) -> None:
    """A worker that ended cleanly leaves no log: what it said about its own files is in their logs, and the rest
    (import warnings) is the same every run. A worker that died keeps its log beside the files' logs."""
    with contextlib.suppress(OSError):
        path.unlink()
