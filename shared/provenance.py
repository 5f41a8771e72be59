"""What a stage records about how it ran: versions, platform, settings. Stdlib only."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata

from .contract import Provenance

TOOL_DISTRIBUTION = "stagewhisper"

# Settings the orchestrator hands a stage that can change its speed or output; never secrets.
RECORDED_ENV_VARS = (
    "STAGEWHISPER_THREADS",
    "STAGEWHISPER_BLAS_CHOICE",
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "TOKENIZERS_PARALLELISM",
    "PYTORCH_ENABLE_MPS_FALLBACK",
    "LD_PRELOAD",
    "HF_HUB_OFFLINE",
)


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


def recorded_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    settings = {key: os.environ[key] for key in RECORDED_ENV_VARS if key in os.environ}
    settings.update(extra or {})
    return settings


def build_provenance(
    stage: str, packages: list[str], started_at: str, wall_time_s: float, device: str, extra_env: dict[str, str] | None = None
) -> Provenance:
    return Provenance(
        stage=stage,  # type: ignore[arg-type]
        tool_version=package_versions([TOOL_DISTRIBUTION]).get(TOOL_DISTRIBUTION, "unknown"),
        started_at=started_at,
        wall_time_s=round(wall_time_s, 3),
        python=sys.version.split()[0],
        platform=f"{platform.system()}-{platform.machine()}",
        device=device,
        packages=package_versions(packages),
        environment=recorded_environment(extra_env),
    )
