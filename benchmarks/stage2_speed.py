"""Stage 2 (align + diarize): ours against stock pyannote 3.3.2 and stock whisperx.align, on >= 10 minutes of real speech.

Run from the repo root in the root env:
  uv run python benchmarks/stage2_speed.py [--repeat 20] [--runs 3] [--stock-runs 1] [--parts diarize,align,stage,start]
  uv run python benchmarks/stage2_speed.py --parts long --long 3600,14400      # memory of 1 h and 4 h

Audio: pyannote's two-speaker sample call repeated (its RTTM shifted per copy is the reference). Parts:
- diarize: in one stage-2 process per pipeline, stock pyannote vs our engine exact vs fast, interleaved, for
  pyannote 3.1's architecture (segmentation-3.0 + WeSpeaker ResNet34 with random weights: the hub's model is gated)
  and `bundled` (real weights); x-realtime, turns equal to stock, DER of fast against exact and the reference.
  `bundled` runs twice: on the repeated call, and on a new conversation assembled from it (its single-speaker
  stretches in a shuffled order with pauses between, as long as the repeated call: other turns, exact truth).
- conversations: `bundled` exact vs fast on --conversations assembled conversations (seeds 0, 1, ...), one run each:
  DER of each against its truth, and pooled over all of them (a corpus's DER: errors summed over speech summed).
- align: stock `whisperx.align` vs ours, interleaved, with a random-init CTC model of wav2vec2-base's shapes.
- stage: the stage process as users run it (orchestrator's runner): x-realtime of the whole process and peak RSS.
- start: the stage process on a 2 s clip (imports, model loading, writing): what every file pays. Alignment with the
  HF-format random CTC folder and with WAV2VEC2_ASR_BASE_960H (a torchaudio bundle, random weights): English's default.
- long: 1 h / 4 h (--long) through the stage process, alignment on: time and peak RSS. The transcript is stage 1's
  of the sample with its segments repeated, so no hour-long stage 1 runs first.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator import assets, cli, envs
from shared.contract import Transcript
from shared.io import file_sha256, load_document

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage1_speed import concatenate, machine_info  # noqa: E402 - the sibling benchmark's helpers

REPO = Path(__file__).resolve().parent.parent
ENV_SCRIPTS = REPO / "tests" / "env_scripts"
console = Console(width=None if sys.stdout.isatty() else 160)
PARTS = ("diarize", "conversations", "align", "stage", "start")
ENV = {"HF_HUB_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}


def env_script(script: str, *args: str, threads: int) -> dict[str, Any]:
    import os

    env = {**os.environ, **ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(
        [str(envs.env_python("align_diarize")), str(ENV_SCRIPTS / script), *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"{script} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def medians(runs: list[dict[str, Any]], audio_s: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for variant in dict.fromkeys(run["variant"] for run in runs):
        mine = [run for run in runs if run["variant"] == variant]
        seconds = statistics.median(run["seconds"] for run in mine)
        row = {"runs": len(mine), "median_s": seconds, "xrt": audio_s / seconds}
        for key in ("der", "der_vs_exact"):
            values = [run[key] for run in mine if run.get(key) is not None]
            if values:
                row[key] = statistics.median(values)
        out[variant] = row
    return out


def same_turns(stock: list, ours: list, frame: float = 0.017) -> bool:
    return len(stock) == len(ours) and all(
        a[2] == b[2] and abs(a[0] - b[0]) <= frame and abs(a[1] - b[1]) <= frame for a, b in zip(stock, ours, strict=True)
    )


def single_speaker_stretches(rttm: Path, min_seconds: float = 0.5) -> list[tuple[float, float, str]]:
    """(start, end, speaker) of the reference where exactly one speaker talks."""
    turns = [(float(f[3]), float(f[3]) + float(f[4]), f[7]) for f in (line.split() for line in rttm.read_text().splitlines())]
    bounds = sorted({t for start, end, _ in turns for t in (start, end)})
    stretches: list[tuple[float, float, str]] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        talking = {who for a, b, who in turns if a <= start and end <= b}
        if len(talking) == 1:
            who = talking.pop()
            if stretches and stretches[-1][2] == who and abs(stretches[-1][1] - start) < 1e-9:
                stretches[-1] = (stretches[-1][0], end, who)
            else:
                stretches.append((start, end, who))
    return [stretch for stretch in stretches if stretch[1] - stretch[0] >= min_seconds]


def assembled_call(source: Path, rttm: Path, seconds: float, target: Path, seed: int = 0) -> Path:
    """A conversation of `seconds` made of the call's single-speaker stretches, shuffled, 0.2-1.2 s of silence between
    them; writes `target` and its RTTM beside it, which is returned."""
    rng = random.Random(seed)
    stretches = single_speaker_stretches(rttm)
    with wave.open(str(source), "rb") as reader:
        params, rate = reader.getparams(), reader.getframerate()
        pcm = reader.readframes(reader.getnframes())
    width = params.sampwidth
    pieces, lines, cursor = [], [], 0.0
    while cursor < seconds:
        start, end, who = rng.choice(stretches)
        gap = round(rng.uniform(0.2, 1.2), 3)
        pieces.append(b"\0" * (int(gap * rate) * width) + pcm[int(start * rate) * width : int(end * rate) * width])
        cursor += int(gap * rate) / rate
        length = int(end * rate) / rate - int(start * rate) / rate
        lines.append(f"SPEAKER {target.stem} 1 {cursor:.3f} {length:.3f} <NA> <NA> {who} <NA> <NA>")
        cursor += length
    with wave.open(str(target), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(b"".join(pieces))
    reference = target.with_suffix(".rttm")
    reference.write_text("\n".join(lines) + "\n")
    return reference


def align_part(transcript: Path, audio: Path, ctc: Path, args: argparse.Namespace) -> dict[str, Any]:
    console.print("align: whisperx.align vs ours ...", highlight=False)
    data = env_script("align_compare.py", str(transcript), str(audio), str(ctc), "--runs", str(args.runs), threads=args.threads)
    return {"audio_s": data["audio_s"], "variants": medians(data["runs"], data["audio_s"]), "words": data["words"], "runs": data["runs"]}


def stage_run(transcript: Path, flags: list[str], out_dir: Path, threads: int) -> dict[str, Any]:
    args = cli.build_parser().parse_args(
        ["align-diarize", str(transcript), "--output_dir", str(out_dir), "--threads", str(threads), "--force", *flags]
    )
    outcome = cli.align_diarize_all(args)[0]
    if not outcome.ok:
        tail = "\n".join(outcome.log_path.read_text(errors="replace").splitlines()[-25:])
        raise SystemExit(f"stage 2 {flags} failed: {outcome.error}\n{tail}")
    result = json.loads(next(path for path in outcome.outputs if path.suffix == ".json").read_text())
    provenance = result["provenance"][-1]
    return {
        "process_s": outcome.seconds,
        "stage_s": float(provenance["wall_time_s"]),
        "steps": provenance.get("timings", {}),
        "peak_rss_mib": float(provenance["peak_rss_mib"]),
        "audio_s": float(result["audio"]["duration"]),
        "speakers": len(result["speakers"]),
    }


def stage_modes(ctc: Path, pipeline31: str) -> dict[str, list[str]]:
    return {
        "align": ["--align_model", str(ctc)],
        "bundled exact + align": ["--align_model", str(ctc), "--diarize", "--diarize_model", "bundled"],
        "bundled fast + align": ["--align_model", str(ctc), "--diarize", "--diarize_model", "bundled", "--diarize_speed", "fast"],
        "3.1 exact + align": ["--align_model", str(ctc), "--diarize", "--diarize_model", pipeline31],
        "3.1 fast + align": ["--align_model", str(ctc), "--diarize", "--diarize_model", pipeline31, "--diarize_speed", "fast"],
    }


def stage_part(transcript: Path, modes: dict[str, list[str]], work: Path, args: argparse.Namespace) -> dict[str, Any]:
    runs = []
    for run in range(args.runs):
        for mode, flags in modes.items():
            console.print(f"stage: {mode} (run {run + 1}) ...", highlight=False)
            runs.append({"variant": mode, **stage_run(transcript, flags, work / "stage" / f"{len(runs)}", args.threads)})
    out = {}
    for mode in modes:
        mine = [r for r in runs if r["variant"] == mode]
        process = statistics.median(r["process_s"] for r in mine)
        out[mode] = {
            "runs": len(mine),
            "process_median_s": process,
            "xrt_process": mine[0]["audio_s"] / process,
            "peak_rss_mib_max": max(r["peak_rss_mib"] for r in mine),
            "steps_median": {k: statistics.median(r["steps"].get(k, 0.0) for r in mine) for k in mine[0]["steps"]},
        }
    return {"modes": out, "runs": runs}


def clip(source: Path, start: float, seconds: float, target: Path) -> None:
    with wave.open(str(source), "rb") as reader:
        reader.setpos(int(start * reader.getframerate()))
        params, frames = reader.getparams(), reader.readframes(int(seconds * reader.getframerate()))
    with wave.open(str(target), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(frames)


def start_part(work: Path, ctc: Path, args: argparse.Namespace) -> dict[str, Any]:
    audio = work / "two-seconds.wav"
    clip(assets.sample_audio(), 7.0, 2.0, audio)  # "Hello? ... Hi, hello": speech, so every step runs
    transcript = stage1(audio, work / "start-stage1")
    bundle_dir = work / "torchaudio-models"  # WAV2VEC2_ASR_BASE_960H's file with random weights: --model_dir finds it
    subprocess.run([str(envs.env_python("align_diarize")), str(ENV_SCRIPTS / "random_torchaudio_bundle.py"), str(bundle_dir)], check=True)
    modes = {"align only": ["--align_model", str(ctc)], "diarize only (bundled)": ["--no_align", "--diarize", "--diarize_model", "bundled"]}
    modes["align + diarize"] = modes["align only"] + modes["diarize only (bundled)"][1:]
    modes["align only (torchaudio bundle)"] = ["--model_dir", str(bundle_dir)]  # English's default: no transformers
    modes["torchaudio bundle + diarize"] = modes["align only (torchaudio bundle)"] + modes["diarize only (bundled)"][1:]
    runs = []
    for _ in range(args.runs):
        for mode, flags in modes.items():
            runs.append({"variant": mode, **stage_run(transcript, flags, work / "start" / f"{len(runs)}", args.threads)})
    return {
        mode: {
            "process_median_s": statistics.median(r["process_s"] for r in runs if r["variant"] == mode),
            "steps_median": {
                k: statistics.median(r["steps"].get(k, 0.0) for r in runs if r["variant"] == mode)
                for k in next(r for r in runs if r["variant"] == mode)["steps"]
            },
        }
        for mode in modes
    }


def stage1(audio: Path, out_dir: Path) -> Path:
    args = cli.build_parser().parse_args(
        ["transcribe", str(audio), "--model", "bundled-tiny.en", "--language", "en", "--output_dir", str(out_dir)]
    )
    outcome = cli.transcribe_all(args, extra_env={"HF_HUB_OFFLINE": "1"})[0]
    if not outcome.ok:
        raise SystemExit(f"stage 1 failed: {outcome.error}")
    return next(path for path in outcome.outputs if path.name.endswith(".transcript.json"))


def repeated_transcript(one: Path, times: int, period: float, audio: Path, target: Path) -> Path:
    """Stage 1's transcript of one copy, its segments repeated for `times` copies of the audio (as stage 1 would find them)."""
    transcript = load_document(one, Transcript)
    segments = []
    for copy in range(times):
        for segment in transcript.segments:
            shift = copy * period
            words = [w.model_copy(update={"start": w.start + shift, "end": w.end + shift}) for w in segment.words or []] or None
            segments.append(
                segment.model_copy(update={"id": len(segments), "start": segment.start + shift, "end": segment.end + shift, "words": words})
            )
    audio_info = transcript.audio.model_copy(
        update={"path": str(audio), "resolved_path": str(audio.resolve()), "sha256": file_sha256(audio), "duration": times * period}
    )
    target.write_text(transcript.model_copy(update={"audio": audio_info, "segments": segments}).model_dump_json(indent=1))
    return target


