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


# --- the import graph of our own code -------------------------------------------------------------------------------
OWN_PACKAGES = ("stages", "shared", "orchestrator")


def own_modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of ours (a package is its __init__.py)."""
    modules = {}
    for package in OWN_PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(name: str, path: Path) -> set[str]:
    """Every dotted name a module imports, at module level, in functions or under TYPE_CHECKING: relative imports
    resolved, and `from X import y` counted as both X and X.y (y may be a submodule)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names |= {f"{base}.{alias.name}" for alias in node.names}
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (a dotted name counts as the longest module of ours it starts with)."""
    modules = own_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(name, path):
            parts = imported.split(".")
            for end in range(len(parts), 0, -1):
                if ".".join(parts[:end]) in modules:
                    targets.add(".".join(parts[:end]))
                    break
        graph[name] = targets - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_circles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_relative_and_lazy_imports() -> None:
    graph = import_graph()
    assert "stages.transcribe.cli" in graph["stages.transcribe.__main__"]  # from .cli import main
    assert any(target.startswith("stages.transcribe.pipeline") for target in graph["stages.transcribe.cli"])  # inside run()


def test_shared_imports_nothing_from_stages_or_orchestrator() -> None:
    graph = import_graph()
    offenders = {
        name: sorted(target for target in targets if target.split(".")[0] != "shared")
        for name, targets in graph.items()
        if name.split(".")[0] == "shared"
    }
    assert {name: targets for name, targets in offenders.items() if targets} == {}


# Stage 1's parts, each importing only those after it in its path: pipeline -> backends -> models; vad stands alone.
STAGE1_MAY_IMPORT = {
    "pipeline": {"backends", "models", "vad"},
    "backends": {"models"},
    "models": set(),
    "vad": set(),
}


def test_stage1_parts_import_downward() -> None:
    prefix = "stages.transcribe."
    graph = import_graph()
    wrong = {}
    for name, targets in graph.items():
        part = name.removeprefix(prefix).split(".")[0] if name.startswith(prefix) else None
        if part not in STAGE1_MAY_IMPORT:
            continue
        others = {t.removeprefix(prefix).split(".")[0] for t in targets if t.startswith(prefix)} - {part}
        if others - STAGE1_MAY_IMPORT[part]:
            wrong[name] = sorted(others - STAGE1_MAY_IMPORT[part])
    assert wrong == {}


def test_orchestrator_imports_no_stage_and_no_model_stack() -> None:
    forbidden = {"stages", "mlx", "mlx_whisper", "torch", "pyannote", "whisperx"}
    modules = own_modules()
    offenders = {
        name: sorted({imported.split(".")[0] for imported in imported_names(name, path)} & forbidden)
        for name, path in modules.items()
        if name.split(".")[0] == "orchestrator"
    }
    assert {name: roots for name, roots in offenders.items() if roots} == {}
