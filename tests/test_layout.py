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
