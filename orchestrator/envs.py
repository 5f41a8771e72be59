"""The two stage environments: create/sync them from their locks with uv, check them, and say when they are ready.

Each stage owns `envs/<stage>/{pyproject.toml,uv.lock}` and a venv at `envs/<stage>/.venv`. The orchestrator
never imports the heavy stacks: it only runs each env's python in a subprocess.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.errors import ExitCode, StageError

from . import runtime

STAGES = ("transcribe", "align_diarize")
STAMP_NAME = ".stagewhisper-ok.json"
STAMP_FORMAT = 1
LOG_NAME = ".setup.log"
BACKEND_ENV = "STAGEWHISPER_MLX_BACKEND"
SETUP_HINT = "run `stagewhisper setup`"
HEALTH_TIMEOUT_S = 600  # a cold disk can make the torch/whisperx import crawl; a hang must still end

# Modules each env must import, with the distribution whose version we report (None: not reported).
_HEALTH_MODULES: dict[str, tuple[tuple[str, str | None], ...]] = {
    "transcribe": (
        ("numpy", "numpy"),
        ("mlx.core", "mlx"),
        ("mlx_whisper", "mlx-whisper"),
        ("av", "av"),
        ("huggingface_hub", "huggingface-hub"),
        ("shared", "stagewhisper"),
        ("stages.transcribe", None),
    ),
    "align_diarize": (
        ("numpy", "numpy"),
        ("torch", "torch"),
        ("torchaudio", "torchaudio"),
        ("whisperx", "whisperx"),
        ("pyannote.audio", "pyannote.audio"),
        ("shared", "stagewhisper"),
        ("stages.align_diarize", None),
    ),
}
# mlx needs numpy 2; whisperx 3.3.1 / pyannote.audio 3.3.2 need numpy 1: the reason there are two envs.
NUMPY_MAJOR = {"transcribe": 2, "align_diarize": 1}

_HEALTH_MARK = "STAGEWHISPER_HEALTH "
# Runs inside the stage env. Prints one marked JSON line last, so chatty imports can't corrupt it.
_HEALTH_SCRIPT = f"""
import importlib, json, platform, sys
from importlib import metadata
result = {{"versions": {{"python": platform.python_version()}}}}
for module, dist in json.loads(sys.argv[1]):
    try:
        importlib.import_module(module)
    except Exception as exc:
        result = {{"failed": module, "error": type(exc).__name__ + ": " + str(exc)}}
        break
    if dist:
        try:
            result["versions"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            result["versions"][dist] = "unknown"
print({_HEALTH_MARK!r} + json.dumps(result), flush=True)
"""

Progress = Callable[[str], None]


@dataclass(frozen=True)
class EnvSummary:
    """What `setup` did for one stage; `versions` is what the CLI shows as a table."""

    stage: str
    python: Path
    versions: dict[str, str] = field(default_factory=dict)
    extra: str | None = None
    reused: bool = False  # True: the stamp matched, nothing was synced or re-checked
    log: Path | None = None


# ---------------------------------------------------------------- layout


def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")


def env_dir(stage: str) -> Path:
    _check_stage(stage)
    return repo_root() / "envs" / stage


def venv_dir(stage: str) -> Path:
    return env_dir(stage) / ".venv"


def env_python(stage: str) -> Path:
    # Not resolved: the symlink's location is what makes python use the venv.
    return venv_dir(stage) / "bin" / "python"


def stamp_path(stage: str) -> Path:
    # Inside the venv, so deleting/recreating the venv drops the stamp with it.
    return venv_dir(stage) / STAMP_NAME


def log_path(stage: str) -> Path:
    return env_dir(stage) / LOG_NAME


# ---------------------------------------------------------------- sync


def mlx_extra(stage: str, system: str | None = None) -> str | None:
    """The lock extra to sync: MLX's backend on Linux (cpu unless the user opts into cuda); none on macOS."""
    if stage != "transcribe" or (system or platform.system()) == "Darwin":
        return None
    backend = os.environ.get(BACKEND_ENV, "cpu").strip().lower() or "cpu"
    if backend not in ("cpu", "cuda"):
        raise StageError(ExitCode.USAGE, f"{BACKEND_ENV} must be 'cpu' or 'cuda' (got {backend!r})")
    return backend


def uv_command() -> list[str]:
    """How to run uv: the binary on PATH, else the `uv` package of the orchestrator's python."""
    found = shutil.which("uv")
    if found:
        return [found]
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    raise StageError(
        ExitCode.ENV_BROKEN,
        "uv is not installed: install it (`pip install uv`, "
        "or see https://docs.astral.sh/uv/getting-started/installation/), then run `stagewhisper setup`",
    )


def _uv_environment(stage: str) -> dict[str, str]:
    env = dict(os.environ)
    # Both envs need Python 3.11 exactly; let uv fetch one if the machine lacks it, unless the user says otherwise.
    env.setdefault("UV_PYTHON_DOWNLOADS", "automatic")
    # Pin the target venv: a user's UV_PROJECT_ENVIRONMENT or active venv (e.g. under `uv run`) must not redirect it.
    env["UV_PROJECT_ENVIRONMENT"] = str(venv_dir(stage))
    env.pop("VIRTUAL_ENV", None)
    env.setdefault("NO_COLOR", "1")  # a plain log file
    return env


# Bytecode compiled at setup (7 s for stage 1's env, 31 s for stage 2's on 2 cores): each stage process would otherwise
# compile what it imports on every run where .pyc files cannot be written (PYTHONDONTWRITEBYTECODE, read-only envs)
# and on the first run anywhere: 0.7 s of a 6 s stage-1 run on 300 s of audio here.
COMPILE_BYTECODE = "--compile-bytecode"
OUR_PACKAGES = ("shared", "stages")  # editable installs: uv leaves them to the interpreter


def sync_command(stage: str) -> list[str]:
    command = [*uv_command(), "sync", "--locked", COMPILE_BYTECODE, "--project", str(env_dir(stage))]
    extra = mlx_extra(stage)
    if extra:
        command += ["--extra", extra]
    return command


def sync_env(stage: str, progress: Progress | None = None) -> Path:
    """`uv sync --locked` one stage env, streaming uv's output to envs/<stage>/.setup.log; returns the log path."""
    command = sync_command(stage)
    log = log_path(stage)
    last = ""
    with log.open("w", encoding="utf-8") as out:
        out.write("$ " + " ".join(command) + "\n")
        out.flush()
        try:
            proc = subprocess.Popen(
                command,
                cwd=repo_root(),
                env=_uv_environment(stage),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise StageError(ExitCode.ENV_BROKEN, f"could not start uv ({exc}): install uv, then {SETUP_HINT}") from exc
        assert proc.stdout is not None
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if line.strip():
                last = line.strip()
                if progress is not None:
                    progress(last)
        code = proc.wait()
    if code != 0:
        raise StageError(
            ExitCode.ENV_BROKEN,
            f"uv sync of the '{stage}' environment failed (exit {code}: {last[:160]}): see {log}, then {SETUP_HINT} again",
        )
    _compile_our_packages(stage)
    return log


def _compile_our_packages(stage: str) -> None:
    """Best effort: .pyc files for our own packages, by the env's python (a failure only costs speed)."""
    folders = [str(repo_root() / name) for name in OUR_PACKAGES]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run([str(env_python(stage)), "-m", "compileall", "-q", "-j", "0", *folders], capture_output=True, timeout=120)


# ---------------------------------------------------------------- health


def _broken(stage: str, why: str) -> StageError:
    return StageError(ExitCode.ENV_BROKEN, f"stage environment '{stage}' is broken ({why}): {SETUP_HINT}")


def _one_line(text: str, limit: int = 160) -> str:
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _parse_health(stage: str, proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    marked = [line for line in proc.stdout.splitlines() if line.startswith(_HEALTH_MARK)]
    if not marked:
        # No report at all: the interpreter died (e.g. a segfault in a native import) or never started.
        detail = _one_line(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "") or "no output"
        raise _broken(stage, f"its python exited with {proc.returncode} while importing: {detail}")
    report: dict[str, Any] = json.loads(marked[-1][len(_HEALTH_MARK) :])
    return report


def _check_numpy(stage: str, versions: dict[str, str]) -> None:
    want = NUMPY_MAJOR[stage]
    have = versions.get("numpy", "")
    if have.split(".")[0] != str(want):
        raise _broken(stage, f"numpy {have or 'missing'} but this stage needs numpy {want}.x")


def health_check(stage: str) -> dict[str, str]:
    """Import the stage's key packages in its own python; return their versions (python, numpy, ...)."""
    python = env_python(stage)
    if not python.exists():
        raise _broken(stage, f"{python} does not exist")
    modules = [[module, dist] for module, dist in _HEALTH_MODULES[stage]]
    try:
        proc = subprocess.run(
            [str(python), "-c", _HEALTH_SCRIPT, json.dumps(modules)],
            # Not the repo root: `-c` puts the cwd on sys.path, which would hide a missing editable install.
            cwd=env_dir(stage),
            env=runtime.stage_environment(stage, threads=1),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=HEALTH_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise _broken(stage, f"importing its packages took over {HEALTH_TIMEOUT_S} s") from None
    except OSError as exc:
        raise _broken(stage, f"cannot run {python}: {exc}") from exc
    report = _parse_health(stage, proc)
    if "failed" in report:
        raise _broken(stage, f"`import {report['failed']}` failed: {_one_line(report['error'])}")
    versions: dict[str, str] = report["versions"]
    _check_numpy(stage, versions)
    return versions


# ---------------------------------------------------------------- stamp


def inputs_digest(stage: str) -> str:
    """Hash of everything that defines the env's contents; any edit means a re-sync."""
    digest = hashlib.sha256(f"format={STAMP_FORMAT}\n".encode())
    root = repo_root()
    for path in (env_dir(stage) / "pyproject.toml", env_dir(stage) / "uv.lock", root / "pyproject.toml"):
        digest.update(f"{path.relative_to(root)}\n".encode())
        digest.update(path.read_bytes() if path.exists() else b"<missing>")
    return digest.hexdigest()


def read_stamp(stage: str) -> dict[str, Any] | None:
    try:
        stamp = json.loads(stamp_path(stage).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def _write_stamp(stage: str, extra: str | None, versions: dict[str, str]) -> None:
    stamp = {
        "format": STAMP_FORMAT,
        "inputs": inputs_digest(stage),
        "extra": extra,
        "versions": versions,
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = stamp_path(stage).with_suffix(".tmp")
    tmp.write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")
    tmp.replace(stamp_path(stage))  # atomic: a crash never leaves a half stamp that looks valid


def _python_ok(python: Path) -> bool:
    return python.is_file() and os.access(python, os.X_OK)


def _stamp_current(stage: str, extra: str | None) -> dict[str, Any] | None:
    """The stamp, if it vouches for the env as it is now defined; else None."""
    stamp = read_stamp(stage)
    if not stamp or not _python_ok(env_python(stage)):
        return None
    if stamp.get("inputs") != inputs_digest(stage) or stamp.get("extra") != extra:
        return None
    return stamp if isinstance(stamp.get("versions"), dict) else None


# ---------------------------------------------------------------- setup


def setup_env(stage: str, force: bool = False, progress: Progress | None = None) -> EnvSummary:
    """Sync and check one env, or reuse it untouched when its stamp still matches (the quick path)."""
    extra = mlx_extra(stage)
    stamp = None if force else _stamp_current(stage, extra)
    if stamp is not None:
        return EnvSummary(stage, env_python(stage), dict(stamp["versions"]), extra, reused=True)
    # Drop the old stamp first: an interrupted or failed setup must leave the env marked not ready.
    stamp_path(stage).unlink(missing_ok=True)
    log = sync_env(stage, progress)
    if progress is not None:
        progress("checking imports…")
    versions = health_check(stage)
    _write_stamp(stage, extra, versions)
    return EnvSummary(stage, env_python(stage), versions, extra, reused=False, log=log)


@contextlib.contextmanager
def _status(stage: str, quiet: bool) -> Iterator[Progress | None]:
    """A rich spinner showing uv's latest line; nothing at all when quiet (rich is not even imported)."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True)
    with console.status(f"[bold]{stage}[/]: checking…") as status:
        yield lambda line: status.update(f"[bold]{stage}[/]: {escape(line[:100])}")


def _report(summary: EnvSummary, quiet: bool) -> None:
    if quiet:
        return
    from rich.console import Console

    state = "up to date" if summary.reused else "synced and checked"
    numpy = summary.versions.get("numpy", "?")
    Console(stderr=True).print(f"[green]✓[/] {summary.stage}: {state} (python {summary.versions.get('python', '?')}, numpy {numpy})")


def setup_all(quiet: bool = False, force: bool = False) -> dict[str, EnvSummary]:
    """Make both stage envs ready; quick (< 2 s, no uv, no imports) when nothing changed since the last run."""
    summaries: dict[str, EnvSummary] = {}
    for stage in STAGES:
        with _status(stage, quiet) as progress:
            summaries[stage] = setup_env(stage, force=force, progress=progress)
        _report(summaries[stage], quiet)
    return summaries


def ensure_ready(stage: str) -> Path:
    """Cheap pre-run check (no subprocess): the env's python runs and setup vouched for the current locks."""
    python = env_python(stage)
    stamp = read_stamp(stage)
    why = None
    if not python.exists():
        why = f"{python} does not exist"
    elif not _python_ok(python):
        why = f"{python} is not an executable file"
    elif stamp is None:
        why = "setup has not completed for it"
    elif stamp.get("inputs") != inputs_digest(stage):
        why = "its pyproject.toml or uv.lock changed since the last setup"
    if why is not None:
        raise StageError(ExitCode.ENV_BROKEN, f"stage environment '{stage}' is missing or broken ({why}): {SETUP_HINT}")
    return python
