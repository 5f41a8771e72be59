"""The environment each stage subprocess runs with, and the part of it worth recording in provenance.

Pure stdlib and cheap: the orchestrator calls this before every stage run (never imports the stacks).
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from shared.errors import ExitCode, StageError
from shared.provenance import THREAD_ENV_VARS

FIXED_SETTINGS: dict[str, str] = {
    # Tokenizers forks a pool that deadlocks/warns under our subprocess model; the gain is nil here.
    "TOKENIZERS_PARALLELISM": "false",
    # Ops MPS lacks fall back to CPU instead of raising (macOS torch in stage 2).
    "PYTORCH_ENABLE_MPS_FALLBACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    # Stage progress lines must reach the orchestrator as they happen, not at exit.
    "PYTHONUNBUFFERED": "1",
}

BLAS_ENV = "STAGEWHISPER_BLAS"
BLAS_CHOICE_ENV = "STAGEWHISPER_BLAS_CHOICE"
REFERENCE_BLAS = "reference (install libopenblas0-pthread for ~40x faster CPU matmul)"

# Debian/Ubuntu OpenBLAS packages put a drop-in libblas.so.3 here; pthread first (no OpenMP runtime clash).
_OPENBLAS_FLAVOURS = ("openblas-pthread", "openblas-openmp", "openblas")
_MULTIARCH = ("x86_64-linux-gnu", "aarch64-linux-gnu")

# OpenBLAS picks its kernels by CPU model when it loads; a model newer than the library (Debian 12's 0.3.21 on an Intel
# Xeon with AMX here) gets its SSE3 fallback "Prescott", and MLX's matmul ran 3.3x slower (59 vs 195 GFLOP/s). Then we
# name the kernel family the CPU's flags support, best first; the user's own OPENBLAS_CORETYPE always wins.
CORETYPE_ENV = "OPENBLAS_CORETYPE"
# OpenBLAS's worker threads spin for 2**28 cycles after each call before they sleep; MLX's CPU stream thread, numpy's
# own OpenBLAS and our numpy threads then wait behind them (stage 1, MLX, tiny.en, 300 s, 2 cores: 17.5 s -> 12.5 s
# with 2**4). The user's own setting wins.
SPIN_ENV, SPIN_SETTING = "OPENBLAS_THREAD_TIMEOUT", "4"
_OPENBLAS_KERNELS = (
    ("SkylakeX", frozenset({"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"})),
    ("Haswell", frozenset({"avx2", "fma"})),
)
_CAPABLE_CORES = frozenset({"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", "neoversen1", "neoversen2", "neoversev1"})

# OpenMP (torch's, CTranslate2's) and MKL threads spin-wait after each parallel region by default; with anything else
# on the cores (the other stage under `run --jobs`, another program) they burn the time the work needed: an 8 s clip
# took 5.5-47.9 s under load with the defaults and 4.8-5.6 s with these. The user's own settings win.
IDLE_WAIT_SETTINGS: dict[str, str] = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}

# A parent python's path settings would leak numpy 2 into the numpy<2 env (or the reverse).
_DROPPED = ("PYTHONPATH", "PYTHONHOME")


def _system(system: str | None) -> str:
    return system or platform.system()


def _sysctl_int(name: str) -> int | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5, check=True)
        value = int(out.stdout.strip())
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return value if value > 0 else None


@functools.cache
def performance_cores(system: str | None = None) -> int:
    """Cores worth one thread each: P-cores on Apple silicon (E-cores slow the slowest thread down),
    the CPUs this process may run on under Linux (respects taskset/cgroup cpusets)."""
    system = _system(system)
    if system == "Darwin":
        return _sysctl_int("hw.perflevel0.physicalcpu") or _sysctl_int("hw.physicalcpu") or os.cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def _thread_count(threads: int | None, base: Mapping[str, str]) -> int:
    if threads is None and base.get("STAGEWHISPER_THREADS", "").strip():
        try:
            threads = int(base["STAGEWHISPER_THREADS"])
        except ValueError:
            raise StageError(ExitCode.USAGE, "STAGEWHISPER_THREADS must be a whole number") from None
    if threads is None:
        return performance_cores()
    if threads < 1:
        raise StageError(ExitCode.USAGE, f"--threads must be at least 1 (got {threads})")
    return threads


def blas_candidates() -> list[Path]:
    """Where Debian's OpenBLAS packages install their libblas.so.3, best flavour first."""
    arches = dict.fromkeys([f"{platform.machine()}-linux-gnu", *_MULTIARCH])
    return [Path("/usr/lib") / arch / flavour / "libblas.so.3" for flavour in _OPENBLAS_FLAVOURS for arch in arches]


def find_openblas(candidates: Iterable[Path] | None = None) -> Path | None:
    """First existing OpenBLAS libblas.so.3 (a few stat calls: no dpkg on the hot path)."""
    for path in blas_candidates() if candidates is None else candidates:
        if Path(path).is_file():
            return Path(path)
    return None


