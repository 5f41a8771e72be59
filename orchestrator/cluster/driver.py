"""`run/transcribe/align-diarize --ray HOST:PORT`: the stages' jobs on a Ray cluster, results written here.

`ClusterPool` has the local `WorkerPool`'s interface (`submit(argv, label, log_path, on_event) -> Future[StageOutcome]`,
`start`, `close`, `shutdown`), so the CLI's caching, hand-over from stage 1 to stage 2, summary and exit codes are
the local ones. For each job it reads the input files here, sends them as bytes (audio through the object store,
once per file for both stages) to a stage actor on a node that offers the stage, and writes what comes back exactly
as the stage writes it locally: same names, all or none, the JSON last, its audio paths this machine's.

Faults: a node that dies (its actors' calls fail) takes only time: its files go back to the queue and run on the
other nodes (at most `ATTEMPTS` times), each result is written once (the first to arrive), and the summary says
which files were retried. Every wait is bounded (`STAGEWHISPER_RAY_WAIT_S`): a stage no node offers is an error
naming it, not a hang. The HF token never crosses the cluster: stage-2 nodes take it from their own environment.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.contract import SCHEMA_VERSION, Transcript
from shared.errors import ExitCode, StageError
from shared.io import TRANSCRIPT_SUFFIX, load_document, parse_document, recorded_audio, write_texts_atomic
from shared.progress import ProgressEvent
from shared.writers import render

from ..stage_runner import StageOutcome, open_log
from . import NAMESPACE, import_ray, resource_name, wait_seconds
from .actors import AUDIO, JOB_DIR, OUTPUT_DIR, TRANSCRIPT, StageActor

EventHook = Callable[[ProgressEvent], None]
ATTEMPTS = 3  # nodes a file may be lost with before it fails
RESPAWNS = 2  # times a stage whose actors are all gone starts new ones (a node may have joined since)
POLL_S = 0.2
CLOSE_S = 30.0  # how long actors may take to let their workers exit when the run ends
CANCEL_S = 10.0  # how long Ctrl-C waits for the nodes to stop their stage workers
# Never sent to a node: the HF token (and anything named like a secret) reaches stage 2 from the node's own environment.
_SECRET_WORDS = ("TOKEN", "SECRET", "PASSW", "CREDENTIAL", "API_KEY", "APIKEY", "AUTH")


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if not any(word in key.upper() for word in _SECRET_WORDS)}


# ---------------------------------------------------------------- the connection


class Cluster:
    """The driver's connection to the cluster, and the audio it has put in the object store (one object per file,
    shared by both stages, dropped when no job holds it)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._audio: dict[Path, tuple[Any, int]] = {}  # resolved path -> (object ref, jobs holding it)
        self._lock = threading.Lock()

    def audio(self, path: Path) -> Any:
        ray = import_ray()
        key = path.resolve()
        with self._lock:
            ref, holders = self._audio.get(key, (None, 0))
            if ref is None:
                ref = ray.put(path.read_bytes())
            self._audio[key] = (ref, holders + 1)
            return ref

    def release(self, path: Path) -> None:
        key = path.resolve()
        with self._lock:
            ref, holders = self._audio.get(key, (None, 0))
            if holders <= 1:
                self._audio.pop(key, None)
            else:
                self._audio[key] = (ref, holders - 1)

    def offered(self, stage: str) -> float:
        return float(import_ray().cluster_resources().get(resource_name(stage), 0))


_cluster: Cluster | None = None
_connect_lock = threading.Lock()


def connect(address: str) -> Cluster:
    """Connect this process to the cluster at ADDRESS once (bounded: an unreachable head is an error, not a hang)."""
    global _cluster
    with _connect_lock:
        if _cluster is not None:
            return _cluster
        _check_reachable(address)
        ray = import_ray()
        try:
            # log_to_driver off: the nodes' output is in each file's log, not on this terminal
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False, logging_level="WARNING")
        except (RuntimeError, ConnectionError, ValueError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise StageError(ExitCode.ENV_BROKEN, f"cannot join the Ray cluster at {address}: {first}") from None
        _cluster = Cluster(address)
        return _cluster


def disconnect() -> None:
    global _cluster
    with _connect_lock:
        if _cluster is not None:
            with contextlib.suppress(Exception):
                import_ray().shutdown()
            _cluster = None


def _check_reachable(address: str) -> None:
    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5.0):
            pass
    except (OSError, ValueError) as error:
        raise StageError(
            ExitCode.ENV_BROKEN,
            f"no Ray head answers at {address} ({error}): start one with `stagewhisper node start --head`, or check HOST:PORT",
        ) from None


