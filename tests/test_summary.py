"""The summary a run ends with, as a new user reads it (issue 14): short file names, the JSON each stage wrote,
one mention of a log per error, this run's times in the demo, and `reused` on a rerun of a pack. The stages are
replaced by a fake that writes valid documents."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import cli, pack, workdir
from orchestrator.stage_runner import StageOutcome
from shared.contract import AudioInfo, Transcript
from shared.io import TRANSCRIPT_SUFFIX, load_document, write_document

from .factories import fake_worker_pools, greeting_segments, make_result, make_transcript


def fake_run_stage(stage: str, label: str, argv: list[str], log: Path) -> StageOutcome:
    """What a stage writes: stage 1 a transcript of the audio's bytes, stage 2 a result named by --output_name."""
    output_dir = Path(argv[argv.index("--output_dir") + 1])
    name = argv[argv.index("--output_name") + 1] if "--output_name" in argv else Path(argv[0]).name.removesuffix(TRANSCRIPT_SUFFIX)
    if stage == "transcribe":
        audio = Path(argv[0])
        document: Transcript | object = make_transcript()
        document.audio = AudioInfo(  # type: ignore[attr-defined]
            path=argv[0], resolved_path=str(audio.resolve()), sha256=workdir.file_sha256(audio) or "", duration=4.0, sample_rate=16000
        )
        json_path = output_dir / f"{name}{TRANSCRIPT_SUFFIX}"
    else:
        document = make_result(greeting_segments())
        document.audio = load_document(argv[0], Transcript).audio  # type: ignore[attr-defined]
        json_path = output_dir / f"{name}.json"
    write_document(json_path, document)  # type: ignore[arg-type]
    return StageOutcome(stage, label, 0, 0.1, log, [output_dir / f"{name}.txt", json_path])  # the JSON not first


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "WorkerPool", fake_worker_pools(fake_run_stage))
    monkeypatch.setenv("COLUMNS", "100")
    return tmp_path.resolve()


def _audio(folder: Path) -> Path:
    path = folder / "a rather long folder name for recordings" / "another level of folders" / "meeting.wav"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"RIFF-audio")
    return path


def _run(audio: Path) -> list[StageOutcome]:
    return cli.transcribe_all(cli.build_parser().parse_args(["run", str(audio), "--output_dir", "out"]), then_stage2=True)


def test_the_table_shows_file_names_and_each_stages_json(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = _audio(in_tmp)
    _run(audio)
    capsys.readouterr()
    outcomes = _run(audio)  # reused: written from kept artifacts, in the writers' order (JSON last)
    assert [outcome.reused for outcome in outcomes] == [True, True]
    assert cli.report(outcomes) == 0
    table = capsys.readouterr().err
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert len(rows) == 2, table  # one line each: the file column holds the name, not a path folded over lines
    assert "meeting.wav" in rows[0] and "out/meeting.transcript.json" in rows[0], table
    assert "out/meeting.json" in rows[1] and ".txt" not in table, table


def test_same_names_in_two_folders_are_told_apart_in_the_table() -> None:
    names = cli.display_names(["/a/day1/x.wav", "/a/day2/x.wav", "/a/day1/x.wav", "y.wav"])
    assert names == ["day1/x.wav", "day2/x.wav", "day1/x.wav", "y.wav"]


def test_an_error_line_names_its_log_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    log = tmp_path / "logs" / "x.wav.transcribe.log"
    crashed = StageOutcome("transcribe", "x.wav", 8, 1.0, log, error=f"stage transcribe was killed by SIGKILL; see {log}")
    refused = StageOutcome("transcribe", "y.wav", 3, 1.0, log, error="y.wav: file not found; check the path")
    assert cli.report([crashed, refused]) == 8
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: x.wav: stage transcribe was killed by SIGKILL; see {log}",
        f"error: y.wav: file not found; check the path (log: {log})",
    ]


def test_the_demo_prints_this_runs_times_not_the_first_runs(in_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = _audio(in_tmp)
    _run(audio)
    outcomes = _run(audio)
    capsys.readouterr()
    cli.print_result(cli.main_output(outcomes[-1]), outcomes)
    assert "transcribe reused, align_diarize reused" in capsys.readouterr().err


def test_a_rerun_on_a_pack_is_reused(in_tmp: Path) -> None:
    audio = _audio(in_tmp)
    _run(audio)
    swpack = pack.create_pack(in_tmp / "out" / f"meeting{TRANSCRIPT_SUFFIX}", in_tmp / "sent" / "meeting.swpack")
    args = cli.build_parser().parse_args(["align-diarize", str(swpack)])
    first, second = cli.align_diarize_all(args), cli.align_diarize_all(args)
    assert first[0].ok and not first[0].reused, first
    assert second[0].ok and second[0].reused, second
    assert cli.main_output(second[0]) == (in_tmp / "sent" / "meeting.json")  # named after the pack, beside it
