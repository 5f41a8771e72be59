"""Paths as a user types them: resolved paths in the transcript, one cache entry and one run per file, one log per
input, and outputs with the mode a plain write gives. The stages are replaced by a fake that writes valid documents."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator import cli, workdir
from orchestrator.stage_runner import StageOutcome
from shared.contract import AudioInfo, Transcript
from shared.io import TRANSCRIPT_SUFFIX, atomic_binary_output, load_document, write_document, write_text_atomic
from shared.schema import schema_text

from .factories import fake_worker_pools, greeting_segments, make_result, make_transcript


class FakeStages:
    """Stands in for the stage workers: records each job and writes what the stage would (sha256 taken from the audio)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, list[str], Path]] = []

    def __call__(self, stage: str, label: str, argv: list[str], log: Path) -> StageOutcome:
        output_dir = Path(argv[argv.index("--output_dir") + 1])
        self.calls.append((stage, label, list(argv), log))
        if stage == "transcribe":
            json_path = output_dir / f"{argv[argv.index('--output_name') + 1]}{TRANSCRIPT_SUFFIX}"
            audio = Path(argv[0])
            transcript = make_transcript()
            transcript.audio = AudioInfo(
                path=argv[0], resolved_path=str(audio.resolve()), sha256=workdir.file_sha256(audio) or "", duration=4.0, sample_rate=16000
            )
            write_document(json_path, transcript)
        else:
            transcript = load_document(argv[0], Transcript)
            result = make_result(greeting_segments())
            result.audio = transcript.audio
            json_path = output_dir / f"{Path(argv[0]).name.removesuffix(TRANSCRIPT_SUFFIX)}.json"
            write_document(json_path, result)
        return StageOutcome(stage, label, 0, 0.1, log, [json_path])

    def stages(self) -> list[str]:
        return [stage for stage, *_ in self.calls]


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> FakeStages:
    fake = FakeStages()
    monkeypatch.setattr(cli, "WorkerPool", fake_worker_pools(fake))
    return fake


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path.resolve()


def _audio(folder: Path, name: str, content: bytes = b"RIFF-audio") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def _run(*argv: str) -> list[StageOutcome]:
    args = cli.build_parser().parse_args(["run", *argv, "--output_dir", "out"])
    return cli.transcribe_all(args, then_stage2=True)


# item 9: the resolved path


def test_audio_info_keeps_the_resolved_path_and_old_documents_still_load(tmp_path: Path) -> None:
    assert "resolved_path" in schema_text("transcript")
    transcript = make_transcript()
    assert transcript.audio.resolved_path is None  # optional: 1.2 documents have none
    old = json.loads(transcript.model_dump_json())
    del old["audio"]["resolved_path"]
    old["schema_version"] = "1.2"
    path = tmp_path / "old.transcript.json"
    path.write_text(json.dumps(old))
    assert load_document(path, Transcript).audio.resolved_path is None


def test_dot_slash_and_plain_relative_path_hit_the_same_cache_entries(in_tmp: Path, fake_stages: FakeStages) -> None:
    _audio(in_tmp, "in/x.flac")
    first = _run("./in/x.flac")
    assert [outcome.reused for outcome in first] == [False, False]
    second = _run("in/x.flac")
    assert [outcome.reused for outcome in second] == [True, True], fake_stages.stages()
    transcript = load_document(in_tmp / "out" / f"x{TRANSCRIPT_SUFFIX}", Transcript)
    assert transcript.audio.path == "in/x.flac" and transcript.audio.resolved_path == str(in_tmp / "in" / "x.flac")


def test_align_diarize_from_another_folder_finds_the_audio_by_its_resolved_path(
    in_tmp: Path, fake_stages: FakeStages, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = _audio(in_tmp, "in/sample.wav")
    _run("in/sample.wav")
    elsewhere = in_tmp / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    fake_stages.calls.clear()
    args = cli.build_parser().parse_args(["align-diarize", str(in_tmp / "out" / f"sample{TRANSCRIPT_SUFFIX}"), "--force"])
    cli.align_diarize_all(args)
    ((stage, _, argv, _),) = fake_stages.calls
    assert stage == "align_diarize" and argv[argv.index("--audio") + 1] == str(audio.resolve())


# item 10: one log per input, one run per file


def test_same_file_names_in_two_folders_get_two_logs(in_tmp: Path, fake_stages: FakeStages) -> None:
    _audio(in_tmp, "day1/meeting.flac", b"one")
    _audio(in_tmp, "day2/meeting.flac", b"two")
    outcomes = _run("day1/meeting.flac", "day2/meeting.flac")
    logs = [log for stage, _, _, log in fake_stages.calls if stage == "transcribe"]
    assert len(set(logs)) == 2, logs
    assert len({outcome.log_path for outcome in outcomes}) == 4


def test_unique_file_names_keep_their_plain_log_name(in_tmp: Path, fake_stages: FakeStages) -> None:
    _audio(in_tmp, "day1/talk.wav")
    _run("day1/talk.wav")
    assert [log.name for *_, log in fake_stages.calls] == ["talk.wav.transcribe.log", "talk.wav.align_diarize.log"]


def test_the_same_file_given_twice_is_processed_once(in_tmp: Path, fake_stages: FakeStages, capsys: pytest.CaptureFixture[str]) -> None:
    _audio(in_tmp, "x.wav")
    _run("x.wav", "./x.wav", str(in_tmp / "x.wav"))
    assert fake_stages.stages() == ["transcribe", "align_diarize"]
    assert "are the same file" in capsys.readouterr().err


# item 11: file modes


@pytest.fixture
def umask_022() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_writes_get_the_mode_of_a_plain_write(tmp_path: Path, umask_022: None) -> None:
    assert _mode(write_text_atomic(tmp_path / "a.txt", "a")) == 0o644
    with atomic_binary_output(tmp_path / "b.bin") as handle:
        handle.write(b"b")
    assert _mode(tmp_path / "b.bin") == 0o644
    os.umask(0o027)
    assert _mode(write_text_atomic(tmp_path / "c.txt", "c")) == 0o640


def test_outputs_and_cache_files_are_0644_under_umask_022(in_tmp: Path, umask_022: None) -> None:
    _audio(in_tmp, "x.wav")
    transcript = make_transcript()
    json_path = write_document(in_tmp / "out" / "x.transcript.json", transcript)
    key = workdir.ArtifactKey("transcribe", "ab" * 32, "cd" * 32)
    workdir.keep_artifact(in_tmp / "out", key, json_path)
    kept = workdir.artifact_path(in_tmp / "out", key)
    assert _mode(json_path) == 0o644 and _mode(kept) == 0o644
