"""Many files across machines on Ray: nodes that offer stages, an actor per stage worker, a driver that writes.

Ray lives only in the orchestrator's env. Each node runs `stagewhisper node start/join --stages ...` from its own
checkout, with its own stage envs; a Ray custom resource per stage (`stagewhisper_<stage>`) says which node runs
which stage. An actor per stage worker (actors.py) owns a long-lived stage worker subprocess in that node's stage
env; the driver (driver.py, `run --ray HOST:PORT`) sends it audio as bytes through the object store and writes what
comes back exactly as a local run writes it. Only bytes and JSON cross: a numpy-2 object does not unpickle under
numpy 1. `ray` is imported lazily (`import_ray`), so the plain CLI never pays for it.
"""

from __future__ import annotations

import os
from types import ModuleType

from shared.errors import ExitCode, StageError

RESOURCE_PREFIX = "stagewhisper_"
DEFAULT_PORT = 6379
NAMESPACE = "stagewhisper"
# How long the driver waits for a node that runs a stage, or for an actor to start (seconds).
WAIT_ENV = "STAGEWHISPER_RAY_WAIT_S"
DEFAULT_WAIT_S = 60.0


def resource_name(stage: str) -> str:
    return f"{RESOURCE_PREFIX}{stage}"


def wait_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S)))
    except ValueError:
        return DEFAULT_WAIT_S


def ray_environment() -> dict[str, str]:
    """Settings every Ray process of ours needs. Under `uv run`, Ray's uv hook would make each worker `uv run` the
    project again (slow, and wrong on a node with another checkout): off. Ray empties CUDA_VISIBLE_DEVICES for actors
    that claim no GPU, and our actors claim none (their stage workers own the node's devices): leave it alone."""
    return {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}


def import_ray() -> ModuleType:
    """`ray`, imported on first use (the plain CLI never imports it); a clear error where it is not installed."""
    os.environ.update(ray_environment())
    try:
        import ray
    except ImportError as error:
        raise StageError(
            ExitCode.ENV_BROKEN, f"Ray is not installed in the orchestrator's environment ({error}): run `uv sync` in the checkout"
        ) from None
    return ray
