"""Reading and writing contract documents: validated on the way in, atomic on the way out."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from pydantic import BaseModel, ValidationError

from .contract import SCHEMA_MAJOR, SCHEMA_VERSION, AudioInfo, Result, Transcript
from .errors import ExitCode, StageError

DocumentT = TypeVar("DocumentT", Transcript, Result)

TRANSCRIPT_SUFFIX = ".transcript.json"  # stage 1 writes <name>.transcript.json


def load_document(path: str | os.PathLike[str], kind: type[DocumentT]) -> DocumentT:
    """Load and validate a stage document; any problem is one StageError line naming file and field."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StageError(ExitCode.BAD_DOCUMENT, f"{path}: file not found") from None
    except OSError as error:
        raise StageError(ExitCode.BAD_DOCUMENT, f"{path}: cannot read ({error.strerror})") from None
    try:
        data = json.loads(raw)
    # ValueError covers JSONDecodeError, UnicodeDecodeError and ints past Python's digit limit; RecursionError, deep nesting.
    except (ValueError, RecursionError) as error:
        raise StageError(ExitCode.BAD_DOCUMENT, f"{path}: not valid JSON ({_first_line(error)})") from None
    return parse_document(data, kind, source=str(path))


def parse_document(data: object, kind: type[DocumentT], source: str = "<document>") -> DocumentT:
    if not isinstance(data, dict):
        raise StageError(ExitCode.BAD_DOCUMENT, f"{source}: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    if not isinstance(version, str) or version.split(".")[0] != SCHEMA_MAJOR:
        raise StageError(
            ExitCode.BAD_DOCUMENT,
            f"{source}: schema_version {version!r} is not supported (this stagewhisper reads "
            f"{SCHEMA_MAJOR}.x, writes {SCHEMA_VERSION}); redo the stage that wrote it with this version",
        )
    expected_kind = kind.model_fields["kind"].default
    if data.get("kind") != expected_kind:
        raise StageError(
            ExitCode.BAD_DOCUMENT,
            f"{source}: kind: expected a {expected_kind!r} document, got {data.get('kind')!r}",
        )
    try:
        return kind.model_validate(data)
    except ValidationError as error:
        raise StageError(ExitCode.BAD_DOCUMENT, f"{source}: {describe_validation_error(error)}") from None


def describe_validation_error(error: ValidationError) -> str:
    """The first problem as 'segments[3].words[2].end: message (+N more)'."""
    problems = error.errors(include_url=False)
    first = problems[0]
    location = "".join(f"[{part}]" if isinstance(part, int) else f".{_printable(part)}" for part in first["loc"]).lstrip(".")
    message = _printable(first["msg"].removeprefix("Value error, "))
    more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{location or '<root>'}: {message}{more}"


def _printable(text: str) -> str:
    """Keys and values come from the file: escape control characters so the error stays one line."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def recorded_audio(audio: AudioInfo, transcript_path: Path) -> Path | None:
    """The audio a transcript was made from, where it can be found: the path as typed (from this folder), else the
    absolute path stage 1 read (run from another folder), else the typed path from the transcript's folder, else
    beside the transcript (moved folders). The typed path comes first: it is the one a user sees and may edit."""
    typed = Path(audio.path)
    resolved = [Path(audio.resolved_path)] if audio.resolved_path else []
    candidates = [typed, *resolved, transcript_path.parent / typed, transcript_path.parent / typed.name]
    return next((candidate for candidate in candidates if candidate.is_file()), None)


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (audio can be hours long); OSError if it cannot be read."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write via a unique temp file in the same folder, fsync, then rename: never a partial file."""
    return write_texts_atomic([(Path(path), text)])[0]


def write_texts_atomic(files: Sequence[tuple[Path, str]]) -> list[Path]:
    """Write several files all or none: each to a temp file beside it (fsynced), then rename them in order.

    Renames need no space, so once every temp file is written the set completes; any failure before removes them all.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, text in files:
            staged.append((_stage_text(path, text), path))
    except BaseException:
        for temp_name, _ in staged:
            _remove_quietly(temp_name)
        raise
    renamed: list[Path] = []
    for temp_name, path in staged:
        try:
            os.replace(temp_name, path)
        except OSError as error:  # rare (permissions changed, a folder in the way): take back the whole set
            for leftover, _ in staged[len(renamed) :]:
                _remove_quietly(leftover)
            for done in renamed:
                _remove_quietly(str(done))
            raise _unwritable(path, error, "free space or choose another --output_dir") from None
        renamed.append(path)
    return renamed


def _stage_text(path: Path, text: str) -> str:
    """`text` in a fsynced temp file beside `path`; returns its name. A failure leaves nothing behind."""
    with _temp_beside(path, "w", "--output_dir") as (handle, temp_name):
        handle.write(text)
    return temp_name


@contextmanager
def atomic_binary_output(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """A binary handle on a unique temp file beside PATH, renamed to PATH only if the block completes."""
    path = Path(path)
    with _temp_beside(path, "w+b", "output path") as (handle, temp_name):  # readable too: zipfile may read back
        yield handle
    try:
        os.replace(temp_name, path)
    except OSError as error:
        _remove_quietly(temp_name)
        raise _unwritable(path, error, "choose another output path") from None


@contextmanager
def _temp_beside(path: Path, mode: str, where: str) -> Iterator[tuple[Any, str]]:
    """A unique temp file beside PATH and its name, fsynced when the block ends; removed on any failure."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _unwritable(path, error, f"choose another {where}") from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            # mkstemp makes the file 0600; the renamed output must get what a plain open() would (0644 under umask 022)
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            yield handle, temp_name
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        _remove_quietly(temp_name)
        raise _unwritable(path, error, f"free space or choose another {where}") from None
    except BaseException:
        _remove_quietly(temp_name)
        raise


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (os.umask sets it, racing other threads)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _unwritable(path: Path, error: OSError, what_to_do: str) -> StageError:
    return StageError(ExitCode.OUTPUT_UNWRITABLE, f"{path}: cannot write ({error.strerror}); {what_to_do}")


def write_document(path: str | os.PathLike[str], document: BaseModel) -> Path:
    return write_text_atomic(path, document.model_dump_json(indent=2) + "\n")


def _remove_quietly(name: str) -> None:
    try:
        os.unlink(name)
    except OSError:
        pass


def _first_line(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__
