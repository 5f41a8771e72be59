"""Files per minute on a Ray cluster of 1, 2, 4... nodes on this machine (issue 13), `run --ray` as users run it.

    uv run python benchmarks/cluster_scaling.py --nodes 1,2,4 --files 24 --cpus-per-node 4

Each configuration starts its own cluster on loopback: a head offering both stages and N-1 nodes offering stage 2,
each node capped at `--cpus-per-node` cores (`ray start --num-cpus`, which the stage actors split between their
workers), then times `stagewhisper run --ray ... FILES --diarize --diarize_model bundled --no_align` (bundled
models, offline) from outside, actor start and imports included, and stops the cluster by its processes' ids.
Inputs: `--files` cuts of 5-10 s of pyannote's sample call (real speech). Only meaningful where the machine has
the cores for every node (2 cores cannot show scaling: there, this only checks that it runs).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from pathlib import Path

from orchestrator import assets

FLAGS = ["--model", "bundled-tiny.en", "--language", "en", "--no_align", "--diarize", "--diarize_model", "bundled"]
RAY_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0",
    "RAY_DISABLE_USAGE_STATS": "1",
    "HF_HUB_OFFLINE": "1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def marked(marker: str, variable: str = "STAGEWHISPER_BENCH_NODE") -> list[int]:
    """Our processes whose environment has VARIABLE=MARKER, and their descendants (Ray starts its agents without it).
    tests/test_cluster.py finds its nodes with it too."""
    parents, pids = {}, set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if f"{variable}={marker}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    pids.add(int(proc.name))
    while more := {pid for pid, parent in parents.items() if parent in pids} - pids:
        pids |= more
    return sorted(pids)


def cut_files(folder: Path, count: int) -> list[Path]:
    sample = assets.sample_audio()
    with wave.open(str(sample), "rb") as reader:
        rate, params = reader.getframerate(), reader.getparams()
        frames = reader.readframes(reader.getnframes())
    width = params.sampwidth * params.nchannels
    files = []
    for index in range(count):
        start, seconds = 6.5 + (index * 3.7) % 18.0, 5.0 + index % 6
        chunk = frames[int(start * rate) * width : int((start + seconds) * rate) * width]
        files.append(folder / f"f{index:03d}.wav")
        with wave.open(str(files[-1]), "wb") as writer:
            writer.setparams(params)
            writer.writeframes(chunk)
    return files


def run_config(nodes: int, files: list[Path], cpus: int, work: Path) -> dict[str, object]:
    marker = uuid.uuid4().hex[:8]
    env = {**os.environ, **RAY_ENV, "STAGEWHISPER_BENCH_NODE": marker}
    port = free_port()
    address = f"127.0.0.2:{port}"  # each node its own loopback address (Ray rewrites 127.0.0.1 to the machine's)
    common = [f"--ray-arg=--num-cpus={cpus}", "--ray-arg=--object-store-memory=500000000"]
    try:
        head = ["stagewhisper", "node", "start", "--head", "--port", str(port), "--stages", "transcribe,align_diarize", *common]
        head += ["--node-ip", "127.0.0.2"]
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=300)
        for index in range(nodes - 1):
            ports = [f"--ray-arg=--{name}={free_port()}" for name in ("dashboard-agent-listen-port", "metrics-export-port")]
            join = ["stagewhisper", "node", "join", address, "--stages", "align_diarize", "--node-ip", f"127.0.0.{3 + index}"]
            join += [*common, *ports]
            subprocess.run(join, env=env, check=True, capture_output=True, timeout=300)
        out = work / f"out-{nodes}"
        started = time.perf_counter()
        done = subprocess.run(
            ["stagewhisper", "run", *map(str, files), *FLAGS, "-o", str(out), "--ray", address], env=env, capture_output=True
        )
        seconds = time.perf_counter() - started
    finally:
        for pid in marked(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return {
        "nodes": nodes,
        "files": len(files),
        "exit": done.returncode,
        "seconds": round(seconds, 1),
        "files_per_minute": round(len(files) / seconds * 60, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1,2", help="node counts to measure, comma-separated")
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--cpus-per-node", type=int, default=max(1, (os.cpu_count() or 2) // 4))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="swbench-", dir="/tmp") as temp:
        work = Path(temp)
        (work / "in").mkdir()
        files = cut_files(work / "in", args.files)
        rows = [run_config(int(count), files, args.cpus_per_node, work) for count in args.nodes.split(",")]
    for row in rows:
        print(json.dumps(row))
    return 0 if all(row["exit"] == 0 for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
