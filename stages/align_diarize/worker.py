"""`python -m stages.align_diarize.worker`: stage 2 as a long-lived worker (stages.common.worker) that imports torch,
the alignment stack and pyannote once and keeps its models loaded across files. Threads come from the environment."""

from __future__ import annotations

from stages.common.exit import exit_without_teardown
from stages.common.worker import StageCommands, serve

from .cli import STAGE, build_parser, run


def prepare(argv: list[str]) -> None:
    """Import what jobs with these flags need and load the diarization pipeline (the alignment model depends on
    each transcript's language: the first job loads it)."""
    args = build_parser().parse_args(["<prepare>", *argv])
    if not args.no_align:
        from .alignment.model import import_alignment_stack

        import_alignment_stack(args.align_model)
    if args.diarize:
        from .cli import diarize_options
        from .diarization.pipelines import load_pipeline

        load_pipeline(diarize_options(args))


def main() -> int:
    commands = StageCommands(STAGE, parse=build_parser().parse_args, run=run, label=lambda args: args.transcript, prepare=prepare)
    return serve(commands)


if __name__ == "__main__":
    exit_without_teardown(main())  # after the last job: the orchestrator waits for this exit