def _choose_blas(stage: str, base: Mapping[str, str], system: str, candidates: Sequence[Path] | None) -> tuple[str, Path | None]:
    """(choice to record, library to preload). Only MLX on Linux needs help: torch bundles its own BLAS."""
    if stage != "transcribe":
        return "torch-bundled", None
    if system == "Darwin":
        return "accelerate", None
    wanted = base.get(BLAS_ENV, "auto").strip() or "auto"
    if wanted == "reference":
        return REFERENCE_BLAS, None
    if wanted in ("auto", "openblas"):
        found = find_openblas(candidates)
        if found is not None:
            return f"openblas:{found}", found
        if wanted == "openblas":
            raise StageError(
                ExitCode.ENV_BROKEN,
                f"{BLAS_ENV}=openblas but no OpenBLAS libblas.so.3 was found: `sudo apt-get install libopenblas0-pthread`",
            )
        return REFERENCE_BLAS, None
    path = Path(wanted).expanduser()
    if not path.is_file():
        raise StageError(ExitCode.USAGE, f"{BLAS_ENV}={wanted!r} is neither auto|openblas|reference nor an existing library file")
    return f"custom:{path}", path


@functools.cache
def openblas_core(library: Path) -> str | None:
    """The kernel family this OpenBLAS picks on this CPU (its openblas_get_corename); None if it is not OpenBLAS."""
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # the probe needs no thread pool
    try:
        get_corename = ctypes.CDLL(str(library)).openblas_get_corename
    except (OSError, AttributeError):
        return None
    finally:
        os.environ.pop("OPENBLAS_NUM_THREADS") if saved is None else os.environ.update(OPENBLAS_NUM_THREADS=saved)
    get_corename.restype = ctypes.c_char_p
    name = get_corename()
    return name.decode().strip() if name else None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The first CPU's feature flags on Linux (x86 "flags", Arm "Features"); empty where unreadable."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    match = re.search(r"^(?:flags|Features)\s*:(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def openblas_coretype(detected: str | None, flags: frozenset[str]) -> str | None:
    """The kernel family to force when OpenBLAS fell back to generic kernels on a CPU that has better ones."""
    if detected is None or detected.lower() in _CAPABLE_CORES:
        return None
    return next((name for name, needed in _OPENBLAS_KERNELS if needed <= flags), None)


def _with_preload(existing: str | None, library: Path) -> str:
    """Our library first; keep whatever the user already preloads (LD_PRELOAD is ':'/space separated)."""
    others = [p for p in re.split(r"[:\s]+", existing or "") if p and p != str(library)]
    return ":".join([str(library), *others])


def stage_environment(
    stage: str,
    threads: int | None = None,
    base: Mapping[str, str] | None = None,
    *,
    system: str | None = None,
    blas_candidates: Sequence[Path] | None = None,
) -> dict[str, str]:
    """Full environment for a stage subprocess: a copy of `base` (default os.environ) plus our settings.

    `system` and `blas_candidates` exist for tests (simulate another OS / library locations).
    """
    env = dict(os.environ if base is None else base)
    for key in _DROPPED:
        env.pop(key, None)
    system = _system(system)
    count = str(_thread_count(threads, env))
    env.update({key: count for key in THREAD_ENV_VARS})
    env.update(FIXED_SETTINGS)
    for key, value in IDLE_WAIT_SETTINGS.items():
        env.setdefault(key, value)
    choice, library = _choose_blas(stage, env, system, blas_candidates)
    env[BLAS_CHOICE_ENV] = choice
    if library is not None:
        # mlx-cpu links a bundled reference BLAS by a mangled soname; preloading interposes OpenBLAS symbols.
        env["LD_PRELOAD"] = _with_preload(env.get("LD_PRELOAD"), library)
        env.setdefault(SPIN_ENV, SPIN_SETTING)
        detected = None if CORETYPE_ENV in env else openblas_core(library)
        if core := openblas_coretype(detected, cpu_flags()):
            env[CORETYPE_ENV] = core
            env[BLAS_CHOICE_ENV] = f"{choice} (kernels {core}: it picked {detected} for this CPU)"
    return env


def blas_hint(
    base: Mapping[str, str] | None = None,
    *,
    system: str | None = None,
    candidates: Sequence[Path] | None = None,
) -> str | None:
    """One line for `stagewhisper setup` to print when MLX would run on the slow reference BLAS; else None."""
    base = os.environ if base is None else base
    if _system(system) != "Linux" or base.get(BLAS_ENV, "auto").strip() not in ("", "auto"):
        return None
    if find_openblas(candidates) is not None:
        return None
    # Only MLX on the CPU needs it: CTranslate2 (auto's choice on x86 for bundled-tiny.en and faster-whisper models)
    # brings its own BLAS, and users of those read this note as a problem they have.
    return (
        "MLX on the CPU (--backend mlx, or a model without CTranslate2 weights such as the default MLX one) would use "
        "its single-threaded reference BLAS: `sudo apt-get install libopenblas0-pthread` makes it ~40x faster; "
        "the CTranslate2 backend does not need it"
    )
