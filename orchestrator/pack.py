"""Packs: one portable file that carries stage 1's transcript (and its audio) to another machine for stage 2,
and stage 2's outputs back (`--pack-result`).

A pack is a zip (stdlib only) with a `manifest.json` that lists every other member with its size and sha256.
Nothing in a pack is trusted until it is verified: the manifest must list exactly the members the zip holds,
names must stay inside the folder they are unpacked to, and every byte must match its recorded sha256.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.contract import SCHEMA_MAJOR, SCHEMA_VERSION, Transcript
from shared.errors import ExitCode, StageError
from shared.io import (
    TRANSCRIPT_SUFFIX,
    atomic_binary_output,
    describe_validation_error,
    file_sha256,
    load_document,
    parse_document,
    recorded_audio,
)
from shared.provenance import TOOL_DISTRIBUTION, package_versions

PACK_SUFFIX = ".swpack"
RESULT_PACK_SUFFIX = ".result.swpack"
MANIFEST_NAME = "manifest.json"
PACK_FORMAT = "stagewhisper-pack"
PACK_FORMAT_VERSION = 1  # bump on any change an older reader would misread
AUDIO_FOLDER = "audio"
MAX_MANIFEST_BYTES = 1 << 20  # a manifest lists a handful of files; anything bigger is not ours
CHUNK_BYTES = 1 << 20
ZIP64_THRESHOLD = 1 << 31  # zip's classic fields overflow past 2 GiB; long recordings get there
SHA256_PATTERN = r"^[0-9a-f]{64}$"

RECOPY_HINT = "copy the pack again, or re-create it with `stagewhisper pack`"

MemberRole = Literal["transcript", "audio", "result", "output"]


class PackMember(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    role: MemberRole
    size: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)


class AudioRecord(BaseModel):
    """The audio stage 1 transcribed: inside the pack, or (--no-audio) only its identity."""

    model_config = ConfigDict(extra="forbid")

    included: bool
    name: str = Field(description="the file's name when it was packed")
    sha256: str = Field(pattern=SHA256_PATTERN)
    size: int | None = Field(default=None, ge=0, description="None when packed with --no-audio and the file was not at hand")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["stagewhisper-pack"] = PACK_FORMAT
    format_version: int = PACK_FORMAT_VERSION
    kind: Literal["transcript", "result"]
    schema_version: str = SCHEMA_VERSION
    stagewhisper_version: str
    created_at: str
    audio: AudioRecord | None = Field(default=None, description="transcript packs only")
    members: list[PackMember]


@dataclass(frozen=True)
class UnpackedPack:
    """A verified transcript pack, unpacked: what stage 2 needs to run on it."""

    pack: Path
    output_name: str
    transcript: Path
    audio: Path | None
    audio_record: AudioRecord


# ---------------------------------------------------------------- names and checks shared by both directions


def is_pack(path: Path) -> bool:
    """By name, so that a damaged pack is still treated (and refused) as one."""
    return path.name.endswith(PACK_SUFFIX)


def pack_base_name(path: Path) -> str:
    return path.name.removesuffix(PACK_SUFFIX) or path.name


def transcript_base_name(path: Path) -> str:
    return path.name.removesuffix(TRANSCRIPT_SUFFIX) if path.name.endswith(TRANSCRIPT_SUFFIX) else path.stem


def unsafe_member_name(name: str) -> str | None:
    """Why NAME may not be unpacked (absolute, escaping, odd), or None when it is a plain relative path."""
    if not name or "\\" in name or "\x00" in name:
        return "an empty name, a backslash or a NUL"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "an absolute path"
    parts = PurePosixPath(name).parts
    if any(part in ("..", ".") for part in parts) or name.endswith("/"):
        return "a '..' or '.' component or a folder entry"
    return None


def tool_version() -> str:
    return package_versions([TOOL_DISTRIBUTION]).get(TOOL_DISTRIBUTION, "unknown")


def _refuse(pack: Path, problem: str) -> StageError:
    return StageError(ExitCode.BAD_DOCUMENT, f"{pack}: {problem}; {RECOPY_HINT}")


# ---------------------------------------------------------------- writing


def create_pack(transcript_path: Path, output: Path | None = None, include_audio: bool = True, audio: Path | None = None) -> Path:
    """Pack a transcript (validated) and its audio (checked against the transcript's sha256) into one file."""
    transcript = load_document(transcript_path, Transcript)
    transcript_bytes = transcript_path.read_bytes()  # the file as stage 1 wrote it, byte for byte
    destination = pack_destination(transcript_path, output)
    audio_path = locate_audio(transcript, transcript_path, audio, required=include_audio)
    audio_size = audio_path.stat().st_size if audio_path else None
    if audio_path and not include_audio:  # not carried, but still the right file: refuse a mismatch now, not on the other machine
        check_audio_hash(audio_path, transcript, sha256_of_file(audio_path))
    audio_name = _audio_member_name(Path(transcript.audio.path).name)
    members = [PackMember(name=transcript_path.name, role="transcript", size=len(transcript_bytes), sha256=_sha256(transcript_bytes))]
    with atomic_binary_output(destination) as handle, zipfile.ZipFile(handle, "w") as archive:
        archive.writestr(members[0].name, transcript_bytes, compress_type=zipfile.ZIP_DEFLATED)
        if include_audio and audio_path:
            digest = _copy_into_archive(archive, audio_path, audio_name)
            check_audio_hash(audio_path, transcript, digest)  # raised inside the block: the temp file is removed
            members.append(PackMember(name=audio_name, role="audio", size=audio_size or 0, sha256=digest))
        record = AudioRecord(included=include_audio, name=Path(transcript.audio.path).name, sha256=transcript.audio.sha256, size=audio_size)
        _write_manifest(archive, "transcript", members, record)
    return destination


def create_result_pack(outputs: Sequence[Path], destination: Path) -> Path:
    """Stage 2's outputs (the result JSON, subtitles, RTTM) as one file, with the same kind of manifest."""
    members = []
    with atomic_binary_output(destination) as handle, zipfile.ZipFile(handle, "w") as archive:
        for path in outputs:
            data = path.read_bytes()
            role: MemberRole = "result" if path.suffix == ".json" else "output"
            archive.writestr(path.name, data, compress_type=zipfile.ZIP_DEFLATED)
            members.append(PackMember(name=path.name, role=role, size=len(data), sha256=_sha256(data)))
        _write_manifest(archive, "result", members, None)
    return destination


def pack_destination(transcript_path: Path, output: Path | None) -> Path:
    if output is None:
        return transcript_path.parent / f"{transcript_base_name(transcript_path)}{PACK_SUFFIX}"
    if output.is_dir():
        return output / f"{transcript_base_name(transcript_path)}{PACK_SUFFIX}"
    if not is_pack(output):  # align-diarize recognises packs by this suffix
        raise StageError(ExitCode.USAGE, f"{output}: a pack's name must end in {PACK_SUFFIX}")
    return output


def locate_audio(transcript: Transcript, transcript_path: Path, given: Path | None, required: bool) -> Path | None:
    """--audio, else where `align-diarize` looks (shared.io.recorded_audio)."""
    if given is not None:
        if not given.is_file():
            raise StageError(ExitCode.BAD_AUDIO, f"{given}: audio file not found; check the path given to --audio")
        return given
    found = recorded_audio(transcript.audio, transcript_path)
    if found is not None:
        return found
    recorded = Path(transcript.audio.path)
    if required:
        raise StageError(
            ExitCode.BAD_AUDIO,
            f"{transcript_path}: its audio {recorded} was not found (nor beside the transcript); pass --audio PATH, or --no-audio",
        )
    return None


def check_audio_hash(audio_path: Path, transcript: Transcript, digest: str) -> None:
    if digest != transcript.audio.sha256:
        raise StageError(
            ExitCode.BAD_AUDIO,
            f"{audio_path}: sha256 {digest[:12]}... differs from the transcript's {transcript.audio.sha256[:12]}... "
            "(another or edited file); pass the audio stage 1 transcribed with --audio",
        )


def _audio_member_name(file_name: str) -> str:
    name = f"{AUDIO_FOLDER}/{file_name}"
    return name if unsafe_member_name(name) is None else f"{AUDIO_FOLDER}/audio{Path(file_name).suffix}"


def _copy_into_archive(archive: zipfile.ZipFile, source: Path, name: str) -> str:
    """Stream SOURCE in (stored: audio codecs do not deflate) and return its sha256, read once."""
    digest = hashlib.sha256()
    large = source.stat().st_size >= ZIP64_THRESHOLD
    with archive.open(zipfile.ZipInfo(name), "w", force_zip64=large) as writer:
        for chunk in _read_chunks(source):
            digest.update(chunk)
            writer.write(chunk)
    return digest.hexdigest()


def _read_chunks(source: Path) -> Iterator[bytes]:
    """SOURCE in chunks; a read error is the input's fault (exit 3), not the output's."""
    try:
        with source.open("rb") as reader:
            while chunk := reader.read(CHUNK_BYTES):
                yield chunk
    except OSError as error:
        raise StageError(ExitCode.BAD_AUDIO, f"{source}: cannot read ({error.strerror}); check the file") from None


def _write_manifest(
    archive: zipfile.ZipFile, kind: Literal["transcript", "result"], members: list[PackMember], audio: AudioRecord | None
) -> None:
    manifest = Manifest(
        kind=kind,
        stagewhisper_version=tool_version(),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        audio=audio,
        members=members,
    )
    archive.writestr(MANIFEST_NAME, manifest.model_dump_json(indent=2) + "\n", compress_type=zipfile.ZIP_DEFLATED)


# ---------------------------------------------------------------- reading


def unpack_transcript_pack(pack: Path, destination: Path) -> UnpackedPack:
    """Verify PACK completely and unpack it into DESTINATION (a private, empty folder); refuse anything off."""
    if not pack.is_file():
        raise StageError(ExitCode.BAD_DOCUMENT, f"{pack}: file not found; check the path")
    try:
        with zipfile.ZipFile(pack) as archive:
            manifest = read_manifest(pack, archive)
            if manifest.kind != "transcript":
                raise StageError(ExitCode.BAD_DOCUMENT, f"{pack}: holds stage 2's results, not a transcript; unzip it to read them")
            for member in manifest.members:
                extract_verified(pack, archive, member, destination)
    # RuntimeError: an encrypted member; NotImplementedError: a compression method zipfile lacks. Neither is ours.
    except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError) as error:
        raise _refuse(pack, f"not a readable stagewhisper pack (damaged or truncated zip: {error})") from None
    except OSError as error:  # writes into DESTINATION raise their own error in extract_verified
        raise _refuse(pack, f"cannot read ({error.strerror})") from None
    return _checked_contents(pack, manifest, destination)


