"""`stagewhisper`: set up the stage environments and run the stages, each in its own process and env."""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.contract import AudioInfo, Result, Transcript
from shared.errors import ExitCode, StageError
from shared.flags import (
    ALIGN_FLAGS,
    ALLOW_TRUNCATED_ENV,
    BUNDLED_MODEL,
    DIARIZE_FLAGS,
    HF_TOKEN_FLAG,
    STAGE2_MODEL_DIR_FLAG,
    THREADS_FLAG,
    TRANSCRIBE_FLAGS,
    WHISPERX_FLAGS,
    WRITER_FLAGS,
    add_flags,
    int_at_least,
    to_argv,
)
from shared.io import TRANSCRIPT_SUFFIX, load_document, recorded_audio
from shared.progress import ProgressEvent
from shared.writers import WriterOptions, expand_formats, result_formats, write_outputs

from . import assets, envs, pack, runtime, workdir
from .cluster.nodes import add_node_commands, command_node
from .stage_runner import StageOutcome, log_path_for, stop_running_stages
from .usage import apply_whisperx_flags, check_usage, usage_warnings
from .workers import StagePool, WorkerPool

console = Console(stderr=True)


class OneLineParser(argparse.ArgumentParser):
    """Command-line errors in one line (argparse prints the whole usage first), exit 2 as documented."""

    def error(self, message: str) -> NoReturn:
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="stagewhisper", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    setup = commands.add_parser("setup", help="create/sync both stage environments from their locks and check them")
    setup.add_argument("--force", action="store_true", help="sync and re-check even if nothing changed")

    transcribe = commands.add_parser("transcribe", help="stage 1 only: audio -> <name>.transcript.json (+ subtitles)")
    transcribe.add_argument("audio", nargs="+", help="audio or video files")
    _add_run_flags(transcribe)

    run = commands.add_parser("run", help="both stages on each file: transcript, word alignment and, with --diarize, speakers")
    run.add_argument("audio", nargs="+", help="audio or video files")
    _add_run_flags(run)
    _add_stage2_flags(run)
    run.add_argument(
        "--jobs", type=int_at_least(1), default=1, help="stage-2 processes at once; above 1, stage 1 goes on with the next file meanwhile"
    )

    align = commands.add_parser(
        "align-diarize", help="stage 2 only, from stage 1's JSON or a pack: word alignment and, with --diarize, speakers"
    )
    align.add_argument(
        "transcripts",
        nargs="+",
        metavar="INPUT",
        help=f"stage 1's JSON files (<name>{TRANSCRIPT_SUFFIX}) and/or packs (<name>{pack.PACK_SUFFIX}, from `stagewhisper pack`)",
    )
    align.add_argument(
        "--audio", default=None, help="the audio stage 1 transcribed, when it has moved or the pack has none (one input only)"
    )
    align.add_argument("--output_dir", "-o", default=None, help="folder for the outputs (default: each input's folder)")
    align.add_argument(
        "--allow_truncated", action="store_true", help="accept audio shorter than its header says (as stage 1 did with this flag)"
    )
    align.add_argument(
        "--pack-result",
        action="store_true",
        help=f"also write the outputs as one file, <name>{pack.RESULT_PACK_SUFFIX}, to send back",
    )
    add_flags(align.add_argument_group("output"), WRITER_FLAGS)
    add_flags(align, (STAGE2_MODEL_DIR_FLAG, THREADS_FLAG))
    _add_stage2_flags(align)
    _add_force_flag(align)
    _add_whisperx_flags(align)
    align.add_argument("--jobs", type=int_at_least(1), default=1, help="inputs processed at once (the CPU threads are shared between them)")
    _add_ray_flag(align)

    packer = commands.add_parser(
        "pack", help=f"one portable file ({pack.PACK_SUFFIX}) with a transcript and its audio, for stage 2 on another machine"
    )
    packer.add_argument("transcript", help=f"stage 1's JSON (<name>{TRANSCRIPT_SUFFIX})")
    packer.add_argument(
        "--output", "-o", default=None, help=f"the pack file or a folder (default: <name>{pack.PACK_SUFFIX} beside the transcript)"
    )
    packer.add_argument("--audio", default=None, help="the audio stage 1 transcribed, when it has moved")
    packer.add_argument(
        "--no-audio", action="store_true", help="leave the audio out (only its sha256 and size): pass --audio to align-diarize"
    )

    add_node_commands(commands)

    demo = commands.add_parser("demo", help="the pipeline on pyannote's sample call with bundled models, offline")
    demo.add_argument("--output_dir", "-o", default="stagewhisper-demo", help="folder for the outputs")
    add_flags(demo, (THREADS_FLAG,))
    return parser


