"""Time stage 1 (transcribe) the way users run it: x-realtime, peak RSS and WER on >= 5 minutes of real speech.

Run from the repo root in the root env:  uv run python benchmarks/stage1_speed.py [--runs 3] [--repeat 10]
Each run goes through `orchestrator.cli.transcribe_all` -> `stage_runner.run_stage`, so the stage process gets
exactly the environment `stagewhisper transcribe` builds (OpenBLAS preload, thread variables).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import wave
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator import assets, cli, envs, runtime
from shared.flags import BUNDLED_MODEL, TRANSCRIBE_FLAGS, add_flags, to_argv
from shared.io import TRANSCRIPT_SUFFIX

REPO = Path(__file__).resolve().parent.parent
SAMPLE_REFERENCE = REPO / "tests" / "data" / "sample.stm"
console = Console(width=None if sys.stdout.isatty() else 120)  # a log file gets the full table


@dataclass
class RunResult:
    audio_s: float
    wall_s: float  # the stage process as the orchestrator runs it: interpreter + imports + model load + decode + writing
    stage_s: float  # provenance.wall_time_s: model load + decode, as the stage measures itself
    peak_rss_mib: float
    segments: int
    fallbacks: int  # segments decoded above temperature 0 (sampling: output and time vary between runs)
    words: int
    wer: float | None
    blas: str
    threads: str


def concatenate(source: Path, times: int, target: Path) -> None:
    """`source` repeated `times` times into `target` (same format: 16 kHz mono PCM for the sample)."""
    with wave.open(str(source), "rb") as reader:
        params, frames = reader.getparams(), reader.readframes(reader.getnframes())
    with wave.open(str(target), "wb") as writer:
        writer.setparams(params)
        for _ in range(times):
            writer.writeframes(frames)


def normalise(text: str) -> str:
    text = re.sub(r"[^\w\s']", " ", text.lower().replace("-", " ")).replace("'", "")
    return " ".join(text.split())


def stm_text(path: Path) -> str:
    return " ".join(" ".join(line.split()[5:]) for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def word_error_rate(reference: str, hypothesis: str) -> float:
    import jiwer  # root env, dev group

    return float(jiwer.wer(normalise(reference), normalise(hypothesis)))


def one_run(args: argparse.Namespace, audio: Path, out_dir: Path, reference: str | None) -> RunResult:
    stage_flags = to_argv(args, TRANSCRIBE_FLAGS)
    cli_args = cli.build_parser().parse_args(
        ["transcribe", str(audio), "--output_dir", str(out_dir), "--output_format", "json", "--threads", str(args.threads), *stage_flags]
    )
    outcome = cli.transcribe_all(cli_args, extra_env={"HF_HUB_OFFLINE": "1"})[0]
    if not outcome.ok:
        tail = "\n".join(outcome.log_path.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"stage 1 failed: {outcome.error}\n{tail}")
    transcript = json.loads(next(p for p in outcome.outputs if p.name.endswith(TRANSCRIPT_SUFFIX)).read_text())
    environment = transcript["provenance"]["environment"]
    return RunResult(
        audio_s=float(transcript["audio"]["duration"]),
        wall_s=outcome.seconds,
        stage_s=float(transcript["provenance"]["wall_time_s"]),
        peak_rss_mib=float(transcript["provenance"]["peak_rss_mib"]),
        segments=len(transcript["segments"]),
        fallbacks=sum(1 for segment in transcript["segments"] if (segment.get("temperature") or 0) > 0),
        words=len(normalise(transcript["text"]).split()),
        wer=None if reference is None else word_error_rate(reference, transcript["text"]),
        blas=environment.get(runtime.BLAS_CHOICE_ENV, "?"),
        threads=environment.get("STAGEWHISPER_THREADS", "?"),
    )


def machine_info() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "performance_cores": runtime.performance_cores(),
    }


def summary(results: list[RunResult], seconds: float) -> dict[str, float]:
    stats: dict[str, float] = {"peak_rss_mib_max": max(r.peak_rss_mib for r in results)}
    for kind in ("wall", "stage"):
        times = [getattr(r, f"{kind}_s") for r in results]
        stats |= {f"{kind}_min_s": min(times), f"{kind}_median_s": statistics.median(times)}
        stats |= {f"xrt_{kind}_best": seconds / min(times), f"xrt_{kind}_median": seconds / statistics.median(times)}
    return stats


COLUMNS = ("run", "wall s", "x-RT wall", "stage s", "x-RT stage", "peak RSS MiB", "segments", "fallbacks", "words", "WER")


def run_row(index: int, r: RunResult, seconds: float) -> list[str]:
    wer = "-" if r.wer is None else f"{r.wer:.1%}"
    times = [f"{r.wall_s:.1f}", f"{seconds / r.wall_s:.2f}x", f"{r.stage_s:.1f}", f"{seconds / r.stage_s:.2f}x"]
    return [str(index), *times, f"{r.peak_rss_mib:.0f}", str(r.segments), str(r.fallbacks), str(r.words), wer]


def summary_row(label: str, stats: dict[str, float]) -> list[str]:
    key = "best" if label == "min" else "median"
    times = [f"{stats[f'wall_{label}_s']:.1f}", f"{stats[f'xrt_wall_{key}']:.2f}x"]
    times += [f"{stats[f'stage_{label}_s']:.1f}", f"{stats[f'xrt_stage_{key}']:.2f}x"]
    rss = f"{stats['peak_rss_mib_max']:.0f}" if label == "min" else ""
    return [label, *times, rss, *[""] * (len(COLUMNS) - 6)]


def print_report(results: list[RunResult], seconds: float, stats: dict[str, float], info: dict[str, Any]) -> None:
    cores = f"{info['cpu_count']} CPUs ({info['performance_cores']} used by default)"
    console.print(f"machine: {info['platform']}, {cores}, python {info['python']}", highlight=False)
    console.print(f"BLAS: {results[0].blas}; threads: {results[0].threads}; audio: {seconds:.1f} s", highlight=False)
    table = Table(title="stage 1 (transcribe)")
    for column in COLUMNS:
        table.add_column(column, justify="right")
    for index, result in enumerate(results, 1):
        table.add_row(*run_row(index, result, seconds))
    for label in ("min", "median"):
        table.add_row(*summary_row(label, stats), style="bold")
    console.print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, help="benchmark this file instead of the repeated sample call")
    parser.add_argument("--reference", type=Path, help="plain-text reference for --audio (WER is skipped without it)")
    parser.add_argument("--repeat", type=int, default=10, help="copies of the 30 s sample call (default 10 = 300 s)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: the machine's performance cores (as the CLI)")
    add_flags(parser.add_argument_group("stage 1 flags, forwarded as given"), TRANSCRIBE_FLAGS)
    parser.set_defaults(model=BUNDLED_MODEL)
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/stage1-<timestamp>.json)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    envs.ensure_ready("transcribe")
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="stage1-bench-") as tmp:
        if args.audio:
            audio = args.audio.resolve()
            label = str(audio)
            reference = args.reference.read_text(encoding="utf-8") if args.reference else None
        else:
            audio = Path(tmp) / f"sample-x{args.repeat}.wav"
            concatenate(assets.sample_audio(), args.repeat, audio)
            label = f"{assets.sample_audio()} x{args.repeat}"
            reference = " ".join([stm_text(SAMPLE_REFERENCE)] * args.repeat)
        results = [one_run(args, audio, Path(tmp) / f"run{i}", reference) for i in range(args.runs)]
    seconds = results[0].audio_s  # as the stage decoded it (any format FFmpeg reads)
    stats = summary(results, seconds)
    print_report(results, seconds, stats, info)
    path = args.json or REPO / "benchmarks" / "results" / f"stage1-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    document = {"settings": settings, "audio": label, "audio_seconds": seconds, "machine": info}
    document |= {"summary": stats, "runs": [asdict(r) for r in results]}
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    console.print(f"results: {path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
