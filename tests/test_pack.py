"""Packs: stage 2 handed to another machine as one file, verified before anything runs.

Refusals need no stage: they run on a small hand-built transcript with a few bytes standing in for audio
(packing never decodes audio, and a refused pack never reaches stage 2). The slow tests run both stages
on the real sample, offline, and compare the result of a pack run elsewhere with a local run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator import pack
from shared.contract import SCHEMA_VERSION, Result
from shared.errors import ExitCode
from shared.io import load_document, write_document
from tests.factories import make_transcript

STAGE2_FLAGS = ("--no_align", "--diarize", "--diarize_model", "bundled")  # offline: stage 1's word times, bundled speakers
FAKE_AUDIO = b"RIFF not really audio, but packing only hashes it" * 100


def stagewhisper(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["stagewhisper", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"},
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def files_besides_logs(folder: Path) -> list[str]:
    """The outputs: not the logs, nor the kept artifacts (OUTPUT_DIR/.stagewhisper/, which make a rerun reuse them)."""
    return sorted(
        str(path.relative_to(folder))
        for path in folder.rglob("*")
        if path.is_file() and path.parts[-2] != "logs" and ".stagewhisper" not in path.relative_to(folder).parts
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- fast: a hand-built transcript, no stage run


@pytest.fixture
def small_transcript(tmp_path: Path) -> Path:
    """A valid transcript whose recorded sha256 is FAKE_AUDIO's, with that 'audio' beside it."""
    folder = tmp_path / "machine1"
    folder.mkdir()
    (folder / "talk.wav").write_bytes(FAKE_AUDIO)
    transcript = make_transcript()
    transcript.audio = transcript.audio.model_copy(update={"path": "talk.wav", "sha256": sha256(FAKE_AUDIO)})
    return write_document(folder / "talk.transcript.json", transcript)


@pytest.fixture
def small_pack(small_transcript: Path) -> Path:
    result = stagewhisper("pack", small_transcript)
    assert result.returncode == 0, result.stderr
    return small_transcript.parent / "talk.swpack"


def read_manifest(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(pack.MANIFEST_NAME))


def test_pack_holds_transcript_audio_and_a_manifest_of_both(small_transcript: Path, small_pack: Path) -> None:
    manifest = read_manifest(small_pack)
    assert manifest["format"] == "stagewhisper-pack" and manifest["format_version"] == pack.PACK_FORMAT_VERSION
    assert manifest["schema_version"] == SCHEMA_VERSION and manifest["stagewhisper_version"] == pack.tool_version()
    assert manifest["kind"] == "transcript"
    assert manifest["audio"] == {"included": True, "name": "talk.wav", "sha256": sha256(FAKE_AUDIO), "size": len(FAKE_AUDIO)}
    with zipfile.ZipFile(small_pack) as archive:
        assert sorted(archive.namelist()) == ["audio/talk.wav", "manifest.json", "talk.transcript.json"]
        contents = {member["name"]: archive.read(member["name"]) for member in manifest["members"]}
    assert contents["talk.transcript.json"] == small_transcript.read_bytes()  # byte for byte, not re-serialized
    assert contents["audio/talk.wav"] == FAKE_AUDIO
    for member in manifest["members"]:
        assert (member["size"], member["sha256"]) == (len(contents[member["name"]]), sha256(contents[member["name"]]))


def test_pack_without_audio_keeps_only_its_identity(small_transcript: Path, tmp_path: Path) -> None:
    result = stagewhisper("pack", small_transcript, "--no-audio", "-o", tmp_path / "light.swpack")
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path / "light.swpack")
    assert [member["role"] for member in manifest["members"]] == ["transcript"]
    assert manifest["audio"] == {"included": False, "name": "talk.wav", "sha256": sha256(FAKE_AUDIO), "size": len(FAKE_AUDIO)}


def test_pack_verifies_and_unpacks_in_process(small_pack: Path, tmp_path: Path) -> None:
    unpacked = pack.unpack_transcript_pack(small_pack, tmp_path / "unpacked")
    assert unpacked.output_name == "talk" and unpacked.audio is not None and unpacked.audio.read_bytes() == FAKE_AUDIO
    assert unpacked.transcript.read_bytes() == (small_pack.parent / "talk.transcript.json").read_bytes()


