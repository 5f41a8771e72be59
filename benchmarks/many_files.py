"""How long `stagewhisper run` takes on many files, file after file vs pipelined with `--jobs N`.

Run from the repo root in the root env:  uv run python benchmarks/many_files.py [--copies 10] [--jobs 1 2 3]

Input: copies of pyannote's 30 s sample call (different names, same bytes: each copy is still transcribed, since
every run writes into a fresh output folder). Each run: bundled tiny.en (stage 1), bundled diarization without
alignment (stage 2), offline, the way the CLI runs, timed from outside (interpreters, imports, everything).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from orchestrator import assets

REPO = Path(__file__).resolve().parent.parent
RUN_FLAGS = ["--model", "bundled-tiny.en", "--language", "en", "--no_align", "--diarize", "--diarize_model", "bundled"]


def timed_run(files: list[Path], output_dir: Path, jobs: int) -> float:
    command = ["stagewhisper", "run", *map(str, files), *RUN_FLAGS, "--output_dir", str(output_dir), "--jobs", str(jobs)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"run with --jobs {jobs} failed:\n{result.stderr[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/many-files-<timestamp>.json)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="many-files-") as tmp:
        work = Path(tmp)
        files = [work / f"call{index:02d}.wav" for index in range(args.copies)]
        for file in files:
            shutil.copy(assets.sample_audio(), file)
        audio_seconds = 30.0 * args.copies
        for jobs in args.jobs:
            seconds = timed_run(files, work / f"out-jobs{jobs}", jobs)
            rows.append({"jobs": jobs, "files": args.copies, "audio_s": audio_seconds, "wall_s": round(seconds, 1)})
    table = Table(title=f"stagewhisper run on {args.copies} copies of the 30 s sample ({os.cpu_count()} CPUs)")
    for column in ("--jobs", "wall s", "s per file", "x-realtime", "vs --jobs 1"):
        table.add_column(column, justify="right")
    baseline = rows[0]["wall_s"]
    for row in rows:
        speedup = f"{baseline / row['wall_s']:.2f}x"
        table.add_row(
            str(row["jobs"]),
            f"{row['wall_s']:.1f}",
            f"{row['wall_s'] / row['files']:.1f}",
            f"{row['audio_s'] / row['wall_s']:.1f}x",
            speedup,
        )
    Console().print(table)
    path = args.json or REPO / "benchmarks" / "results" / f"many-files-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"rows": rows, "cpus": os.cpu_count()}, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