def cluster_pool(
    address: str,
    stage: str,
    threads: int | None,
    extra_env: Mapping[str, str] | None,
    capacity: int = 1,
    prepare_argv: Sequence[str] | None = None,
) -> ClusterPool:
    """A pool of this stage's actors on the cluster; a stage no node offers (after a bounded wait) is an error."""
    cluster = connect(address)
    deadline = time.monotonic() + wait_seconds()
    while cluster.offered(stage) < 1:
        if time.monotonic() > deadline:
            raise StageError(
                ExitCode.ENV_BROKEN,
                f"no node of the Ray cluster at {address} runs stage {stage} (waited {wait_seconds():.0f} s): start one with "
                f"`stagewhisper node join {address} --stages {stage}`",
            )
        time.sleep(0.5)
    return ClusterPool(cluster, stage, threads, without_secrets(extra_env or {}), capacity, prepare_argv)


# ---------------------------------------------------------------- jobs


@dataclass
class _Task:
    """One file's job from submit to its outcome."""

    label: str
    log_path: Path
    on_event: EventHook | None
    local: dict[str, Path]  # the driver's paths for the actor's placeholders
    remote: dict[str, Any]  # what the actor's run() takes
    transcript: bytes | None
    audio_ref: Any  # the audio's object in the store (resolved to bytes on the node)
    future: Future[StageOutcome] = field(default_factory=Future)
    finished: bool = False
    started_at: float = field(default_factory=time.perf_counter)
    lost_on: list[str] = field(default_factory=list)  # nodes that died with it
    ran_on: str = ""


@dataclass
class _Actor:
    handle: Any
    ready_ref: Any
    info: dict[str, Any] = field(default_factory=dict)
    ready: bool = False
    dead: bool = False
    running: dict[Any, _Task] = field(default_factory=dict)  # call ref -> task

    @property
    def where(self) -> str:
        return f"node {self.info.get('node', '?')} on {self.info.get('host', '?')} ({self.info.get('ip', '?')})" if self.info else "a node"


def remote_job(stage: str, argv: Sequence[str]) -> tuple[dict[str, Path], list[str]]:
    """The driver's paths in a stage's argv, and the argv with placeholders the node fills with its own paths.
    Stage 1: AUDIO --output_dir DIR ...; stage 2: TRANSCRIPT --output_dir DIR ... [--audio AUDIO]."""
    argv = list(argv)
    local = {OUTPUT_DIR: Path(argv[argv.index("--output_dir") + 1])}
    remote = [TRANSCRIPT if stage == "align_diarize" else AUDIO, *argv[1:]]
    remote[argv.index("--output_dir") + 1] = OUTPUT_DIR
    if stage == "transcribe":
        local[AUDIO] = Path(argv[0])
        return local, remote
    local[TRANSCRIPT] = Path(argv[0])
    if "--audio" in argv:
        index = argv.index("--audio")
        local[AUDIO] = Path(argv[index + 1])
        remote[index + 1] = AUDIO
    else:  # the stage would find it from the transcript's recorded paths: find it here, send it, name it
        transcript = load_document(local[TRANSCRIPT], Transcript)
        found = recorded_audio(transcript.audio, local[TRANSCRIPT])
        if found is None:
            raise StageError(
                ExitCode.BAD_AUDIO,
                f"{local[TRANSCRIPT]}: its audio {transcript.audio.path} was not found (nor beside the transcript); pass --audio PATH",
            )
        local[AUDIO] = found
        remote += ["--audio", AUDIO]
    return local, remote


def local_text(text: str, local: Mapping[str, Path]) -> str:
    """A node's text with the placeholders back as this machine's paths."""
    for token, path in local.items():
        text = text.replace(token, str(path))
    return text


