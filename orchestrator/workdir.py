"""Stage artifacts kept by content, so that a rerun redoes only what changed.

Each stage's validated output JSON is kept in `OUTPUT_DIR/.stagewhisper/cache/` under a key made of what decides
it: for stage 1, the audio's sha256 and the flags that change the transcript (model, language, decoding...); for
stage 2, the sha256 of the transcript it read (less the audio's paths) and its own flags. A rerun finds the artifact, validates it
and writes the user's outputs from it instead of running the stage; `--force` ignores it. Output-only flags
(formats, line widths) are not in the key: outputs are rendered again from the artifact. Artifacts are written
to a unique temp name and renamed, so a killed run or two runs at once never leave a half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from shared.contract import SCHEMA_VERSION, Document, Result, Transcript
from shared.errors import StageError
from shared.io import file_sha256 as shared_file_sha256
from shared.io import load_document, write_text_atomic

CACHE_FOLDER = Path(".stagewhisper") / "cache"
AUDIO_PLACE_FIELDS = ("path", "resolved_path")  # where the audio lies, not what it is


@dataclass(frozen=True)
class ArtifactKey:
    stage: str
    content_sha256: str  # stage 1: the audio's; stage 2: the transcript JSON's
    params_sha256: str

    def file_name(self) -> str:
        suffix = ".transcript.json" if self.stage == "transcribe" else ".result.json"
        return f"{self.stage}-{self.content_sha256[:16]}-{self.params_sha256[:16]}{suffix}"


def file_sha256(path: Path) -> str | None:
    """The file's sha256, or None when it cannot be read (the stage then reports why, in its own words)."""
    try:
        return shared_file_sha256(path)
    except OSError:
        return None


def transcript_sha256(path: Path) -> str | None:
    """A transcript's identity for stage 2's kept result: its JSON less where the audio lies (the path as typed and
    the resolved path). Stage 2's words and speakers depend on the audio's bytes (its sha256 stays in), not on the
    path: `./in/x.flac` and `in/x.flac` share one kept result. None when the file cannot be read."""
    try:
        data = json.loads(path.read_bytes())
    except OSError:
        return None
    except (ValueError, RecursionError):  # not JSON: stage 2 will say so; key it by its bytes meanwhile
        return file_sha256(path)
    if isinstance(data, dict) and isinstance(data.get("audio"), dict):
        data["audio"] = {key: value for key, value in data["audio"].items() if key not in AUDIO_PLACE_FIELDS}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def params_sha256(stage: str, argv: list[str], model: str | None = None) -> str:
    """Hash of the result-deciding flags, the tool and schema versions, and a local model folder's identity."""
    identity: dict[str, object] = {"stage": stage, "argv": argv, "schema": SCHEMA_VERSION, "tool": _tool_version()}
    if model and Path(model).expanduser().exists():  # a local folder: its place and last change, not just its name
        folder = Path(model).expanduser().resolve()
        identity["model_folder"] = [str(folder), folder.stat().st_mtime_ns]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _tool_version() -> str:
    try:
        return version("stagewhisper")
    except PackageNotFoundError:
        return "unknown"


def artifact_path(output_dir: Path, key: ArtifactKey) -> Path:
    return output_dir / CACHE_FOLDER / key.file_name()


def load_artifact(output_dir: Path, key: ArtifactKey) -> Document | None:
    """The kept artifact if it exists and validates (a corrupt one is ignored and will be replaced)."""
    path = artifact_path(output_dir, key)
    if not path.is_file():
        return None
    kind: type[Document] = Transcript if key.stage == "transcribe" else Result
    try:
        return load_document(path, kind)
    except StageError:
        return None


def keep_artifact(output_dir: Path, key: ArtifactKey, produced: Path) -> None:
    """Copy a stage's fresh output JSON into the cache: temp name, then rename. Best effort: a cache is optional."""
    with contextlib.suppress(OSError, StageError):
        write_text_atomic(artifact_path(output_dir, key), produced.read_text(encoding="utf-8"))
