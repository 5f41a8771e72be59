"""`stagewhisper`: set up the stage environments and run the stages, each in its own process and env."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.contract import Transcript
from shared.errors import ExitCode, StageError
from shared.flags import BUNDLED_MODEL, THREADS_FLAG, TRANSCRIBE_FLAGS, WRITER_FLAGS, add_flags, to_argv
from shared.io import TRANSCRIPT_SUFFIX, load_document
from shared.progress import ProgressEvent

from . import assets, envs, runtime
from .stage_runner import StageOutcome, run_stage

console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stagewhisper", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    setup = commands.add_parser("setup", help="create/sync both stage environments from their locks and check them")
    setup.add_argument("--force", action="store_true", help="sync and re-check even if nothing changed")

    for name, help_text in (
        ("transcribe", "stage 1 only: audio -> <name>.transcript.json (+ subtitles)"),
        ("run", "the whole pipeline on each file"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("audio", nargs="+", help="audio or video files")
        _add_run_flags(command)

    demo = commands.add_parser("demo", help="the pipeline on pyannote's sample call with bundled models, offline")
    demo.add_argument("--output_dir", "-o", default="stagewhisper-demo", help="folder for the outputs")
    add_flags(demo, (THREADS_FLAG,))
    return parser


def _add_run_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--output_dir", "-o", default=".", help="folder for the outputs")
    add_flags(command.add_argument_group("output"), WRITER_FLAGS)
    add_flags(command.add_argument_group("stage 1 (transcribe)"), TRANSCRIBE_FLAGS)
    add_flags(command, (THREADS_FLAG,))


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


def transcribe_all(args: argparse.Namespace, extra_env: dict[str, str] | None = None) -> list[StageOutcome]:
    output_dir = Path(args.output_dir)
    stage_argv = to_argv(args, TRANSCRIBE_FLAGS + WRITER_FLAGS)
    if "--output_format" not in stage_argv:  # the stage's own default is json only
        stage_argv += ["--output_format", args.output_format]
    outcomes = []
    with _progress() as progress:
        for audio, name in zip(args.audio, output_names(args.audio), strict=True):
            task = progress.add_task(f"transcribe {Path(audio).name}", total=None)

            def show(event: ProgressEvent, task: int = task) -> None:
                if event.kind == "progress":
                    progress.update(task, total=event.total, completed=event.done)

            argv = [audio, "--output_dir", str(output_dir), "--output_name", name, *stage_argv]
            outcome = run_stage("transcribe", audio, argv, output_dir, args.threads or None, extra_env, on_event=show)
            progress.update(task, total=1, completed=1, description=_task_label(outcome))
            outcomes.append(outcome)
    return outcomes


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
    for column in ("file", "stage", "status", "time", "output / error"):
        table.add_column(column, overflow="fold")
    for outcome in outcomes:
        status = "[green]ok[/]" if outcome.ok else f"[red]exit {outcome.exit_code}[/]"
        detail = str(outcome.outputs[0]) if outcome.ok and outcome.outputs else outcome.error
        table.add_row(outcome.audio, outcome.stage, status, f"{outcome.seconds:.1f}s", detail)
    console.print(table)
    failures = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failures:
        console.print(f"[red]error[/]: {outcome.audio}: {outcome.error} (log: {outcome.log_path})", highlight=False, soft_wrap=True)
    return failures[0].exit_code if failures else ExitCode.OK


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
    outcomes = transcribe_all(args)
    # Stage 2 (alignment + diarization) plugs in here once it lands; stage 1's outputs are final until then.
    return report(outcomes)


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
            "--output_dir",
            args.output_dir,
            "--threads",
            str(args.threads),
        ]
    )
    outcomes = transcribe_all(demo_args, extra_env={"HF_HUB_OFFLINE": "1"})  # bundled models only
    code = report(outcomes)
    if code == ExitCode.OK:
        print_transcript(next(path for path in outcomes[0].outputs if path.name.endswith(TRANSCRIPT_SUFFIX)))
    return code


def print_transcript(path: Path) -> None:
    transcript = load_document(path, Transcript)
    for segment in transcript.segments:
        speaker = f"[{segment.speaker}] " if segment.speaker else ""
        print(f"[{segment.start:7.2f} -> {segment.end:7.2f}] {speaker}{segment.text.strip()}")
    console.print(
        f"{transcript.audio.duration:.1f} s of audio, model {transcript.model.id} ({transcript.model.dtype}), "
        f"stage 1 took {transcript.provenance.wall_time_s:.1f} s on {transcript.provenance.device}; outputs in {path.parent}",
        highlight=False,
    )


COMMANDS = {"setup": command_setup, "transcribe": command_transcribe, "run": command_run, "demo": command_demo}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args))
    except StageError as error:
        console.print(f"[red]error[/]: {error.message}", highlight=False, soft_wrap=True)
        return int(error.exit_code)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