class ClusterPool:
    """One stage's actors on the cluster, one per unit of the stage's resource, each holding up to CAPACITY jobs."""

    def __init__(
        self,
        cluster: Cluster,
        stage: str,
        threads: int | None,
        extra_env: dict[str, str],
        capacity: int,
        prepare_argv: Sequence[str] | None,
    ) -> None:
        self.stage, self.capacity = stage, max(1, capacity)
        self._cluster = cluster
        self._actor_args = (stage, threads, extra_env, self.capacity, list(prepare_argv) if prepare_argv is not None else None)
        self._queue: deque[_Task] = deque()
        self._actors: list[_Actor] = []
        self._lock = threading.RLock()
        self._closed = self._cancelled = False
        self._started = False
        self._usable_since = time.monotonic()  # the last time an actor of this stage could take a file
        self._problems: list[str] = []
        self._respawns = 0
        self._thread = threading.Thread(target=self._loop, name=f"ray-{stage}", daemon=True)

    # ---- the WorkerPool interface

    def submit(self, argv: Sequence[str], label: str, log_path: Path, on_event: EventHook | None = None) -> Future[StageOutcome]:
        log_path, log = open_log(log_path)
        with log:
            log.write(f"$ python -m stages.{self.stage} {shlex.join(argv)}\n# on the Ray cluster at {self._cluster.address}\n")
        try:
            local, remote_argv = remote_job(self.stage, argv)
            transcript = local[TRANSCRIPT].read_bytes() if TRANSCRIPT in local else None
            audio_ref = self._cluster.audio(local[AUDIO])
        except (StageError, OSError) as error:  # refused here, as the stage would refuse it (and nothing was sent)
            return _done_now(self._refusal(label, log_path, error))
        remote = {
            "argv": remote_argv,
            "label": label,
            "audio_name": local[AUDIO].name,
            "transcript_name": local[TRANSCRIPT].name if TRANSCRIPT in local else None,
        }
        task = _Task(label, log_path, on_event, local, remote, transcript, audio_ref)
        with self._lock:
            if self._cancelled:
                self._cluster.release(local[AUDIO])
                task.future.cancel()
                return task.future
            self._queue.append(task)
            self._start()
        return task.future

    def start(self) -> None:
        """Start the actors now: their stage workers import and load while other work runs."""
        with self._lock:
            self._start()

    def close(self, cancel: bool = False) -> None:
        """No more jobs. CANCEL (Ctrl-C): queued jobs cancelled, the nodes' workers stopped, running jobs interrupted."""
        with self._lock:
            self._closed = True
            if not cancel or self._cancelled:
                return
            self._cancelled = True
            while self._queue:
                task = self._queue.popleft()
                self._cluster.release(task.local[AUDIO])
                task.future.cancel()
            actors = [actor for actor in self._actors if not actor.dead]
        ray = import_ray()
        stops = [actor.handle.cancel.remote() for actor in actors]
        with contextlib.suppress(Exception):
            if stops:
                ray.wait(stops, num_returns=len(stops), timeout=CANCEL_S)
        with self._lock:
            for actor in actors:
                for task in actor.running.values():
                    _append(task.log_path, "# interrupted: the run was stopped\n")
                    self._finish(task, self._outcome(task, int(ExitCode.INTERRUPTED), "interrupted: stopped with the run"))
                actor.running.clear()

    def shutdown(self, timeout_s: float = CLOSE_S) -> None:
        """Wait for every job to end, then let the actors close their workers (bounded) and end them."""
        self.close()
        if self._thread.is_alive():
            self._thread.join()
        ray = import_ray()
        live = [actor for actor in self._actors if not actor.dead and actor.ready]
        closes = [actor.handle.close.remote() for actor in live]
        with contextlib.suppress(Exception):
            if closes:
                ray.wait(closes, num_returns=len(closes), timeout=timeout_s)
        for actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor.handle)

    # ---- the loop: actors, dispatch, results

    def _start(self) -> None:
        if not self._started:
            self._started = True
            for _ in range(max(1, int(self._cluster.offered(self.stage)))):
                self._new_actor()
            self._thread.start()

    def _new_actor(self) -> None:
        # threads: one per held job, and one for cancel/close; no CPU claimed (the actor's workers set their own threads)
        handle = (
            _remote_actor_class()
            .options(resources={resource_name(self.stage): 1}, num_cpus=0, max_concurrency=self.capacity + 2, max_restarts=0)
            .remote(*self._actor_args)
        )
        self._actors.append(_Actor(handle, handle.where.remote()))

    def _loop(self) -> None:
        ray = import_ray()
        while True:
            with self._lock:
                running = {ref: actor for actor in self._actors for ref in actor.running}
                if self._cancelled or (self._closed and not self._queue and not running):
                    return
                waiting = [actor.ready_ref for actor in self._actors if not actor.ready and not actor.dead]
            if waiting:
                for ref in ray.wait(waiting, num_returns=len(waiting), timeout=0)[0]:
                    self._on_ready(ref)
            self._dispatch()
            if running:
                done, _ = ray.wait(list(running), num_returns=1, timeout=POLL_S)
                for ref in done:
                    self._on_result(running[ref], ref)
            else:
                time.sleep(POLL_S)
            self._check_stalled()

    def _on_ready(self, ref: Any) -> None:
        ray = import_ray()
        actor = next(actor for actor in self._actors if actor.ready_ref == ref)
        try:
            actor.info = ray.get(ref, timeout=10)
        except Exception as error:  # noqa: BLE001 - it could not start there: the others go on
            self._lost(actor, f"its actor did not start ({_first_line(error)})")
            return
        problem = actor.info.get("problem") or ""
        if not problem and actor.info.get("schema") != SCHEMA_VERSION:
            problem = f"it runs stagewhisper with schema {actor.info.get('schema')}, this driver {SCHEMA_VERSION}: update its checkout"
        with self._lock:
            if problem:
                actor.dead = True
                self._problems.append(f"{actor.where}: {problem}")
                with contextlib.suppress(Exception):
                    ray.kill(actor.handle)
            else:
                actor.ready = True
                self._usable_since = time.monotonic()

    def _dispatch(self) -> None:
        with self._lock:
            while self._queue and not self._cancelled:
                actor = min(
                    (actor for actor in self._actors if actor.ready and not actor.dead and len(actor.running) < self.capacity),
                    key=lambda actor: len(actor.running),
                    default=None,
                )
                if actor is None:
                    return
                task = self._queue.popleft()
                task.ran_on = actor.where
                ref = actor.handle.run.remote(task.remote, task.audio_ref, task.transcript)
                actor.running[ref] = task
                pid, threads = actor.info.get("pid"), actor.info.get("threads")
                token = ", HF token from the node's environment" if actor.info.get("hf_token") else ""
                _append(task.log_path, f"# sent to {actor.where} (actor pid {pid}, {threads} threads{token})\n")
                if task.on_event:
                    task.on_event(ProgressEvent(self.stage, task.label, 0.0, 1.0, "progress", f"on {actor.where}"))

    def _on_result(self, actor: _Actor, ref: Any) -> None:
        ray = import_ray()
        with self._lock:
            task = actor.running.pop(ref, None)
        if task is None:  # interrupted meanwhile
            return
        try:
            reply: dict[str, Any] = ray.get(ref, timeout=60)
        except ray.exceptions.RayTaskError as error:  # the actor's own code failed on it: a bug, reported as one
            if isinstance(error, ray.exceptions.RayActorError):
                self._requeue_after_loss(actor, task, error)
                return
            message = f"unexpected failure on the cluster ({_first_line(error)}); please report it with the log"
            _append(task.log_path, f"{error}\n")
            self._finish(task, self._outcome(task, int(ExitCode.FAILED), message))
            return
        except Exception as error:  # noqa: BLE001 - the actor or its node is gone
            self._requeue_after_loss(actor, task, error)
            return
        if self._cancelled:  # Ctrl-C while it came back: nothing more is written
            self._finish(task, self._outcome(task, int(ExitCode.INTERRUPTED), "interrupted: stopped with the run"))
            return
        self._finish(task, self._written(task, reply))

    def _requeue_after_loss(self, actor: _Actor, task: _Task, error: BaseException) -> None:
        self._lost(actor, f"lost ({_first_line(error)})", also=[task])

    def _lost(self, actor: _Actor, why: str, also: Sequence[_Task] = ()) -> None:
        """The actor (or its node) is gone: its files go back to the queue for the other nodes, up to ATTEMPTS each."""
        with self._lock:
            if not actor.dead:
                actor.dead = True
                self._problems.append(f"{actor.where}: {why}")
                with contextlib.suppress(Exception):
                    import_ray().kill(actor.handle)
            held = [*also, *actor.running.values()]
            actor.running.clear()
            for task in held:
                task.lost_on.append(actor.where)
                _append(task.log_path, f"# {actor.where} was lost while on this file ({why})\n")
                if len(task.lost_on) >= ATTEMPTS:
                    nodes = ", ".join(task.lost_on)
                    error = f"lost with every node that took it ({nodes}); see {task.log_path}"
                    self._finish(task, self._outcome(task, int(ExitCode.STAGE_CRASHED), error))
                else:
                    _append(task.log_path, "# retried on another node\n")
                    self._queue.appendleft(task)
            if any(not other.dead for other in self._actors) or self._respawns >= RESPAWNS:
                return
            self._respawns += 1
        # every actor of this stage is gone: start new ones if the cluster still offers the stage (a node may have joined)
        with contextlib.suppress(Exception), self._lock:
            for _ in range(int(self._cluster.offered(self.stage))):
                self._new_actor()

    def _check_stalled(self) -> None:
        """Files wait but no actor of the stage has been able to take one for the bounded wait: they fail, naming why."""
        with self._lock:
            if any(actor.ready and not actor.dead for actor in self._actors):
                self._usable_since = time.monotonic()
                return
            if not self._queue or time.monotonic() - self._usable_since < wait_seconds():
                return
            why = "; ".join(self._problems[-3:]) or "none started"
            error = (
                f"no node of the Ray cluster at {self._cluster.address} could run stage {self.stage} for {wait_seconds():.0f} s "
                f"({why}): start one with `stagewhisper node join {self._cluster.address} --stages {self.stage}`"
            )
            while self._queue:
                task = self._queue.popleft()
                _append(task.log_path, f"# {error}\n")
                self._finish(task, self._outcome(task, int(ExitCode.ENV_BROKEN), error))

    # ---- outcomes

    def _written(self, task: _Task, reply: dict[str, Any]) -> StageOutcome:
        """The node's reply as a local run leaves it: its log appended to the file's log, and its outputs written here
        all or none, the JSON last, with this machine's audio paths."""
        here = {f"{JOB_DIR}/job.log": task.log_path, **task.local}  # the node's copy of the log is this one
        _append(task.log_path, local_text(reply.get("log", ""), here))
        code, error = int(reply.get("exit_code", ExitCode.FAILED)), local_text(reply.get("error", ""), here)
        if code != ExitCode.OK:
            return self._outcome(task, code, error, float(reply.get("seconds", 0.0)))
        try:
            files = [(task.local[OUTPUT_DIR] / name, self._as_here(name, text, task)) for name, text in reply["outputs"]]
            outputs = write_texts_atomic(sorted(files, key=lambda item: item[0].suffix == ".json"))
        except StageError as refusal:
            return self._outcome(task, int(refusal.exit_code), refusal.message)
        json_first = sorted(outputs, key=lambda path: path.suffix != ".json")  # as the stage reports them
        _append(task.log_path, f"# exit status 0 on {task.ran_on}\n")
        return self._outcome(task, int(ExitCode.OK), "", float(reply.get("seconds", 0.0)), json_first)

    def _as_here(self, name: str, text: str, task: _Task) -> str:
        """A transcript records where its audio lies: this machine's path, as stage 1 records it here."""
        if self.stage != "transcribe" or not name.endswith(TRANSCRIPT_SUFFIX):
            return text
        transcript = parse_document(json.loads(text), Transcript, source=name)
        audio = task.local[AUDIO]
        place = {"path": str(audio), "resolved_path": str(audio.resolve())}
        return render(transcript.model_copy(update={"audio": transcript.audio.model_copy(update=place)}), "json")

    def _outcome(self, task: _Task, code: int, error: str, seconds: float | None = None, outputs: list[Path] | None = None) -> StageOutcome:
        spent = seconds if seconds is not None else time.perf_counter() - task.started_at
        retried = f"{', '.join(task.lost_on)} lost while on it; ran again on {task.ran_on}" if task.lost_on and code == ExitCode.OK else ""
        return StageOutcome(self.stage, task.label, code, spent, task.log_path, outputs or [], error=error, retried=retried)

    def _finish(self, task: _Task, outcome: StageOutcome) -> None:
        """Each file's outcome set once (a late reply from a node thought lost is dropped), its audio released after
        the callbacks (stage 2 takes the same object when it is handed the transcript)."""
        with self._lock:
            if task.finished:
                return
            task.finished = True
        task.future.set_result(outcome)
        self._cluster.release(task.local[AUDIO])

    def _refusal(self, label: str, log_path: Path, error: StageError | OSError) -> StageOutcome:
        if isinstance(error, StageError):
            code, message = int(error.exit_code), error.message
        else:
            code, message = int(ExitCode.BAD_AUDIO), f"{error.filename}: cannot read ({error.strerror})"
        _append(log_path, f"stagewhisper {self.stage}: error: {message}\n")
        return StageOutcome(self.stage, label, code, 0.0, log_path, error=message)


@functools.cache
def _remote_actor_class() -> Any:
    """StageActor as a Ray actor class, made once per driver (it is exported to the cluster by reference: every node
    imports it from its own checkout)."""
    return import_ray().remote(StageActor)


def _done_now(outcome: StageOutcome) -> Future[StageOutcome]:
    future: Future[StageOutcome] = Future()
    future.set_result(outcome)
    return future


def _append(path: Path, text: str) -> None:
    with contextlib.suppress(OSError), path.open("a", encoding="utf-8") as log:
        log.write(text)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
