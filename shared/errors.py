"""Exit codes every stagewhisper process uses, and the one error type that carries them.

The table is documented in the README; keep the two in step.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1  # unexpected error: see the log
    USAGE = 2  # bad command line (argparse's own code)
    BAD_AUDIO = 3  # audio missing, empty or not decodable
    BAD_DOCUMENT = 4  # JSON missing, malformed, of another schema version, or inconsistent
    MODEL_UNAVAILABLE = 5  # model not found, not cached while offline, or not loadable
    ENV_BROKEN = 6  # a stage environment is missing or broken: run `stagewhisper setup`
    OUTPUT_UNWRITABLE = 7  # output directory not writable or disk full
    STAGE_CRASHED = 8  # a stage process died (signal or unexpected exit)
    INTERRUPTED = 130  # Ctrl-C (128 + SIGINT; SIGTERM gives 143): the running stages were stopped


class StageError(Exception):
    """An error the user can act on: one line, and the exit code that goes with it."""

    def __init__(self, exit_code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message

    def __str__(self) -> str:
        return self.message