def long_part(one_transcript: Path, ctc: Path, pipeline31: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    out = {}
    for seconds in [int(s) for s in args.long.split(",") if s]:
        times = max(1, round(seconds / 30))
        audio = work / f"long-{seconds}.wav"
        concatenate(assets.sample_audio(), times, audio)
        transcript = repeated_transcript(one_transcript, times, 30.0, audio, work / f"long-{seconds}.transcript.json")
        for mode in args.long_modes.split(","):
            flags = stage_modes(ctc, pipeline31)[mode]
            console.print(f"long: {seconds} s, {mode} ...", highlight=False)
            started = time.perf_counter()
            out[f"{seconds} s, {mode}"] = stage_run(transcript, flags, work / "long" / f"{seconds}-{len(out)}", args.threads)
            console.print(
                f"  {time.perf_counter() - started:.0f} s, peak RSS {out[f'{seconds} s, {mode}']['peak_rss_mib']:.0f} MiB", highlight=False
            )
        audio.unlink()
    return out


def conversations_part(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Fast against exact where the truth is exact and the turns are not the call's own order: `bundled` on assembled
    conversations, per conversation and pooled."""
    reference = assets.sample_audio().with_suffix(".rttm")
    per_seed: dict[str, dict[str, Any]] = {}
    for seed in range(args.conversations):
        audio = work / f"conversation-{seed}.wav"
        rttm = assembled_call(assets.sample_audio(), reference, 30.0 * args.repeat, audio, seed=seed)
        console.print(f"conversations: seed {seed} ...", highlight=False)
        flags = ["--variants", "exact,fast", "--runs", "1", "--reference", str(rttm)]
        data = env_script("diarize_compare.py", "bundled", str(audio), *flags, threads=args.threads)
        per_seed[str(seed)] = {run["variant"]: {k: run[k] for k in ("seconds", "der", "der_components")} for run in data["runs"]}
    pooled = {}
    for variant in ("exact", "fast"):
        parts = [seed[variant]["der_components"] for seed in per_seed.values()]
        errors = sum(p["confusion"] + p["missed detection"] + p["false alarm"] for p in parts)
        pooled[variant] = errors / sum(p["total"] for p in parts)
    return {"audio_s_each": 30.0 * args.repeat, "per_seed": per_seed, "pooled_der": pooled}


def print_report(document: dict[str, Any]) -> None:
    for name, part in document.get("diarize", {}).items():
        table = Table(title=f"diarization, {name}, {part['audio_s']:.0f} s of speech (median of runs)")
        for column in ("variant", "runs", "seconds", "x-realtime", "vs stock", "DER vs reference", "DER vs exact", "speakers"):
            table.add_column(column, justify="right")
        stock = part["variants"]["stock"]["median_s"]
        for variant, row in part["variants"].items():
            der = "-" if row.get("der") is None else f"{row['der']:.1%}"
            vs_exact = "-" if row.get("der_vs_exact") is None else f"{row['der_vs_exact']:.1%}"
            table.add_row(
                variant, str(row["runs"]), f"{row['median_s']:.1f}", f"{row['xrt']:.1f}x", f"{stock / row['median_s']:.2f}x", der, vs_exact,
                str(part["speakers"][variant]),
            )  # fmt: skip
        console.print(table)
        console.print(f"exact's turns equal stock's (same speakers, boundaries within one frame): {part['exact_equals_stock']}")
    if "conversations" in document:
        part = document["conversations"]
        table = Table(title=f"bundled on assembled conversations of {part['audio_s_each']:.0f} s: DER against the truth")
        for column in ("conversation", "exact", "fast", "fast - exact (pt)"):
            table.add_column(column, justify="right")
        rows = [(seed, runs["exact"]["der"], runs["fast"]["der"]) for seed, runs in part["per_seed"].items()]
        rows.append(("pooled", part["pooled_der"]["exact"], part["pooled_der"]["fast"]))
        for name, exact, fast in rows:
            table.add_row(f"seed {name}" if name != "pooled" else name, f"{exact:.2%}", f"{fast:.2%}", f"{100 * (fast - exact):+.2f}")
        console.print(table)
    if "align" in document:
        part = document["align"]
        table = Table(title=f"alignment, wav2vec2-base-shaped random CTC, {part['audio_s']:.0f} s")
        for column in ("variant", "runs", "seconds", "x-realtime"):
            table.add_column(column, justify="right")
        for variant, row in part["variants"].items():
            table.add_row(variant, str(row["runs"]), f"{row['median_s']:.1f}", f"{row['xrt']:.1f}x")
        console.print(table)
        console.print(f"word times equal to whisperx.align's: {part['words']['equal_times']} of {part['words']['compared']}")
    for key, title in (("stage", "stage process"), ("long", "long recordings (one run each)")):
        if key not in document:
            continue
        rows = document[key]["modes"] if key == "stage" else document[key]
        table = Table(title=title)
        for column in ("mode", "process s", "x-realtime (process)", "peak RSS MiB", "steps (s)"):
            table.add_column(column, justify="right")
        for mode, row in rows.items():
            seconds = row.get("process_median_s", row.get("process_s"))
            xrt = row.get("xrt_process", row.get("audio_s", 0) / seconds)
            steps = row.get("steps_median", row.get("steps", {}))
            table.add_row(
                mode, f"{seconds:.1f}", f"{xrt:.1f}x", f"{row.get('peak_rss_mib_max', row.get('peak_rss_mib')):.0f}",
                ", ".join(f"{k} {v:.1f}" for k, v in steps.items()),
            )  # fmt: skip
        console.print(table)
    if "start" in document:
        table = Table(title="stage-2 process on a 2 s clip (what every file pays)")
        for column in ("mode", "process s", "steps (s)"):
            table.add_column(column, justify="right")
        for mode, row in document["start"].items():
            table.add_row(mode, f"{row['process_median_s']:.1f}", ", ".join(f"{k} {v:.2f}" for k, v in row["steps_median"].items()))
        console.print(table)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20, help="copies of the 30 s sample call (default 20 = 600 s)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stock-runs", type=int, default=1, help="runs of stock pyannote (0.6x realtime on 2 cores: slow)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {', '.join(PARTS)}, long")
    parser.add_argument("--pipelines", default="3.1-random,bundled")
    parser.add_argument("--conversations", type=int, default=8, help="assembled conversations of the conversations part")
    parser.add_argument("--long", default="3600,14400", help="durations in seconds for the long part")
    parser.add_argument("--long-modes", default="bundled exact + align,3.1 fast + align")
    parser.add_argument(
        "--long-ctc",
        choices=["base", "small"],
        default="base",
        help="alignment model of the long part: wav2vec2-base's shapes, or a small one (same code path and memory "
        "structure, 0.4 GB less weights, minutes less compute)",
    )
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/stage2-<timestamp>.json)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    parts = [part for part in args.parts.split(",") if part]
    envs.ensure_ready("transcribe")
    align_python = envs.ensure_ready("align_diarize")
    document: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()}, "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="stage2-bench-") as tmp:
        work = Path(tmp)
        ctc = work / "wav2vec2-base-random"
        subprocess.run([str(align_python), str(ENV_SCRIPTS / "random_ctc_model.py"), str(ctc), "--base"], check=True, capture_output=True)
        subprocess.run([str(align_python), str(ENV_SCRIPTS / "random_pyannote31.py"), str(work / "p31")], check=True, capture_output=True)
        pipeline31 = str(work / "p31" / "config.yaml")
        one = work / "sample.wav"
        concatenate(assets.sample_audio(), 1, one)
        one_transcript = stage1(one, work / "stage1-one") if {"align", "stage", "long"} & set(parts) else None
        audio = work / f"sample-x{args.repeat}.wav"
        concatenate(assets.sample_audio(), args.repeat, audio)
        if {"align", "stage"} & set(parts):
            assert one_transcript is not None
            transcript = repeated_transcript(one_transcript, args.repeat, 30.0, audio, work / f"sample-x{args.repeat}.transcript.json")
        if "diarize" in parts:
            reference = assets.sample_audio().with_suffix(".rttm")
            # diarize_compare shifts the reference per copy of the audio: pass the one-copy RTTM and the repeat count
            pipelines = {"3.1-random": pipeline31, "bundled": "bundled"}
            chosen = {name: pipelines[name] for name in args.pipelines.split(",")}
            document["diarize"] = diarize_part(audio, reference, chosen, args)
        if "conversations" in parts:
            document["conversations"] = conversations_part(work, args)
        if "align" in parts:
            document["align"] = align_part(transcript, audio, ctc, args)
        if "stage" in parts:
            document["stage"] = stage_part(transcript, stage_modes(ctc, pipeline31), work, args)
        if "start" in parts:
            document["start"] = start_part(work, ctc, args)
        if "long" in parts:
            assert one_transcript is not None
            long_ctc = ctc
            if args.long_ctc == "small":
                long_ctc = work / "wav2vec2-small-random"
                builder = [str(align_python), str(ENV_SCRIPTS / "random_ctc_model.py"), str(long_ctc)]
                subprocess.run(builder, check=True, capture_output=True)
            document["long"] = long_part(one_transcript, long_ctc, pipeline31, work, args)
    print_report(document)
    path = args.json or REPO / "benchmarks" / "results" / f"stage2-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    console.print(f"results: {path}", highlight=False)
    return 0


def diarize_part(audio: Path, reference: Path, pipelines: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """Each pipeline on the repeated call (the one-copy sample tiled in the env script, which shifts the reference per
    copy) and `bundled` also on an assembled conversation of the same length."""
    one = audio.with_name("one-copy.wav")
    concatenate(assets.sample_audio(), 1, one)
    assembled = audio.with_name("assembled.wav")
    assembled_rttm = assembled_call(assets.sample_audio(), reference, 30.0 * args.repeat, assembled)
    cases = [(name, pipeline, one, reference, args.repeat) for name, pipeline in pipelines.items()]
    if "bundled" in pipelines:
        cases.append(("bundled, assembled conversation", "bundled", assembled, assembled_rttm, 1))
    results = {}
    for name, pipeline, wav, rttm, repeat in cases:
        console.print(f"diarize: {name} ...", highlight=False)
        flags = ["--variants", "stock,exact,fast", "--runs", str(args.runs), "--reference", str(rttm), "--repeat", str(repeat)]
        data = env_script("diarize_compare.py", pipeline, str(wav), *flags, "--stock-runs", str(args.stock_runs), threads=args.threads)
        first = {run["variant"]: run["turns"] for run in reversed(data["runs"])}
        results[name] = {
            "audio_s": data["audio_s"],
            "variants": medians(data["runs"], data["audio_s"]),
            "exact_equals_stock": same_turns(first["stock"], first["exact"]),
            "speakers": {variant: len({turn[2] for turn in turns}) for variant, turns in first.items()},
            "runs": [{k: v for k, v in run.items() if k != "turns"} for run in data["runs"]],
        }
    return results


if __name__ == "__main__":
    sys.exit(main())