def read_manifest(pack: Path, archive: zipfile.ZipFile) -> Manifest:
    """The manifest, after checking that the zip's members are exactly the ones it lists, all with safe names."""
    names = [info.filename for info in archive.infolist()]
    for name in names:
        if why := unsafe_member_name(name):
            raise _refuse(pack, f"member {name!r} has {why}, which a pack never holds")
    if len(set(names)) != len(names):
        raise _refuse(pack, "a member name appears twice")
    if MANIFEST_NAME not in names:
        raise _refuse(pack, f"no {MANIFEST_NAME}: not a stagewhisper pack")
    if archive.getinfo(MANIFEST_NAME).file_size > MAX_MANIFEST_BYTES:
        raise _refuse(pack, f"{MANIFEST_NAME} is implausibly large")
    manifest = parse_manifest(pack, archive.read(MANIFEST_NAME))
    listed = [member.name for member in manifest.members]
    if len(set(listed)) != len(listed):
        raise _refuse(pack, f"{MANIFEST_NAME} lists a member twice")
    present = set(names) - {MANIFEST_NAME}
    if unlisted := sorted(present - set(listed)):
        raise _refuse(pack, f"holds {unlisted[0]!r}, which its manifest does not list")
    if missing := sorted(set(listed) - present):
        raise _refuse(pack, f"its manifest lists {missing[0]!r}, which the pack does not hold")
    return manifest


