"""Ending a one-file stage process without the interpreter's teardown.

Why: once a stage's outputs are written, Python's shutdown still frees every module and object one by one: 0.5 s after
importing torch alone, 1.3 s after transformers' wav2vec2 stack (measured, 2 cores), for nothing the stage needs.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn


def exit_without_teardown(code: int) -> NoReturn:
    """Exit with CODE as `sys.exit` would, less the teardown: atexit callbacks run (library cleanups such as
    logging's), Python's and C's stdio buffers are flushed, then the process ends. With a non-daemon thread still
    running (none in the stages), it exits normally, so that the thread is waited for as usual."""
    if any(thread.is_alive() and not thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        raise SystemExit(code)
    atexit._run_exitfuncs()  # noqa: SLF001 - what Python's exit runs before its teardown
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or gone: nothing left to lose
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)  # C libraries' buffered printf, which exit() would flush
    except (OSError, AttributeError, TypeError):  # no C library handle (Windows)
        pass
    os._exit(code)