def _add_ray_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--ray", default=None, metavar="HOST:PORT", help="run the stages on the Ray cluster at HOST:PORT (see `stagewhisper node`)"
    )


def _add_run_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--output_dir", "-o", default=".", help="folder for the outputs")
    _add_ray_flag(command)
    add_flags(command.add_argument_group("output"), WRITER_FLAGS)
    add_flags(command.add_argument_group("stage 1 (transcribe)"), TRANSCRIBE_FLAGS)
    add_flags(command, (THREADS_FLAG,))
    _add_force_flag(command)
    _add_whisperx_flags(command)


def _add_whisperx_flags(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("WhisperX's flags, accepted so its command lines run unchanged (see README)")
    add_flags(group, WHISPERX_FLAGS)


def _add_force_flag(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--force", action="store_true", help=f"redo stages whose result for the same input and settings is kept in {workdir.CACHE_FOLDER}"
    )


def _add_stage2_flags(command: argparse.ArgumentParser) -> None:
    add_flags(command.add_argument_group("stage 2 (alignment)"), ALIGN_FLAGS)
    add_flags(command.add_argument_group("stage 2 (diarization, always on CPU)"), DIARIZE_FLAGS + (HF_TOKEN_FLAG,))


def stage2_argv(args: argparse.Namespace) -> list[str]:
    """Stage 2's flags from the user's; the HF token goes through the environment, never a logged command line."""
    argv = to_argv(args, ALIGN_FLAGS + DIARIZE_FLAGS + WRITER_FLAGS)
    if getattr(args, "model_dir", None):
        argv += ["--model_dir", args.model_dir]
    return argv


def stage2_env(args: argparse.Namespace) -> dict[str, str]:
    env = {"HF_TOKEN": args.hf_token} if getattr(args, "hf_token", None) else {}
    env |= getattr(args, "stage2_env", {})  # WhisperX's --device_index (usage.apply_whisperx_flags)
    if getattr(args, "allow_truncated", False):  # stage 2 decodes the audio again and must accept the same cut file
        env[ALLOW_TRUNCATED_ENV] = "1"
    return env


def output_names(audio_files: Sequence[str]) -> list[str]:
    """One base name per input: its stem, or its full name / an index where stems collide."""
    stems = Counter(Path(audio).stem for audio in audio_files)
    names: list[str] = []
    for audio in audio_files:
        name = Path(audio).stem if stems[Path(audio).stem] == 1 else Path(audio).name
        while name in names:
            name = f"{name}-{len(names) + 1}"
        names.append(name)
    return names


Pending = StageOutcome | Future[StageOutcome]


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during a run: the stages were stopped; carries the outcomes of the stages that had ended."""

    def __init__(self, outcomes: list[StageOutcome]) -> None:
        super().__init__("interrupted")
        self.outcomes = outcomes


# Files a stage-1 worker holds at once: it decodes their speech chunks in shared batches (a 5 s memo does not fill a
# batch alone). More would only delay the first transcripts, which stage 2 is waiting for.
STAGE1_HELD_FILES = 8
# `align-diarize --ray`: inputs in flight at once (each holds a thread here while a node works on it).
RAY_INPUTS_AT_ONCE = 64


def _resolved(item: Pending) -> StageOutcome:
    return item.result() if isinstance(item, Future) else item


def _stop_and_collect(
    pools: Sequence[StagePool | None], pending: Sequence[Pending], executor: ThreadPoolExecutor | None = None
) -> list[StageOutcome]:
    """Stop every worker (their files in hand end as interrupted), cancel what no worker holds yet, let the threads
    following them end, and keep the outcomes of what ended."""
    stop_running_stages()
    live = [pool for pool in pools if pool is not None]
    for pool in live:
        pool.close(cancel=True)
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
    for pool in live:
        pool.shutdown(timeout_s=5.0)
    ended: list[StageOutcome] = []
    for item in pending:
        if isinstance(item, StageOutcome):
            ended.append(item)
        elif item.done() and not item.cancelled() and item.exception() is None:
            ended.append(item.result())
    return ended


@contextlib.contextmanager
def _workers(*pools: StagePool | None) -> Iterator[None]:
    """The run's worker pools, shut down when it ends (their workers finish what they hold, then exit)."""
    try:
        yield
    finally:
        for pool in pools:
            if pool is not None:
                pool.shutdown()


def same_files_once(paths: Sequence[str]) -> list[str]:
    """Each file once, in the order first given: `x`, `./x` and its absolute path are one file, and running it twice
    would only redo the work and race on the same outputs."""
    given: dict[Path, list[str]] = {}
    for path in paths:
        given.setdefault(Path(path).resolve(), []).append(path)
    for names in given.values():
        if len(names) > 1:
            same = f"{', '.join(names[:-1])} and {names[-1]} are the same file; it is processed once"
            console.print(f"[yellow]warning[/]: {same}", highlight=False, soft_wrap=True)
    return [names[0] for names in given.values()]


def log_names(paths: Sequence[str]) -> list[str]:
    """Each input's log name: its file name, or with as many of its folders as tell it apart (`day1_meeting.flac`)
    where inputs share a file name, so that no log overwrites another's."""
    return ["_".join(parts) for parts in _telling_parts(paths)]


def _telling_parts(paths: Sequence[str]) -> list[tuple[str, ...]]:
    """Each path's last parts: the file name, and as many folders as tell it from other files of that name."""
    parts = [Path(path).resolve().parts[1:] for path in paths]
    distinct = set(parts)  # the same file twice (stage 1 and stage 2 rows) is one file
    telling: list[tuple[str, ...]] = []
    for own in parts:
        depth = 1
        while depth < len(own) and sum(other[-depth:] == own[-depth:] for other in distinct) > 1:
            depth += 1
        telling.append(own[-depth:])
    return telling


def stage_pool(
    args: argparse.Namespace,
    stage: str,
    size: int,
    threads: int | None,
    extra_env: dict[str, str] | None,
    worker_log: Callable[[str], Path],
    capacity: int = 1,
    prepare_argv: list[str] | None = None,
) -> StagePool:
    """The stage's workers: here, or with `--ray HOST:PORT` on the cluster's nodes that offer the stage (each node sets
    its own workers' threads from its cores unless --threads is given; --jobs is the nodes' business there)."""
    if getattr(args, "ray", None):
        from .cluster.driver import cluster_pool

        return cluster_pool(args.ray, stage, args.threads or None, extra_env, capacity, prepare_argv)
    return WorkerPool(stage, size, threads, extra_env, worker_log, capacity=capacity, prepare_argv=prepare_argv)


def transcribe_all(args: argparse.Namespace, extra_env: dict[str, str] | None = None, then_stage2: bool = False) -> list[StageOutcome]:
    """Stage 1 on every file, each followed by stage 2 when asked; a failing file never stops the others.

    One long-lived stage-1 worker takes the files (several at a time, batching their speech chunks) and stage-2
    workers (`--jobs`, default 1) take each transcript as it arrives: both stages busy at once, the cores split
    between them, every library imported and every model loaded once per run.
    """
    output_dir = Path(args.output_dir)
    audio_files = same_files_once(args.audio)
    extra_env = {**(extra_env or {}), **getattr(args, "stage1_env", {})}  # WhisperX's --device/--device_index
    stage_argv = to_argv(args, TRANSCRIBE_FLAGS + WRITER_FLAGS)
    if then_stage2:  # stage 2 writes the subtitles, from aligned words
        stage_argv = [*to_argv(args, TRANSCRIBE_FLAGS), "--output_format", "json"]
    elif "--output_format" not in stage_argv:  # the stage's own default is json only
        stage_argv += ["--output_format", args.output_format]
    if getattr(args, "vad_method", "silero") == "pyannote" and not getattr(args, "no_vad", False):
        export_pyannote_vad(extra_env)
    jobs = max(1, getattr(args, "jobs", 1))
    stage1_args, stage2_args = split_threads(args, jobs, both_stages=then_stage2 and len(audio_files) > 1)
    worker_log = partial(log_path_for, output_dir, stage="transcribe")
    stage1 = stage_pool(args, "transcribe", 1, stage1_args.threads or None, extra_env, worker_log, capacity=STAGE1_HELD_FILES)
    stage2 = None
    if then_stage2:
        stage2 = stage_pool(
            args, "align_diarize", jobs, stage2_args.threads or None, _merged(extra_env, args),
            partial(log_path_for, output_dir, stage="align_diarize"), prepare_argv=stage2_argv(args),
        )  # fmt: skip
    names = list(zip(audio_files, output_names(audio_files), log_names(audio_files), strict=True))
    firsts: list[Pending] = []
    handed: list[Future[Pending | None]] = []  # each file's stage 2, handed over the moment its transcript is written
    with _progress() as progress, _workers(stage1, stage2):

        def hand_over(audio: str, name: str, log_name: str, first: Pending) -> Future[Pending | None]:
            handover: Future[Pending | None] = Future()

            def start_stage2(done: Pending) -> None:
                try:
                    outcome = _resolved(done)
                    transcript = output_dir / f"{name}{TRANSCRIPT_SUFFIX}"
                    ok = stage2 is not None and outcome.ok
                    handover.set_result(
                        _align_diarize_one(progress, stage2, stage2_args, audio, transcript, output_dir, log_name=log_name) if ok else None
                    )
                except BaseException as error:  # noqa: BLE001 - the main thread raises it (a cancelled file, a broken env)
                    handover.set_exception(error)

            if isinstance(first, StageOutcome):
                start_stage2(first)
            else:
                first.add_done_callback(start_stage2)
            return handover

        try:
            for audio, name, log_name in names:  # every file queued at once: the worker batches across them
                firsts.append(_transcribe_one(progress, stage1, stage1_args, audio, name, log_name, output_dir, stage_argv, then_stage2))
                if stage2 is not None:
                    handed.append(hand_over(audio, name, log_name, firsts[-1]))
            if stage2 is not None and any(isinstance(first, Future) for first in firsts):
                stage2.start()  # it imports torch and loads its models while stage 1 decodes
            outcomes: list[StageOutcome] = []
            for index, first in enumerate(firsts):
                outcomes.append(_resolved(first))
                second = handed[index].result() if stage2 is not None else None
                if second is not None:
                    outcomes.append(_resolved(second))
            return outcomes
        except KeyboardInterrupt:
            pending: list[Pending] = []
            for index, first in enumerate(firsts):  # the summary's order: each file's stage 1, then its stage 2
                pending.append(first)
                second = handed[index] if index < len(handed) else None
                if second is not None and second.done() and not second.cancelled() and second.exception() is None:
                    pending += [item for item in [second.result()] if item is not None]
            raise Interrupted(_stop_and_collect([stage1, stage2], pending)) from None


def export_pyannote_vad(extra_env: dict[str, str] | None) -> None:
    """--vad_method pyannote: stage 2's env (torch, whisperx) exports WhisperX's VAD model to ONNX for stage 1, once;
    later runs find it in the cache and return at once."""
    try:
        python = envs.ensure_ready("align_diarize")
    except StageError as error:
        why = "--vad_method pyannote needs the align_diarize environment once, to export WhisperX's VAD model for stage 1"
        raise StageError(error.exit_code, f"{why} ({error.message}); or use --vad_method silero") from None
    env = runtime.stage_environment("align_diarize") | (extra_env or {})
    command = [str(python), "-P", "-m", "stages.align_diarize.export_vad"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        code = ExitCode(done.returncode) if done.returncode in set(ExitCode) else ExitCode.STAGE_CRASHED
        raise StageError(code, f"exporting WhisperX's VAD model for stage 1 failed: {last}")


def split_threads(args: argparse.Namespace, jobs: int, both_stages: bool = False) -> tuple[argparse.Namespace, argparse.Namespace]:
    """Thread counts for stage 1 and each stage-2 worker. When both stages run at once (several files through `run`,
    or `--jobs` > 1): half the cores for stage 1, the rest shared by the stage-2 workers (at least one each). Why:
    oversubscribed torch/OpenMP threads spin-wait; on 2 cores, 2+2+2 threads measured 2.7x slower than running the
    files one after another."""
    if jobs <= 1 and not both_stages:
        return args, args
    total = args.threads or runtime.performance_cores()
    stage1 = max(1, total // 2)
    stage2 = max(1, (total - stage1) // jobs)
    return argparse.Namespace(**{**vars(args), "threads": stage1}), argparse.Namespace(**{**vars(args), "threads": stage2})


def _transcribe_one(
    progress: Progress,
    pool: StagePool,
    args: argparse.Namespace,
    audio: str,
    name: str,
    log_name: str,
    output_dir: Path,
    stage_argv: list[str],
    then_stage2: bool,
) -> Pending:
    """Stage 1 on one file, or its kept transcript when the same audio was transcribed with the same settings."""
    json_path = output_dir / f"{name}{TRANSCRIPT_SUFFIX}"
    audio_sha256 = workdir.file_sha256(Path(audio))
    key = None
    if audio_sha256:
        key = workdir.ArtifactKey("transcribe", audio_sha256, workdir.params_sha256("transcribe", stage1_key_argv(args), args.model))
        kept = None if args.force else workdir.load_artifact(output_dir, key)
        if isinstance(kept, Transcript):
            place = {"path": audio, "resolved_path": str(Path(audio).resolve())}  # same bytes, maybe another path
            kept = kept.model_copy(update={"audio": kept.audio.model_copy(update=place)})
            formats = ["json"] if then_stage2 else expand_formats(args.output_format)  # as the stage would have written
            return _reuse(progress, "transcribe", audio, log_name, kept, output_dir, name, formats, json_path, key, args)
    argv = [audio, "--output_dir", str(output_dir), "--output_name", name, *stage_argv]
    future = _submit(progress, pool, audio, argv, output_dir, log_name)
    if key is not None:
        future.add_done_callback(partial(_keep_if_ok, output_dir, key, json_path))
    return future


def _keep_if_ok(output_dir: Path, key: workdir.ArtifactKey, json_path: Path, future: Future[StageOutcome]) -> None:
    """A stage's result kept for reruns with the same input and settings, once the stage wrote it."""
    if not future.cancelled() and future.exception() is None and future.result().ok:
        workdir.keep_artifact(output_dir, key, json_path)


def stage1_key_argv(args: argparse.Namespace) -> list[str]:
    """The flags that decide a transcript: stage 1's own, and --device cpu (float32 where the GPU ran float16)."""
    return to_argv(args, TRANSCRIBE_FLAGS) + (["--device", "cpu"] if getattr(args, "device", None) == "cpu" else [])


def _align_diarize_one(
    progress: Progress,
    pool: StagePool,
    args: argparse.Namespace,
    label: str,
    transcript: Path,
    output_dir: Path,
    audio: str | None = None,
    log_name: str | None = None,
    name: str | None = None,
) -> Pending:
    """Stage 2 on one transcript, or its kept result when the same transcript met the same stage-2 settings;
    outputs named `name` (default: the transcript's)."""
    given_name = name
    name = name or (transcript.name.removesuffix(TRANSCRIPT_SUFFIX) if transcript.name.endswith(TRANSCRIPT_SUFFIX) else transcript.stem)
    log_name = log_name or Path(label).name
    transcript_sha256 = workdir.transcript_sha256(transcript)
    key = None
    if transcript_sha256:
        params = workdir.params_sha256("align_diarize", to_argv(args, ALIGN_FLAGS + DIARIZE_FLAGS), args.align_model)
        key = workdir.ArtifactKey("align_diarize", transcript_sha256, params)
        kept = None if args.force else workdir.load_artifact(output_dir, key)
        if isinstance(kept, Result) and (audio_now := _transcript_audio(transcript)):
            kept = kept.model_copy(update={"audio": audio_now})  # the key leaves out the audio's paths: take today's
            formats = result_formats(args.output_format, args.diarize)
            json_path = output_dir / f"{name}.json"
            return _reuse(progress, "align_diarize", label, log_name, kept, output_dir, name, formats, json_path, key, args)
    argv = [str(transcript), "--output_dir", str(output_dir), *stage2_argv(args)]
    argv += ["--output_name", given_name] if given_name else []
    if audio:
        argv += ["--audio", audio]
    future = _submit(progress, pool, label, argv, output_dir, log_name)
    if key is not None:
        future.add_done_callback(partial(_keep_if_ok, output_dir, key, output_dir / f"{name}.json"))
    return future


def _transcript_audio(transcript_path: Path) -> AudioInfo | None:
    """The transcript's audio record; None when it does not load (stage 2 then says why, in its own words)."""
    try:
        return load_document(transcript_path, Transcript).audio
    except StageError:
        return None


def _found_audio(transcript_path: Path) -> str | None:
    """Where the transcript's audio is now, absolute (shared.io.recorded_audio: stage 1 may have run in another folder
    than this one). None leaves the search, and its error, to stage 2."""
    audio = _transcript_audio(transcript_path)
    found = recorded_audio(audio, transcript_path) if audio else None
    return str(found.absolute()) if found else None


def _reuse(
    progress: Progress,
    stage: str,
    label: str,
    log_name: str,
    document: Transcript | Result,
    output_dir: Path,
    name: str,
    formats: list[str],
    json_path: Path,
    key: workdir.ArtifactKey,
    args: argparse.Namespace,
) -> StageOutcome:
    """Write the outputs from a kept artifact instead of running the stage; say so in one line and in the log."""
    started = time.perf_counter()
    kept_at = workdir.artifact_path(output_dir, key)
    log_path = log_path_for(output_dir, log_name, stage)
    options = WriterOptions(args.max_line_width, args.max_line_count, args.highlight_words)
    try:
        # as the stage writes them: all or none, the JSON always and renamed last
        outputs = write_outputs(document, output_dir, name, [*formats, "json"], options, json_path=json_path)
    except StageError as error:
        return StageOutcome(stage, label, int(error.exit_code), time.perf_counter() - started, log_path, error=error.message)
    with contextlib.suppress(OSError):
        log_path.write_text(f"# {stage}: reused {kept_at} (same input and settings; --force redoes it)\n# exit status 0\n")
    task = progress.add_task(f"{stage} {Path(label).name}: [cyan]reused[/] (same input and settings; --force redoes it)", total=1)
    progress.update(task, completed=1)
    return StageOutcome(stage, label, int(ExitCode.OK), time.perf_counter() - started, log_path, outputs, reused=True)


def align_diarize_all(args: argparse.Namespace) -> list[StageOutcome]:
    """Stage 2 alone on stage 1's JSON files and packs, in one list; a failing input never stops the others.

    `--jobs N` runs up to N inputs at once on N workers, the cores shared between them."""
    inputs = same_files_once(args.transcripts)
    if args.audio and len(inputs) > 1:
        raise StageError(ExitCode.USAGE, "--audio names the audio of one input; pass one transcript or pack with it")
    jobs = max(1, args.jobs)
    if args.ray:  # the cluster's nodes decide how many run at once: hand them every input (a thread each waits here)
        jobs = min(len(inputs), RAY_INPUTS_AT_ONCE)
    elif jobs > 1:
        args = argparse.Namespace(**{**vars(args), "threads": max(1, (args.threads or runtime.performance_cores()) // jobs)})
    first_output_dir = Path(args.output_dir) if args.output_dir else Path(inputs[0]).parent
    stage2 = stage_pool(
        args, "align_diarize", jobs, args.threads or None, stage2_env(args),
        partial(log_path_for, first_output_dir, stage="align_diarize"), prepare_argv=stage2_argv(args),
    )  # fmt: skip
    with _progress() as progress, _workers(stage2), ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="stage2") as pool:
        futures = [
            pool.submit(_align_diarize_input, progress, stage2, args, item, log_name)
            for item, log_name in zip(inputs, log_names(inputs), strict=True)
        ]
        try:
            return [future.result() for future in futures]
        except KeyboardInterrupt:
            raise Interrupted(_stop_and_collect([stage2], list(futures), executor=pool)) from None


def _align_diarize_input(progress: Progress, workers: StagePool, args: argparse.Namespace, item: str, log_name: str) -> StageOutcome:
    output_dir = Path(args.output_dir) if args.output_dir else Path(item).parent
    if pack.is_pack(Path(item)):
        outcome = _align_diarize_pack(progress, workers, Path(item), output_dir, args, log_name)
    else:
        audio = str(Path(args.audio).absolute()) if args.audio else _found_audio(Path(item))
        outcome = _resolved(_align_diarize_one(progress, workers, args, item, Path(item), output_dir, audio, log_name))
    if args.pack_result and outcome.ok:
        _add_result_pack(outcome, output_dir)
    return outcome


def _align_diarize_pack(
    progress: Progress, workers: StagePool, pack_path: Path, output_dir: Path, args: argparse.Namespace, log_name: str
) -> StageOutcome:
    """Verify and unpack into a private temp folder, then stage 2 exactly as for a transcript, outputs named after the pack."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="stagewhisper-pack-") as unpack_dir:
        try:
            unpacked = pack.unpack_transcript_pack(pack_path, Path(unpack_dir))
            audio = pack.check_given_audio(unpacked, Path(args.audio) if args.audio else None)
        except StageError as error:  # refused before any stage ran: the log is the only file written
            return _refused(pack_path, log_name, output_dir, error, time.perf_counter() - started)
        # Absolute paths: the unpacked transcript lives in a temp folder, away from the user's relative paths. Kept
        # results are keyed by the transcript's bytes, which the pack holds unchanged: a rerun on a pack is reused.
        outcome = _resolved(_align_diarize_one(
            progress, workers, args, str(pack_path), unpacked.transcript, output_dir.absolute(),
            str(audio.absolute()), log_name, name=unpacked.output_name,
        ))  # fmt: skip
        # The unpacked copy vanishes with the temp folder: name the pack in the error instead.
        outcome.error = outcome.error.replace(f"{unpack_dir}/", f"{pack_path}:")
    return outcome


def _refused(label: Path, log_name: str, output_dir: Path, error: StageError, seconds: float) -> StageOutcome:
    log_path = log_path_for(output_dir, log_name, "align_diarize")
    try:
        log_path.write_text(f"stagewhisper align_diarize: error: {error.message}\n", encoding="utf-8")
    except OSError:  # a log we cannot write must not hide the refusal itself
        pass
    shown = error.message.removeprefix(f"{label}: ")  # the report names the input already
    return StageOutcome("align_diarize", str(label), int(error.exit_code), seconds, log_path, error=shown)


def _add_result_pack(outcome: StageOutcome, output_dir: Path) -> None:
    """<name>.result.swpack beside the outputs; failing to write it fails the input (its outputs stay)."""
    result_json = next((path for path in outcome.outputs if path.suffix == ".json"), None)
    if result_json is None:
        return
    destination = output_dir / f"{result_json.stem}{pack.RESULT_PACK_SUFFIX}"
    try:
        outcome.outputs.append(pack.create_result_pack(outcome.outputs, destination))
    except StageError as error:
        outcome.exit_code, outcome.error = int(error.exit_code), error.message


def _merged(extra_env: dict[str, str] | None, args: argparse.Namespace) -> dict[str, str]:
    return {**(extra_env or {}), **stage2_env(args)}


def _submit(
    progress: Progress, pool: StagePool, label: str, argv: list[str], output_dir: Path, log_name: str | None = None
) -> Future[StageOutcome]:
    """Queue one file on the stage's workers, with a progress line that follows it."""
    stage = pool.stage
    task = progress.add_task(f"{stage} {Path(label).name}: queued", total=None)

    def show(event: ProgressEvent) -> None:
        if event.kind == "progress":
            step = f": {event.message}" if event.message else ""
            progress.update(task, total=event.total, completed=event.done, description=f"{stage} {Path(label).name}{step}")

    def ended(future: Future[StageOutcome]) -> None:
        if not future.cancelled():
            progress.update(task, total=1, completed=1, description=_task_label(future.result()))

    future = pool.submit(argv, label, log_path_for(output_dir, log_name or label, stage), on_event=show)
    future.add_done_callback(ended)
    return future


def _task_label(outcome: StageOutcome) -> str:
    mark = "[green]done[/]" if outcome.ok else "[red]failed[/]"
    return f"{outcome.stage} {Path(outcome.audio).name}: {mark}"


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def report(outcomes: Sequence[StageOutcome]) -> int:
    """One line per failure, a summary table, and the exit code: 0, or the first failure's."""
    table = Table(title="stagewhisper", show_lines=False)
    table.add_column("file", overflow="fold")
    for column in ("stage", "status", "time"):
        table.add_column(column, no_wrap=True)
    table.add_column("output / error", overflow="fold")
    for outcome, shown in zip(outcomes, display_names([outcome.audio for outcome in outcomes]), strict=True):
        status = ("[cyan]reused[/]" if outcome.reused else "[green]ok[/]") if outcome.ok else f"[red]exit {outcome.exit_code}[/]"
        status += " [yellow](retried)[/]" if outcome.retried else ""
        detail = _shown_path(main_output(outcome)) if outcome.ok and outcome.outputs else outcome.error
        table.add_row(shown, outcome.stage, status, f"{outcome.seconds:.1f}s", detail, end_section=False)
    console.print(table)
    for outcome in outcomes:
        if outcome.retried:  # on a cluster: a node died while on it, and another did it (written once)
            console.print(f"[yellow]retried[/]: {outcome.audio} ({outcome.stage}): {outcome.retried}", highlight=False, soft_wrap=True)
    failures = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failures:
        # stages' own errors usually start with the file already
        message = outcome.error if outcome.error.startswith(f"{outcome.audio}: ") else f"{outcome.audio}: {outcome.error}"
        log = "" if str(outcome.log_path) in message else f" (log: {outcome.log_path})"  # crash messages name it already
        console.print(f"[red]error[/]: {message}{log}", highlight=False, soft_wrap=True)
    return failures[0].exit_code if failures else ExitCode.OK


def display_names(paths: Sequence[str]) -> list[str]:
    """The summary's file column: each input's file name, with as many folders as tell apart inputs of the same
    name. Full paths wrapped mid-word over five lines; the error lines below the table keep the full path."""
    return ["/".join(parts) for parts in _telling_parts(paths)]


def main_output(outcome: StageOutcome) -> Path:
    """The JSON the stage wrote (its main output), whatever order the outputs were written in."""
    return next((path for path in outcome.outputs if path.suffix == ".json"), outcome.outputs[0])


def _shown_path(path: Path) -> str:
    """Relative to the working folder when inside it (shorter), else as it is."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def command_setup(args: argparse.Namespace) -> int:
    summaries = envs.setup_all(quiet=False, force=args.force)
    table = Table(title="stage environments")
    for column in ("stage", "python", "key packages", "state"):
        table.add_column(column, overflow="fold")
    for summary in summaries.values():
        packages = ", ".join(f"{name} {version}" for name, version in summary.versions.items() if name != "python")
        table.add_row(summary.stage, summary.versions.get("python", "?"), packages, "unchanged" if summary.reused else "synced")
    console.print(table)
    hint = runtime.blas_hint()
    if hint:
        console.print(f"[yellow]note[/]: {hint}", highlight=False, soft_wrap=True)
    return ExitCode.OK


def command_transcribe(args: argparse.Namespace) -> int:
    return report(transcribe_all(args))


def command_run(args: argparse.Namespace) -> int:
    return report(transcribe_all(args, then_stage2=True))


def command_align_diarize(args: argparse.Namespace) -> int:
    return report(align_diarize_all(args))


def command_pack(args: argparse.Namespace) -> int:
    destination = pack.create_pack(
        Path(args.transcript),
        Path(args.output) if args.output else None,
        include_audio=not args.no_audio,
        audio=Path(args.audio) if args.audio else None,
    )
    audio_note = "without audio: pass --audio to align-diarize" if args.no_audio else "with its audio"
    console.print(f"packed {destination} ({destination.stat().st_size / 1e6:.1f} MB, {audio_note})", highlight=False, soft_wrap=True)
    return ExitCode.OK


def command_demo(args: argparse.Namespace) -> int:
    envs.setup_all(quiet=False)
    sample = assets.sample_audio()
    demo_args = build_parser().parse_args(
        [
            "run",
            str(sample),
            "--model",
            BUNDLED_MODEL,
            "--language",
            "en",
            "--word_timestamps",
            "True",
            # No CTC alignment model ships on PyPI: words keep stage 1's cross-attention times.
            "--no_align",
            "--diarize",
            "--diarize_model",
            "bundled",
            "--output_dir",
            args.output_dir,
            "--threads",
            str(args.threads),
        ]
    )
    outcomes = transcribe_all(demo_args, extra_env={"HF_HUB_OFFLINE": "1"}, then_stage2=True)  # bundled models only
    code = report(outcomes)
    if code == ExitCode.OK:
        print_result(main_output(outcomes[-1]), outcomes)
    return code


def print_result(path: Path, outcomes: Sequence[StageOutcome]) -> None:
    result = load_document(path, Result)
    for segment in result.segments:
        speaker = f"[{segment.speaker}] " if segment.speaker else ""
        print(f"[{segment.start:7.2f} -> {segment.end:7.2f}] {speaker}{segment.text.strip()}")
    # this run's times: a rerun reuses the kept result, whose provenance holds the first run's
    stage_times = ", ".join(f"{o.stage} {'reused' if o.reused else f'{o.seconds:.1f} s'}" for o in outcomes)
    console.print(
        f"{result.audio.duration:.1f} s of audio, {len(result.speakers)} speakers, model {result.model.id} ({result.model.dtype}); "
        f"{stage_times}; outputs in {path.parent}",
        highlight=False,
        soft_wrap=True,
    )


COMMANDS = {
    "setup": command_setup,
    "node": command_node,
    "transcribe": command_transcribe,
    "run": command_run,
    "align-diarize": command_align_diarize,
    "pack": command_pack,
    "demo": command_demo,
}


@dataclass
class ReceivedSignal:
    signum: int = signal.SIGINT


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[ReceivedSignal]:
    """SIGTERM (a kill, a closing session) takes Ctrl-C's path: stages stopped, summary printed, exit 128 + signal."""
    received = ReceivedSignal()

    def interrupt(signum: int, frame: FrameType | None) -> NoReturn:
        received.signum = signum
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (embedded use): signals are not ours to take
        yield received
        return
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_interrupted(outcomes: list[StageOutcome], signum: int) -> int:
    report(outcomes)
    console.print(
        f"[red]interrupted[/] ({signal.Signals(signum).name}): the running stages were stopped; "
        "rerun the same command to finish (finished stages are reused)",
        highlight=False,
        soft_wrap=True,
    )
    return 128 + signum


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with sigterm_as_interrupt() as received:
        try:
            whisperx_warnings = apply_whisperx_flags(args)  # WhisperX's flags mapped onto ours first: they are checked too
            check_usage(args)  # every combination refused before any stage starts
            for warning in [*whisperx_warnings, *usage_warnings(args)]:
                console.print(f"[yellow]warning[/]: {warning}", highlight=False, soft_wrap=True)
            return int(COMMANDS[args.command](args))
        except StageError as error:
            console.print(f"[red]error[/]: {error.message}", highlight=False, soft_wrap=True)
            return int(error.exit_code)
        except Interrupted as interrupted:
            return report_interrupted(interrupted.outcomes, received.signum)
        except KeyboardInterrupt:  # outside a run of stages (setup, pack, between steps)
            stop_running_stages()
            console.print(f"[red]interrupted[/] ({signal.Signals(received.signum).name})", highlight=False)
            return 128 + received.signum


if __name__ == "__main__":
    sys.exit(main())