def test_pack_refuses_audio_that_is_not_the_transcripts(small_transcript: Path) -> None:
    (small_transcript.parent / "talk.wav").write_bytes(FAKE_AUDIO + b"edited")
    result = stagewhisper("pack", small_transcript)
    assert result.returncode == ExitCode.BAD_AUDIO
    assert len(error_lines(result.stderr)) == 1 and "--audio" in result.stderr
    assert sorted(path.name for path in small_transcript.parent.iterdir()) == ["talk.transcript.json", "talk.wav"]  # no temp left


def test_pack_refuses_an_invalid_transcript(small_transcript: Path) -> None:
    small_transcript.write_text('{"schema_version": "1.1", "kind": "transcript"}', encoding="utf-8")
    result = stagewhisper("pack", small_transcript)
    assert result.returncode == ExitCode.BAD_DOCUMENT and len(error_lines(result.stderr)) == 1
    assert not (small_transcript.parent / "talk.swpack").exists()


def _rezip(source: Path, target: Path, change: Callable[[zipfile.ZipFile, zipfile.ZipFile], None]) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        change(old, new)


def flipped_byte(good: Path, bad: Path) -> None:
    """One byte of the stored audio flipped in the file itself (the zip's CRC catches it)."""
    data = bytearray(good.read_bytes())
    data[data.index(FAKE_AUDIO[:40]) + 10] ^= 0xFF
    bad.write_bytes(bytes(data))


def member_replaced(good: Path, bad: Path) -> None:
    """A consistent zip whose transcript was edited after packing: only the manifest's sha256 catches it."""

    def change(old: zipfile.ZipFile, new: zipfile.ZipFile) -> None:
        for info in old.infolist():
            data = old.read(info)
            new.writestr(info, data.replace(b"Hello", b"Jello") if info.filename.endswith(".json") and b"Hello" in data else data)

    _rezip(good, bad, change)


