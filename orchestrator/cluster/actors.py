"""The stage actor: a Ray actor (made remote by the driver) that owns one long-lived stage worker on its node.

It reuses the local `WorkerPool` (one worker, in this node's stage env), so a job on the cluster is the same
one-file command line as a local job. Inputs arrive as bytes and are written to a private temp folder on the node;
the outputs go back as text, with the node's temp paths replaced by tokens the driver turns into its own paths.
The actor runs threaded (one Ray thread per held job): stage 1's worker batches the files it holds at once.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import socket
import tempfile
from concurrent.futures import CancelledError
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from shared.contract import SCHEMA_VERSION
from shared.errors import ExitCode, StageError
from shared.worker_protocol import WORKER_PROTOCOL_VERSION

from .. import envs, runtime
from ..stage_runner import log_path_for, stop_running_stages
from ..workers import WorkerPool
from . import resource_name

# The driver's placeholders for paths only the node knows (its argv and the texts that come back use them).
AUDIO, TRANSCRIPT, OUTPUT_DIR, JOB_DIR = "{audio}", "{transcript}", "{output_dir}", "{job}"


def worker_threads(stage: str, cores: int, offered: dict[str, float]) -> int:
    """Threads for one stage worker on a node with CORES cores offering OFFERED stage workers (the local rule of
    `run`: with both stages on the node, half the cores for stage 1, the rest shared by the stage-2 workers)."""
    stage1 = int(offered.get("transcribe", 0))
    stage2 = int(offered.get("align_diarize", 0))
    if stage1 and stage2:
        first = max(1, cores // 2)
        return first if stage == "transcribe" else max(1, (cores - first) // stage2)
    return max(1, cores // max(1, stage1 + stage2))


def _node_offer() -> tuple[int, dict[str, float]]:
    """This actor's node: its cores as Ray counts them (`ray start --num-cpus` caps them) and what it offers per stage."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            resources = node.get("Resources", {})
            # Ray counts every logical core; a Mac's efficiency cores only slow the stages (runtime.performance_cores)
            cores = min(int(resources.get("CPU", 0)) or 1 << 16, runtime.performance_cores())
            return cores, {stage: float(resources.get(resource_name(stage), 0)) for stage in envs.STAGES}
    return runtime.performance_cores(), {}


def _tool_version() -> str:
    try:
        return version("stagewhisper")
    except PackageNotFoundError:
        return "unknown"


class StageActor:
    """One stage worker on this node. Methods return plain dicts (JSON-like): nothing of a stage's stack crosses."""

    def __init__(self, stage: str, threads: int | None, extra_env: dict[str, str], capacity: int, prepare_argv: list[str] | None) -> None:
        self.stage = stage
        self.problem = ""  # why this node cannot run the stage (told by where(), not raised: a StageError does not pickle)
        self.root = Path(tempfile.mkdtemp(prefix=f"stagewhisper-{stage}-"))
        self.threads = threads or worker_threads(stage, *_node_offer())
        self.pool: WorkerPool | None = None
        try:
            envs.ensure_ready(stage)
            worker_log = partial(log_path_for, self.root, stage=stage)
            self.pool = WorkerPool(stage, 1, self.threads, extra_env, worker_log, capacity=capacity, prepare_argv=prepare_argv)
            self.pool.start()  # it imports its stack and loads its models while the driver sends the first files
        except StageError as error:
            self.problem = error.message

    def where(self) -> dict[str, Any]:
        """Who this actor is: the node's name and address, versions, and whether it can run its stage."""
        return {
            "host": socket.gethostname(),
            "ip": _node_ip(),
            "node": _node_id()[:8],
            "pid": os.getpid(),
            "stage": self.stage,
            "threads": self.threads,
            "problem": self.problem,
            "schema": SCHEMA_VERSION,
            "protocol": WORKER_PROTOCOL_VERSION,
            "stagewhisper": _tool_version(),
            "python": platform.python_version(),
            "hf_token": bool(os.environ.get("HF_TOKEN")),  # whether the node gives one (never the token itself)
        }

    def run(self, job: dict[str, Any], audio: bytes, transcript: bytes | None) -> dict[str, Any]:
        """One file: inputs written to a private folder, the stage worker runs the job's argv there, and the outputs
        and log come back as text. The folder is removed whatever happens."""
        if self.pool is None:
            return {"exit_code": int(ExitCode.ENV_BROKEN), "error": self.problem, "log": "", "outputs": []}
        job_dir = Path(tempfile.mkdtemp(prefix="job-", dir=self.root))
        try:
            paths = {JOB_DIR: job_dir, AUDIO: job_dir / "in" / job["audio_name"], OUTPUT_DIR: job_dir / "out"}
            paths[AUDIO].parent.mkdir()
            paths[OUTPUT_DIR].mkdir()
            paths[AUDIO].write_bytes(audio)
            if transcript is not None:
                paths[TRANSCRIPT] = job_dir / "in" / job["transcript_name"]
                paths[TRANSCRIPT].write_bytes(transcript)
            argv = [str(paths[arg]) if arg in paths else arg for arg in job["argv"]]
            log_path = job_dir / "job.log"
            try:
                outcome = self.pool.submit(argv, job["label"], log_path).result()
            except CancelledError:
                return {"exit_code": int(ExitCode.INTERRUPTED), "error": "interrupted: stopped with the run", "log": "", "outputs": []}
            back = partial(_tokens_for, paths)
            outputs = [[path.name, path.read_text(encoding="utf-8")] for path in outcome.outputs] if outcome.ok else []
            log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
            return {
                "exit_code": outcome.exit_code,
                "error": back(outcome.error),
                "seconds": outcome.seconds,
                "log": back(log),
                "outputs": outputs,
            }
        finally:
            shutil.rmtree(job_dir, ignore_errors=True)

    def cancel(self) -> None:
        """Ctrl-C on the driver: queued jobs cancelled, the stage worker stopped (its files end as interrupted)."""
        if self.pool is not None:
            self.pool.close(cancel=True)
        stop_running_stages()

    def close(self) -> None:
        """The run is over: the worker finishes what it holds and exits; the private folder goes with it."""
        if self.pool is not None:
            self.pool.shutdown()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root, ignore_errors=True)


def _tokens_for(paths: dict[str, Path], text: str) -> str:
    """The node's temp paths in TEXT as the driver's placeholders, longest first (the job folder holds the others)."""
    for token, path in sorted(paths.items(), key=lambda item: -len(str(item[1]))):
        text = text.replace(str(path), token)
    return text


def _node_id() -> str:
    with contextlib.suppress(Exception):
        import ray

        return str(ray.get_runtime_context().get_node_id())
    return ""


def _node_ip() -> str:
    with contextlib.suppress(Exception):
        import ray

        return str(ray._private.worker.global_worker.node_ip_address)  # the address the node was started with
    return ""
