"""Stage 1 end to end through the orchestrator: real audio, the bundled real model, real processes.

One orchestrator run transcribes the sample and three bad inputs together, so the tests below also show
that a failing file never stops the others.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import jiwer
import pytest

from shared import ExitCode, Transcript, load_document

pytestmark = pytest.mark.slow

# tiny.en on this 8 kHz-band phone call measured WER 0.148 (81 reference words); the bound leaves
# room for BLAS/platform rounding differences, not for a real regression.
MAX_SAMPLE_WER = 0.20


@dataclass
class BatchRun:
    exit_code: int
    output_dir: Path
    inputs: dict[str, Path]
    stderr: str


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory, sample_wav: Path) -> BatchRun:
    work = tmp_path_factory.mktemp("batch")
    inputs = {
        "missing": work / "missing.wav",
        "empty": work / "empty.wav",
        "text": work / "notes.wav",
        "sample": work / "call with spaces é.wav",
    }
    inputs["empty"].write_bytes(b"")
    inputs["text"].write_text("this is a text file, not audio\n")
    shutil.copy(sample_wav, inputs["sample"])
    output_dir = work / "out"
    result = subprocess.run(
        [
            "stagewhisper",
            "transcribe",
            *map(str, inputs.values()),
            "--model",
            "bundled-tiny.en",
            "--word_timestamps",
            "True",
            "--output_dir",
            str(output_dir),
            "--output_format",
            "all",
        ],
        capture_output=True,
        text=True,
        env=_offline_env(),
    )
    return BatchRun(result.returncode, output_dir, inputs, result.stderr)


def _offline_env() -> dict[str, str]:
    import os

    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def _transcript(batch: BatchRun) -> Transcript:
    return load_document(batch.output_dir / "call with spaces é.transcript.json", Transcript)


def test_batch_reports_first_failure_and_keeps_going(batch: BatchRun) -> None:
    assert batch.exit_code == ExitCode.BAD_AUDIO, batch.stderr
    assert (batch.output_dir / "call with spaces é.transcript.json").is_file()


@pytest.mark.parametrize(
    ("name", "reason"),
    [("missing", "file not found"), ("empty", "file is empty"), ("text", "cannot decode audio")],
)
def test_bad_audio_gives_one_line_and_no_output(batch: BatchRun, name: str, reason: str) -> None:
    audio = batch.inputs[name]
    lines = [line for line in batch.stderr.splitlines() if line.startswith("error:") and str(audio) in line]
    assert len(lines) == 1 and reason in lines[0], batch.stderr
    log = Path(lines[0].rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.read_text(encoding="utf-8").splitlines()[-1].startswith(f"# exit status {int(ExitCode.BAD_AUDIO)} after")
    leftovers = [p.name for p in batch.output_dir.iterdir() if p.name.startswith(audio.stem + ".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_sample_transcript_is_accurate(batch: BatchRun, sample_reference_text: str) -> None:
    transcript = _transcript(batch)
    error = jiwer.wer(normalized(sample_reference_text), normalized(transcript.text))
    print(f"sample WER {error:.3f}")
    assert error <= MAX_SAMPLE_WER
    assert "Diane in New Jersey" in transcript.text


def test_transcript_records_identity_and_provenance(batch: BatchRun, sample_wav: Path) -> None:
    import hashlib

    transcript = _transcript(batch)
    assert transcript.audio.sha256 == hashlib.sha256(sample_wav.read_bytes()).hexdigest()
    assert transcript.audio.duration == pytest.approx(30.0, abs=0.01) and transcript.audio.sample_rate == 16000
    assert transcript.model.source == "bundled" and transcript.model.dtype == "float32"
    assert transcript.language == "en" and transcript.language_info.source == "model"
    assert transcript.decoding.word_timestamps and transcript.decoding.temperature[0] == 0.0
    provenance = transcript.provenance
    assert provenance.stage == "transcribe" and provenance.wall_time_s > 0
    assert provenance.peak_rss_mib is not None and 100 < provenance.peak_rss_mib < 4096
    assert {"numpy", "mlx", "mlx-whisper"} <= provenance.packages.keys()
    assert provenance.environment["TOKENIZERS_PARALLELISM"] == "false"
    assert "STAGEWHISPER_THREADS" in provenance.environment and "STAGEWHISPER_BLAS_CHOICE" in provenance.environment


def test_words_are_timed_inside_their_segments(batch: BatchRun) -> None:
    transcript = _transcript(batch)
    words = [word for segment in transcript.segments for word in segment.words or []]
    assert len(words) >= 60
    starts = [word.start for word in words]
    assert starts == sorted(starts)
    assert all(segment.text.strip() for segment in transcript.segments)


def test_provenance_times_each_step(batch: BatchRun) -> None:
    timings = _transcript(batch).provenance.timings
    assert {"decode_audio", "load_model", "vad", "language", "decode"} <= timings.keys(), timings
    assert timings["decode"] > 0 and sum(timings.values()) <= _transcript(batch).provenance.wall_time_s + timings["decode_audio"] + 0.1


def test_words_are_whisperx_words_with_a_score(batch: BatchRun) -> None:
    """As WhisperX writes them: no leading space; `score` is the word's probability until stage 2 aligns it (so a
    `--no_align` result has one per word, not null)."""
    words = [word for segment in _transcript(batch).segments for word in segment.words or []]
    assert words and all(word.word == word.word.strip() and word.word for word in words)
    assert all(word.score is not None and word.score == word.probability for word in words)


def test_all_formats_written(batch: BatchRun) -> None:
    stem = "call with spaces é"
    for suffix in (".txt", ".srt", ".vtt", ".tsv"):
        assert (batch.output_dir / f"{stem}{suffix}").stat().st_size > 0
    assert "Diane" in (batch.output_dir / f"{stem}.srt").read_text(encoding="utf-8")


def test_stages_run_with_different_numpy_majors(batch: BatchRun, stage_envs: dict[str, Path]) -> None:
    """Stage 1's provenance says numpy 2; a provenance record made inside stage 2's env says numpy 1."""
    assert _transcript(batch).provenance.packages["numpy"].startswith("2.")
    script = (
        "from shared.provenance import build_provenance, utc_now; "
        "print(build_provenance('align_diarize', ['numpy'], utc_now(), 0.0, 'cpu').model_dump_json())"
    )
    stage2_python = str(stage_envs["align_diarize"])
    stage2 = json.loads(subprocess.run([stage2_python, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert stage2["packages"]["numpy"].startswith("1.")


def test_offline_uncached_model_is_a_clear_error(tmp_path: Path, sample_wav: Path) -> None:
    result = subprocess.run(
        ["stagewhisper", "transcribe", str(sample_wav), "--model", "mlx-community/whisper-not-cached", "--output_dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**_offline_env(), "HF_HOME": str(tmp_path / "hf")},
    )
    assert result.returncode == ExitCode.MODEL_UNAVAILABLE, result.stderr
    assert "not in the Hugging Face cache" in result.stderr and "bundled-tiny.en" in result.stderr
    assert not list(tmp_path.glob("*.json"))


def test_local_multilingual_mlx_model_detects_language(tmp_path: Path, sample_wav: Path, transcribe_python: Path) -> None:
    """A local MLX folder (random-init, multilingual vocabulary): loads, detects a language, records its probability."""
    model_dir = tmp_path / "random-multilingual"
    subprocess.run([str(transcribe_python), str(Path(__file__).parent / "env_scripts" / "random_mlx_model.py"), str(model_dir)], check=True)
    result = subprocess.run(
        [
            "stagewhisper",
            "transcribe",
            str(sample_wav),
            "--model",
            str(model_dir),
            "--temperature_increment_on_fallback",
            "None",
            "--output_dir",
            str(tmp_path / "out"),
            "--output_format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=_offline_env(),
    )
    assert result.returncode == 0, result.stderr
    transcript = load_document(tmp_path / "out" / "sample.transcript.json", Transcript)
    assert transcript.model.source == "mlx" and transcript.model.path == str(model_dir)
    assert transcript.language_info.source == "detected"
    assert transcript.language_info.probability is not None and 0.0 < transcript.language_info.probability <= 1.0
    assert transcript.language == transcript.language_info.code and transcript.decoding.language == transcript.language


def test_demo_prints_the_transcript_with_speakers(tmp_path: Path) -> None:
    """The README's first command, minus installing uv."""
    result = subprocess.run(["stagewhisper", "demo", "--output_dir", str(tmp_path)], capture_output=True, text=True, env=_offline_env())
    assert result.returncode == 0, result.stderr
    assert "This is Diane in New Jersey." in result.stdout
    assert "[SPEAKER_00]" in result.stdout and "[SPEAKER_01]" in result.stdout
    for name in ("sample.transcript.json", "sample.json", "sample.srt", "sample.rttm"):
        assert (tmp_path / name).is_file(), name