def truncated(good: Path, bad: Path) -> None:
    bad.write_bytes(good.read_bytes()[: good.stat().st_size * 2 // 3])


def text_file(good: Path, bad: Path) -> None:
    bad.write_text("these are my notes, not a pack\n", encoding="utf-8")


def unlisted_member(good: Path, bad: Path) -> None:
    def change(old: zipfile.ZipFile, new: zipfile.ZipFile) -> None:
        for info in old.infolist():
            new.writestr(info, old.read(info))
        new.writestr("extra.sh", "echo surprise\n")

    _rezip(good, bad, change)


def _renamed_member(name: str) -> Callable[[Path, Path], None]:
    """The audio renamed to NAME in the zip and in the manifest: only the name check can refuse it."""

    def build(good: Path, bad: Path) -> None:
        def change(old: zipfile.ZipFile, new: zipfile.ZipFile) -> None:
            manifest = json.loads(old.read(pack.MANIFEST_NAME))
            for member in manifest["members"]:
                member["name"] = name if member["role"] == "audio" else member["name"]
            for info in old.infolist():
                if info.filename == pack.MANIFEST_NAME:
                    new.writestr(pack.MANIFEST_NAME, json.dumps(manifest))
                else:
                    new.writestr(name if info.filename.startswith("audio/") else info.filename, old.read(info))

        _rezip(good, bad, change)

    return build


def newer_format(good: Path, bad: Path) -> None:
    def change(old: zipfile.ZipFile, new: zipfile.ZipFile) -> None:
        for info in old.infolist():
            data = old.read(info)
            if info.filename == pack.MANIFEST_NAME:
                data = json.dumps({**json.loads(data), "format_version": pack.PACK_FORMAT_VERSION + 1}).encode()
            new.writestr(info.filename, data)

    _rezip(good, bad, change)


BAD_PACKS = {
    "flipped-byte": flipped_byte,
    "member-replaced": member_replaced,
    "truncated": truncated,
    "text-file": text_file,
    "unlisted-member": unlisted_member,
    "dotdot-member": _renamed_member("../../escaped.wav"),
    "absolute-member": _renamed_member("/tmp/escaped.wav"),
    "newer-format": newer_format,
}


@pytest.mark.parametrize("damage", sorted(BAD_PACKS))
def test_a_bad_pack_is_refused_with_one_line_and_nothing_written(damage: str, small_pack: Path, tmp_path: Path) -> None:
    receiving = tmp_path / "machine2"
    receiving.mkdir()
    bad = receiving / f"{damage}.swpack"
    BAD_PACKS[damage](small_pack, bad)
    result = stagewhisper("align-diarize", bad, *STAGE2_FLAGS)
    assert result.returncode == ExitCode.BAD_DOCUMENT, result.stderr
    [line] = error_lines(result.stderr)
    assert str(bad) in line and "stagewhisper" in line.split(str(bad), 1)[1], line  # names the file and what to do
    assert files_besides_logs(receiving) == [bad.name]
    assert (receiving / "logs" / f"{bad.name}.align_diarize.log").is_file()
    assert not (tmp_path / "escaped.wav").exists() and not Path("/tmp/escaped.wav").exists()


# ---------------------------------------------------------------- slow: both stages on the real sample


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, transcript_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Stage 2 on the transcript where it was made, in one call with a text file posing as a pack (a mixed list)."""
    output_dir = tmp_path_factory.mktemp("local")
    impostor = output_dir / "impostor.swpack"
    impostor.write_text("not a pack\n", encoding="utf-8")
    result = stagewhisper("align-diarize", impostor, transcript_path, *STAGE2_FLAGS, "--output_dir", output_dir)
    return result, output_dir


def comparable(path: Path) -> dict:
    """The result without what legitimately differs between two runs of the same stage 2: when and how fast each stage
    ran (provenance started_at, wall_time_s, timings, peak_rss_mib). audio.path is kept: stage 2 copies it from the
    transcript, so a pack run must record the same one."""
    document = load_document(path, Result).model_dump(mode="json")
    for record in document["provenance"]:
        for field in ("started_at", "wall_time_s", "timings", "peak_rss_mib"):
            record.pop(field)
    return document


@pytest.mark.slow
def test_a_mixed_list_runs_every_input_and_refuses_the_bad_one(local_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    result, output_dir = local_run
    assert result.returncode == ExitCode.BAD_DOCUMENT, result.stderr
    [line] = error_lines(result.stderr)
    assert "impostor.swpack" in line
    assert {"call.json", "call.rttm"} <= set(files_besides_logs(output_dir))


@pytest.mark.slow
def test_stage2_on_another_machine_from_the_pack_alone_equals_a_local_run(
    tmp_path: Path, transcript_path: Path, local_run: tuple[subprocess.CompletedProcess[str], Path]
) -> None:
    machine1, machine2 = tmp_path / "machine1", tmp_path / "machine2"
    machine1.mkdir(), machine2.mkdir()
    packed = stagewhisper("pack", transcript_path, "-o", machine1 / "handoff.swpack")
    assert packed.returncode == 0, packed.stderr
    shutil.copy(machine1 / "handoff.swpack", machine2)  # only the pack travels
    original_audio = transcript_path.parent / "call.wav"
    hidden = original_audio.with_name("hidden.wav")
    original_audio.rename(hidden)  # the recorded audio path must not be what stage 2 finds
    try:
        result = stagewhisper("align-diarize", "handoff.swpack", *STAGE2_FLAGS, "--pack-result", cwd=machine2)
    finally:
        hidden.rename(original_audio)
    assert result.returncode == 0, result.stderr
    local_outputs = {path.suffix for path in local_run[1].glob("call.*")}
    assert set(files_besides_logs(machine2)) == {"handoff.swpack", "handoff.result.swpack"} | {f"handoff{ext}" for ext in local_outputs}
    assert comparable(machine2 / "handoff.json") == comparable(local_run[1] / "call.json")

    manifest = read_manifest(machine2 / "handoff.result.swpack")
    assert manifest["kind"] == "result" and manifest["schema_version"] == SCHEMA_VERSION
    with zipfile.ZipFile(machine2 / "handoff.result.swpack") as archive:
        assert set(archive.namelist()) == {"manifest.json"} | {f"handoff{ext}" for ext in local_outputs}
        for member in manifest["members"]:
            data = archive.read(member["name"])
            assert data == (machine2 / member["name"]).read_bytes() and member["sha256"] == sha256(data)


@pytest.mark.slow
def test_an_audio_less_pack_needs_audio_and_runs_with_it(tmp_path: Path, transcript_path: Path) -> None:
    light = tmp_path / "light.swpack"
    assert stagewhisper("pack", transcript_path, "--no-audio", "-o", light).returncode == 0
    assert light.stat().st_size < 100_000  # the 30 s wav is ~1 MB

    without = stagewhisper("align-diarize", light, *STAGE2_FLAGS)
    assert without.returncode == ExitCode.BAD_AUDIO
    [line] = error_lines(without.stderr)
    assert str(light) in line and "--audio" in line
    assert files_besides_logs(tmp_path) == ["light.swpack"]

    with_audio = stagewhisper("align-diarize", light, *STAGE2_FLAGS, "--audio", transcript_path.parent / "call.wav")
    assert with_audio.returncode == 0, with_audio.stderr
    assert load_document(tmp_path / "light.json", Result).speaker_turns
