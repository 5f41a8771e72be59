"""`stagewhisper node start --head | join HOST:PORT | stop`: this machine as a node of a stagewhisper Ray cluster.

A node offers the stages whose env it has (`--stages`), as Ray custom resources: `stagewhisper_transcribe` (one
stage-1 worker: it batches the files it holds) and `stagewhisper_align_diarize` (`--stage2-workers`, default 1).
Before Ray starts, the node checks itself: every stage it offers has a ready env here, and, to join, its Ray and
Python are the head's (the head publishes them when it starts). A refusal is one line and exit 6; nothing starts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from shared.contract import SCHEMA_VERSION
from shared.errors import ExitCode, StageError

from .. import envs
from . import DEFAULT_PORT, NAMESPACE, import_ray, ray_environment, resource_name

HEAD_KEY = b"head"  # the head's versions, in Ray's key-value store (namespace NAMESPACE)
START_TIMEOUT_S = 120


def add_node_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = commands.add_parser("node", help="this machine as a node of a Ray cluster that runs stages for `run --ray`")
    actions = node.add_subparsers(dest="node_command", required=True, metavar="ACTION")
    start = actions.add_parser("start", help="start the cluster's head here (`--head`), offering the stages given")
    start.add_argument("--head", action="store_true", required=True, help="this machine is the head (the cluster's address)")
    start.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"the head's port (default {DEFAULT_PORT})")
    join = actions.add_parser("join", help="join the cluster whose head is at HOST:PORT, offering the stages given")
    join.add_argument("address", metavar="HOST:PORT", help="the head's address, as `node start --head` printed it")
    for action in (start, join):
        action.add_argument(
            "--stages", default=",".join(envs.STAGES), help="stages this node runs, comma-separated (default: both); an empty string: none"
        )
        action.add_argument("--stage2-workers", type=int, default=1, help="align_diarize workers on this node (default 1)")
        action.add_argument("--node-ip", default=None, help="this node's address as the others reach it (default: Ray's choice)")
        action.add_argument(
            "--ray-arg", action="append", default=[], metavar="ARG", help="one more argument for `ray start` (repeatable), e.g. ports"
        )
    actions.add_parser("stop", help="stop Ray on this machine (every Ray process of this user here)")


def command_node(args: argparse.Namespace) -> int:
    if args.node_command == "stop":
        return _ray_cli(["stop"], "stopping Ray")
    stages = parse_stages(args.stages)
    check_stage_envs(stages)
    if args.node_command == "join":
        check_versions(args.address)
    if args.node_command == "start":
        ray_args = ["--head", "--port", str(args.port), "--include-dashboard=false"]
    else:
        ray_args = ["--address", args.address]
    ray_args += ["--resources", json.dumps(node_resources(stages, args.stage2_workers)), "--disable-usage-stats"]
    ray_args += ["--node-ip-address", args.node_ip] if args.node_ip else []
    code = _ray_cli(["start", *ray_args, *args.ray_arg], "starting Ray")
    if code != ExitCode.OK:
        return code
    offered = ", ".join(stages) or "no stage"
    if args.node_command == "start":
        address = f"{args.node_ip or _this_ip()}:{args.port}"
        publish_versions(address)
        print(f"head started at {address}, running {offered}")
        print(f"  other machines: stagewhisper node join {address} --stages align_diarize")
        print(f"  then, from any machine: stagewhisper run --ray {address} FILES...")
    else:
        print(f"joined {args.address}, running {offered}")
    return ExitCode.OK


def parse_stages(text: str) -> list[str]:
    stages = [name.strip().replace("-", "_") for name in text.split(",") if name.strip()]
    unknown = [name for name in stages if name not in envs.STAGES]
    if unknown:
        raise StageError(ExitCode.USAGE, f"--stages: unknown stage {unknown[0]!r}; choose from {', '.join(envs.STAGES)}")
    return list(dict.fromkeys(stages))


def node_resources(stages: list[str], stage2_workers: int) -> dict[str, int]:
    """Ray custom resources for the stages offered: one unit per stage worker the node runs."""
    units = {"transcribe": 1, "align_diarize": max(1, stage2_workers)}
    return {resource_name(stage): units[stage] for stage in stages}


def check_stage_envs(stages: list[str]) -> None:
    """Every stage offered has its env ready here (setup done for the current locks), or the node refuses."""
    for stage in stages:
        try:
            envs.ensure_ready(stage)
        except StageError as error:
            raise StageError(error.exit_code, f"this node cannot run {stage}: {error.message}") from None


def local_versions() -> dict[str, str]:
    """What must be the same on every node: Ray's version and Python's (objects are pickled between them)."""
    try:
        ray_version = version("ray")
    except PackageNotFoundError:
        ray_version = "not installed"
    return {"ray": ray_version, "python": platform.python_version(), "schema": SCHEMA_VERSION}


def version_mismatch(head: dict[str, str], here: dict[str, str]) -> str | None:
    """One line saying what differs from the head, or None. Ray and Python must match exactly (Ray pickles objects
    between nodes with the interpreter's own protocol); the contract's schema must match for results to be read."""
    names = {"ray": "Ray", "python": "Python", "schema": "the stagewhisper schema"}
    for key, name in names.items():
        if key in head and head[key] != here.get(key):
            return f"{name} {here.get(key)} here, {head[key]} on the head"
    return None


def check_versions(address: str) -> None:
    head = head_versions(address)
    mismatch = version_mismatch(head, local_versions())
    if mismatch:
        raise StageError(
            ExitCode.ENV_BROKEN,
            f"refusing to join {address}: {mismatch}; install the same versions (the checkout's uv.lock pins Ray) and retry",
        )


def publish_versions(address: str) -> None:
    """The head's versions in Ray's key-value store, for joining nodes to compare with theirs."""
    _gcs(address).internal_kv_put(HEAD_KEY, json.dumps(local_versions()).encode(), True, NAMESPACE.encode(), timeout=10)


def head_versions(address: str) -> dict[str, str]:
    """The versions the head published (bounded: a head that does not answer is an error)."""
    try:
        raw = _gcs(address).internal_kv_get(HEAD_KEY, NAMESPACE.encode(), timeout=10)
    except Exception as error:  # noqa: BLE001 - Ray's own errors vary by version; the message is what matters
        raise StageError(ExitCode.ENV_BROKEN, f"no stagewhisper head answers at {address} ({_first_line(error)})") from None
    if not raw:
        raise StageError(ExitCode.ENV_BROKEN, f"the Ray cluster at {address} was not started by `stagewhisper node start --head`")
    versions: dict[str, str] = json.loads(raw)
    return versions


def _gcs(address: str) -> Any:
    """A client of the head's GCS (Ray's control store), without joining the cluster as a driver: quick, and it works
    from a node whose Ray differs (which is what the check is for)."""
    import_ray()
    from ray._raylet import GcsClient

    return GcsClient(address=address)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def _ray_cli(arguments: list[str], what: str) -> int:
    """`ray ARGUMENTS` from this env (the workers it starts run this env's python), with our Ray settings."""
    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        raise StageError(ExitCode.ENV_BROKEN, "the `ray` command is not installed in the orchestrator's environment: run `uv sync`")
    env = {**os.environ, **ray_environment()}
    done = subprocess.run([ray, *arguments], env=env, capture_output=True, text=True, timeout=START_TIMEOUT_S)
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        last = next((line for line in reversed(lines) if re.search(r"error|fail", line, re.IGNORECASE)), lines[-1] if lines else "")
        raise StageError(ExitCode.FAILED, f"{what} failed (exit {done.returncode}): {last.strip()[:300]}")
    return ExitCode.OK


def _this_ip() -> str:
    try:
        import_ray()
        import ray

        return str(ray.util.get_node_ip_address())
    except Exception:  # noqa: BLE001
        return "127.0.0.1"
