"""Long-lived stage workers (issue 12): the protocol's messages are validated, one worker takes many files, a failing
file is an error record while the worker goes on, and a worker killed mid-file loses only that file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shared.errors import ExitCode
from shared.worker_protocol import (
    MESSAGE_PREFIX,
    Done,
    Job,
    Progress,
    Ready,
    Started,
    decode_from_worker,
    decode_to_worker,
    encode,
)

from .factories import cut_wav, repeat_wav
from .test_bad_input import worker_on

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
DIARIZE = ["--no_align", "--diarize", "--diarize_model", "bundled"]


def test_messages_round_trip_and_anything_else_is_refused() -> None:
    job = Job(id="7", argv=["a.wav", "--output_dir", "out"], log_path="out/logs/a.wav.transcribe.log")
    assert decode_to_worker(encode(job)) == job
    for message in (
        Ready(protocol=1, stage="transcribe", pid=12),
        Started(job="7"),
        Progress(job="7", done=1.5, total=3.0),
        Done(job="7", exit_code=3, error="bad"),
    ):
        assert decode_from_worker(encode(message)) == message
    assert decode_from_worker("a library printed this\n") is None  # goes to the log
    assert decode_from_worker(MESSAGE_PREFIX + '{"type": "done", "job": "7"}\n') is None  # no exit code: not a message
    with pytest.raises(ValueError):
        decode_to_worker(MESSAGE_PREFIX + '{"type": "job", "id": "1", "argv": [], "log_path": "x", "extra": 1}\n')
    with pytest.raises(ValueError):
        decode_to_worker('{"type": "job"}\n')


def _workers_that_started(logs: list[Path]) -> list[int]:
    pids = []
    for log in logs:
        found = re.search(r"^# worker (\d+): started this file$", log.read_text(), re.MULTILINE)
        assert found, log.read_text()
        pids.append(int(found.group(1)))
    return pids


@pytest.mark.slow
def test_one_worker_takes_every_file_and_a_failing_one_does_not_stop_it(tmp_path: Path, transcript_path: Path) -> None:
    """align-diarize on good, broken, good: one stage-2 process for all three; the broken one exits 4 with its own
    one-line error and log, the others get their results."""
    shutil.copy(transcript_path.with_name("call.wav"), tmp_path / "call.wav")
    for name in ("first", "third"):
        shutil.copy(transcript_path, tmp_path / f"{name}.transcript.json")
    (tmp_path / "second.transcript.json").write_text("{ not json", encoding="utf-8")
    inputs = [tmp_path / f"{name}.transcript.json" for name in ("first", "second", "third")]
    done = subprocess.run(
        ["stagewhisper", "align-diarize", *map(str, inputs), *DIARIZE, "--force"], capture_output=True, text=True, env=ENV
    )
    assert done.returncode == ExitCode.BAD_DOCUMENT, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "second.transcript.json" in errors[0], done.stderr
    assert (tmp_path / "first.json").is_file() and (tmp_path / "third.json").is_file()
    assert not list(tmp_path.glob("second.json*"))
    logs = [tmp_path / "logs" / f"{name}.transcript.json.align_diarize.log" for name in ("first", "second", "third")]
    assert len(set(_workers_that_started(logs))) == 1  # loaded once, three files
    assert "error:" in logs[1].read_text() and "error:" not in logs[0].read_text()
    assert not list((tmp_path / "logs").glob("worker-*"))  # a worker that ended cleanly leaves no log of its own


@pytest.mark.slow
def test_a_stage2_worker_killed_mid_file_loses_only_that_file(tmp_path: Path, sample_wav: Path) -> None:
    """kill -9 of the stage-2 worker on the middle file of three: that file exits 8 naming its log, a new worker
    takes the third, and nothing half-written is left."""
    files = [tmp_path / "a.wav", tmp_path / "long.wav", tmp_path / "c.wav"]
    shutil.copy(sample_wav, files[0])
    repeat_wav(sample_wav, files[1], times=6)  # long enough to be killed mid-way
    repeat_wav(sample_wav, files[2], times=5)  # over 2 minutes: stage 1 does it alone, after long.wav
    output_dir = tmp_path / "out"
    command = ["stagewhisper", "run", *map(str, files), "--model", "bundled-tiny.en", "--language", "en", *DIARIZE, "-o", str(output_dir)]
    with subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV) as run:
        pid = worker_on(output_dir / "logs" / "long.wav.align_diarize.log", deadline_s=300)
        if pid is not None:
            time.sleep(1.0)
            os.kill(pid, signal.SIGKILL)
        _, stderr = run.communicate(timeout=600)
    assert pid is not None, "stage 2 never started on long.wav"
    assert run.returncode == ExitCode.STAGE_CRASHED, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "long.wav" in errors[0] and "SIGKILL" in errors[0], stderr
    assert errors[0].count("logs/long.wav.align_diarize.log") == 1, stderr
    assert (output_dir / "a.json").is_file() and (output_dir / "c.json").is_file()
    assert (output_dir / "long.transcript.json").is_file() and not list(output_dir.glob("long.json*"))
    assert "killed by SIGKILL while on this file" in (output_dir / "logs" / "long.wav.align_diarize.log").read_text()
    third = _workers_that_started([output_dir / "logs" / "c.wav.align_diarize.log"])[0]
    assert third != pid  # a new worker


def _without_word_probabilities(segments: list[dict]) -> list[dict]:
    return [{**s, "words": [{k: v for k, v in w.items() if k not in ("probability", "score")} for w in s["words"]]} for s in segments]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ctranslate2", "mlx"])
def test_files_decoded_in_shared_batches_equal_each_file_decoded_alone(tmp_path: Path, sample_wav: Path, backend: str) -> None:
    """Four short real-speech files through one stage-1 worker share their decoder batches; each transcript equals the
    one-file CLI's on that file alone: text, tokens, segment and word times. CTranslate2 gives the very same floats;
    MLX's batched matmuls sum in another order, so its word probabilities may move in the 6th decimal (as they do
    between --batch_size 1 and 8 of one file), never a token or a time."""
    import json

    files = []
    for name, start, seconds in (("a", 6, 4), ("b", 11, 6), ("c", 16, 9), ("d", 20, 3)):
        files.append(tmp_path / f"{name}.wav")
        cut_wav(sample_wav, files[-1], start, seconds)
    flags = ["--model", "bundled-tiny.en", "--language", "en", "--word_timestamps", "True", "--backend", backend]
    done = subprocess.run(
        ["stagewhisper", "transcribe", *map(str, files), *flags, "-o", str(tmp_path / "together")], capture_output=True, text=True, env=ENV
    )
    assert done.returncode == 0, done.stderr
    python = Path(__file__).resolve().parents[1] / "envs" / "transcribe" / ".venv" / "bin" / "python"
    for file in files:
        alone = subprocess.run(
            [str(python), "-m", "stages.transcribe", str(file), *flags, "-o", str(tmp_path / "alone")],
            capture_output=True,
            text=True,
            env=ENV,
        )
        assert alone.returncode == 0, alone.stderr
        together = json.loads((tmp_path / "together" / f"{file.stem}.transcript.json").read_text())
        single = json.loads((tmp_path / "alone" / f"{file.stem}.transcript.json").read_text())
        assert together["provenance"]["environment"]["decoded_with_files"] == "4"  # the four shared batches
        assert together["text"] and together["text"] == single["text"]
        if backend == "ctranslate2":
            assert together["segments"] == single["segments"]
        else:
            assert _without_word_probabilities(together["segments"]) == _without_word_probabilities(single["segments"])
            pairs = [
                (w["probability"], v["probability"])
                for s, t in zip(together["segments"], single["segments"], strict=True)
                for w, v in zip(s["words"], t["words"], strict=True)
            ]
            assert pairs and max(abs(a - b) for a, b in pairs) < 1e-5
