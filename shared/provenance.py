"""What a stage records about how it ran: versions, platform, settings. Stdlib only."""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata

from .contract import Provenance

TOOL_DISTRIBUTION = "stagewhisper"

# Every BLAS/OpenMP runtime reads its own variable; set them all so no library oversubscribes the cores.
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "STAGEWHISPER_THREADS",
)
# Settings a stage runs with that can change its speed or output (plus any STAGEWHISPER_* one).
RECORDED_ENV_VARS = (
    *THREAD_ENV_VARS,
    "TOKENIZERS_PARALLELISM",
    "PYTORCH_ENABLE_MPS_FALLBACK",
    "HF_HUB_DISABLE_TELEMETRY",
    "PYTHONUNBUFFERED",
    "LD_PRELOAD",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_THREAD_TIMEOUT",
    "OMP_WAIT_POLICY",
    "KMP_BLOCKTIME",
    "CT2_USE_MKL",
    "HF_HUB_OFFLINE",
    "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",
    "CUDA_VISIBLE_DEVICES",
)
# Names that may hold secrets; TOKENIZERS_PARALLELISM is the one harmless "TOKEN" we set ourselves.
_SECRET_NAME = re.compile(r"TOKEN(?!IZERS_PARALLELISM)|SECRET|PASSW|CREDENTIAL|API_?KEY|AUTH", re.IGNORECASE)
_SECRET_VALUE = re.compile(r"\bhf_[A-Za-z0-9]{20,}")


def recorded_settings(env: Mapping[str, str]) -> dict[str, str]:
    """The settings worth writing into provenance and logs; never a secret."""
    keys = [*RECORDED_ENV_VARS, *sorted(key for key in env if key.startswith("STAGEWHISPER_"))]
    return {key: env[key] for key in keys if key in env and not _SECRET_NAME.search(key) and not _SECRET_VALUE.search(env[key])}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def package_versions(names: list[str]) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def build_provenance(
    stage: str,
    packages: list[str],
    started_at: str,
    wall_time_s: float,
    device: str,
    extra_env: dict[str, str] | None = None,
    timings: dict[str, float] | None = None,
) -> Provenance:
    return Provenance(
        stage=stage,  # type: ignore[arg-type]
        tool_version=package_versions([TOOL_DISTRIBUTION]).get(TOOL_DISTRIBUTION, "unknown"),
        started_at=started_at,
        wall_time_s=round(wall_time_s, 3),
        timings={step: round(seconds, 3) for step, seconds in (timings or {}).items()},
        peak_rss_mib=peak_rss_mib(),
        python=sys.version.split()[0],
        platform=f"{platform.system()}-{platform.machine()}",
        device=device,
        packages=package_versions(packages),
        environment={**recorded_settings(os.environ), **(extra_env or {})},
    )
