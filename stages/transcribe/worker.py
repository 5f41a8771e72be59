"""`python -m stages.transcribe.worker`: stage 1 as a long-lived worker (stages.common.worker) that imports its
backend once and keeps the model loaded across files. Threads and device come from the environment."""

from __future__ import annotations

from stages.common.worker import StageCommands, serve

from .cli import STAGE, apply_device, build_parser, run


def main() -> int:
    apply_device()
    commands = StageCommands(STAGE, parse=build_parser().parse_args, run=run, label=lambda args: args.audio)
    return serve(commands)


if __name__ == "__main__":
    raise SystemExit(main())