def parse_manifest(pack: Path, raw: bytes) -> Manifest:
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _refuse(pack, f"{MANIFEST_NAME} is not valid JSON") from None
    if not isinstance(data, dict) or data.get("format") != PACK_FORMAT:
        raise _refuse(pack, f"{MANIFEST_NAME} is not a stagewhisper pack manifest")
    version = data.get("format_version")
    if version != PACK_FORMAT_VERSION:  # checked before the rest: a newer format may change any field
        raise StageError(
            ExitCode.BAD_DOCUMENT,
            f"{pack}: pack format {version!r} is not supported (this stagewhisper reads {PACK_FORMAT_VERSION}); "
            "use the stagewhisper version that made it, or re-create the pack with this one",
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as error:
        raise _refuse(pack, f"{MANIFEST_NAME}: {describe_validation_error(error)}") from None
    if manifest.schema_version.split(".")[0] != SCHEMA_MAJOR:
        raise StageError(
            ExitCode.BAD_DOCUMENT,
            f"{pack}: schema_version {manifest.schema_version!r} is not supported (this stagewhisper reads {SCHEMA_MAJOR}.x); "
            "redo stage 1 and pack with this version",
        )
    return manifest


def extract_verified(pack: Path, archive: zipfile.ZipFile, member: PackMember, destination: Path) -> Path:
    """Stream one member out, never past its recorded size, and refuse it unless size and sha256 match."""
    info = archive.getinfo(member.name)
    if info.file_size != member.size:
        raise _refuse(pack, f"member {member.name!r} is {info.file_size} bytes, its manifest says {member.size}")
    target = destination / member.name
    digest = hashlib.sha256()
    written = 0
    with archive.open(info) as reader, _open_for_unpack(pack, target) as writer:
        while chunk := reader.read(CHUNK_BYTES):
            written += len(chunk)
            if written > member.size:
                raise _refuse(pack, f"member {member.name!r} is longer than its manifest says")
            digest.update(chunk)
            try:
                writer.write(chunk)
            except OSError as error:
                raise _unpack_failed(pack, target, error) from None
    if written != member.size or digest.hexdigest() != member.sha256:
        raise _refuse(pack, f"member {member.name!r} does not match its sha256 in the manifest (tampered or damaged)")
    return target


def _open_for_unpack(pack: Path, target: Path) -> BinaryIO:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return target.open("xb")  # exclusive: a name can only be written once
    except OSError as error:
        raise _unpack_failed(pack, target, error) from None


def _unpack_failed(pack: Path, target: Path, error: OSError) -> StageError:
    return StageError(
        ExitCode.OUTPUT_UNWRITABLE, f"{pack}: cannot unpack into {target.parent} ({error.strerror}); free space or set TMPDIR"
    )


def _checked_contents(pack: Path, manifest: Manifest, destination: Path) -> UnpackedPack:
    """The members' roles and the transcript, consistent with each other and with the manifest's audio record."""
    transcripts = [member for member in manifest.members if member.role == "transcript"]
    audios = [member for member in manifest.members if member.role == "audio"]
    record = manifest.audio
    if len(transcripts) != 1 or len(audios) > 1 or record is None or record.included != bool(audios):
        raise _refuse(pack, f"{MANIFEST_NAME} does not describe one transcript and its audio")
    transcript_path = destination / transcripts[0].name
    source = f"{pack}:{transcripts[0].name}"
    try:
        data = json.loads(transcript_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _refuse(pack, f"{transcripts[0].name} is not valid JSON") from None
    transcript = parse_document(data, Transcript, source=source)
    if transcript.audio.sha256 != record.sha256 or (audios and audios[0].sha256 != record.sha256):
        raise _refuse(pack, "the audio's sha256 differs between the transcript, the manifest and the audio member")
    return UnpackedPack(
        pack=pack,
        output_name=pack_base_name(pack),
        transcript=transcript_path,
        audio=destination / audios[0].name if audios else None,
        audio_record=record,
    )


def check_given_audio(unpacked: UnpackedPack, given: Path | None) -> Path:
    """The audio stage 2 gets: the packed one, or --audio for a pack made with --no-audio (stage 2 checks its sha256)."""
    if unpacked.audio is not None:
        return unpacked.audio
    if given is None:
        raise StageError(
            ExitCode.BAD_AUDIO,
            f"{unpacked.pack}: holds no audio (packed with --no-audio); pass --audio PATH to {unpacked.audio_record.name}",
        )
    if not given.is_file():
        raise StageError(ExitCode.BAD_AUDIO, f"{given}: audio file not found; check the path given to --audio")
    expected = unpacked.audio_record.size
    if expected is not None and given.stat().st_size != expected:  # cheap early refusal; stage 2 still checks the sha256
        raise StageError(
            ExitCode.BAD_AUDIO,
            f"{given}: {given.stat().st_size} bytes, but the pack's audio {unpacked.audio_record.name} is {expected}; "
            "pass the audio stage 1 transcribed with --audio",
        )
    return given


def sha256_of_file(path: Path) -> str:
    """sha256 of the audio; a read error is exit 3, as when packing it."""
    try:
        return file_sha256(path, CHUNK_BYTES)
    except OSError as error:
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: cannot read ({error.strerror}); check the file") from None


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
