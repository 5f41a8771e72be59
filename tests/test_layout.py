"""Architecture rules that code review alone would let slip."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = {"mlx", "mlx_whisper", "torch", "torchaudio", "whisperx", "pyannote", "numpy", "av", "ctranslate2", "faster_whisper"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", ["orchestrator", "shared"])
def test_light_packages_never_import_heavy_stacks(package: str) -> None:
    offenders = {str(path.relative_to(REPO)): sorted(imported_roots(path) & HEAVY) for path in (REPO / package).rglob("*.py")}
    assert {path: names for path, names in offenders.items() if names} == {}


def test_orchestrator_knows_stages_only_as_commands() -> None:
    for path in (REPO / "orchestrator").rglob("*.py"):
        assert "stages" not in imported_roots(path), path


PLATFORM_CRITICAL = {
    "transcribe": ["numpy", "mlx", "mlx-whisper", "av", "ctranslate2", "pydantic-core"],
    "align_diarize": ["numpy", "torch", "torchaudio", "ctranslate2", "pydantic-core"],
}
PLATFORM_ONLY = {"transcribe": {"mlx-metal": "macosx", "mlx-cpu": "manylinux"}}


def _locked_wheels(stage: str) -> dict[str, list[str]]:
    import tomllib

    lock = tomllib.loads((REPO / "envs" / stage / "uv.lock").read_text(encoding="utf-8"))
    return {package["name"]: [wheel["url"].rsplit("/", 1)[-1] for wheel in package.get("wheels", [])] for package in lock["package"]}


@pytest.mark.parametrize("stage", sorted(PLATFORM_CRITICAL))
def test_locks_serve_macos_arm64_and_linux_x86_64(stage: str) -> None:
    wheels = _locked_wheels(stage)
    for name in PLATFORM_CRITICAL[stage]:
        names = wheels[name]
        pure = any(wheel.endswith("-none-any.whl") for wheel in names)
        assert pure or any("macosx" in wheel and "arm64" in wheel for wheel in names), f"{stage}: {name} has no macOS arm64 wheel"
        assert pure or any("linux" in wheel and "x86_64" in wheel for wheel in names), f"{stage}: {name} has no Linux x86-64 wheel"
    for name, platform in PLATFORM_ONLY.get(stage, {}).items():
        assert wheels[name] and all(platform in wheel for wheel in wheels[name]), f"{stage}: {name} should be {platform}-only"
