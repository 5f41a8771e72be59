"""Stage 2 end to end through the orchestrator, on the real two-speaker sample, offline.

Alignment runs with a random-init wav2vec2 CTC model (none ships on PyPI): its times are checked
for consistency, not accuracy. Diarization runs with the bundled pipeline, checked against the
sample's reference RTTM.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.contract import Result, Transcript
from shared.errors import ExitCode
from shared.io import load_document, write_document

ENV_SCRIPTS = Path(__file__).parent / "env_scripts"


@dataclass(frozen=True)
class Run:
    returncode: int
    stderr: str
    output_dir: Path


def stagewhisper(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["stagewhisper", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory, transcript_path: Path, random_ctc_model: Path) -> Run:
    """Alignment with edge cases in the text (digits, symbols), char alignments and bundled diarization, in one run."""
    work = tmp_path_factory.mktemp("aligned")
    transcript = load_document(transcript_path, Transcript)
    longest = max(range(len(transcript.segments)), key=lambda i: transcript.segments[i].end - transcript.segments[i].start)
    edited_text = " In 2024 we paid $5, 100% sure."  # frames enough for CTC to place every letter
    transcript.segments[longest] = transcript.segments[longest].model_copy(update={"text": edited_text, "words": None})
    edited = work / "call.transcript.json"
    write_document(edited, transcript)
    output_dir = work / "out"
    result = stagewhisper(
        "align-diarize", edited, "--audio", transcript_path.parent / "call.wav", "--align_model", random_ctc_model,
        "--return_char_alignments", "--diarize", "--diarize_model", "bundled", "--speaker_embeddings", "--output_dir", output_dir,
    )  # fmt: skip
    return Run(result.returncode, result.stderr, output_dir)


@pytest.fixture(scope="module")
def diarized(tmp_path_factory: pytest.TempPathFactory, transcript_path: Path) -> Run:
    """What the demo runs: stage 1's word times, bundled diarization."""
    output_dir = tmp_path_factory.mktemp("diarized")
    result = stagewhisper(
        "align-diarize", transcript_path, "--no_align", "--diarize", "--diarize_model", "bundled", "--output_dir", output_dir
    )
    return Run(result.returncode, result.stderr, output_dir)


def _result(run: Run) -> Result:
    assert run.returncode == 0, run.stderr
    return load_document(run.output_dir / "call.json", Result)


def test_every_word_is_timed_monotonic_and_inside_its_segment(aligned: Run) -> None:
    result = _result(aligned)
    assert result.alignment is not None and result.alignment.source == "local"
    assert result.alignment.weights[0].name == "model.safetensors"
    previous_start = 0.0
    for segment in result.segments:
        assert segment.words, segment.text
        assert " ".join(word.word for word in segment.words) == " ".join(segment.text.split())
        for word in segment.words:
            assert word.start is not None and word.end is not None, word
            assert segment.start - 1e-6 <= word.start <= word.end <= segment.end + 1e-6
            assert word.start >= previous_start - 1e-6, "word starts go back in time"
            previous_start = word.start
    assert result.word_segments == [word for segment in result.segments for word in segment.words or []]


def test_words_with_digits_and_symbols_get_times(aligned: Run) -> None:
    """WhisperX #1104: '2024', '$5,' and '100%' have no characters a wav2vec2 English model knows... partly."""
    result = _result(aligned)
    words = {word.word: word for segment in result.segments for word in segment.words or []}
    assert words["2024"].start is not None and words["2024"].score is None  # interpolated, so no CTC score
    assert words["$5,"].start is not None
    assert result.alignment is not None and result.alignment.interpolated_words >= 2


def test_char_alignments_cover_the_words(aligned: Run) -> None:
    result = _result(aligned)
    for segment in result.segments:
        assert segment.chars is not None
        assert "".join(char.char for char in segment.chars) == " ".join(word.word for word in segment.words or [])
    timed = [char for segment in result.segments for char in segment.chars or [] if char.start is not None]
    assert timed and all(char.char.lower().isalpha() or char.char == "'" for char in timed)


def test_every_word_has_a_speaker_and_outputs_are_written(aligned: Run) -> None:
    result = _result(aligned)
    assert all(word.speaker for word in result.word_segments)
    assert all(segment.speaker for segment in result.segments)
    assert {speaker.id for speaker in result.speakers} == {turn.speaker for turn in result.speaker_turns}
    for speaker in result.speakers:  # --speaker_embeddings: each speaker's centroid, GE2E's 256 dimensions
        assert speaker.embedding is not None and len(speaker.embedding) == 256
    assert result.diarization is not None and result.diarization.source == "bundled" and len(result.diarization.weights) == 2
    assert result.diarization.speed == "exact"  # the default: our engine, stock's output
    assert [p.stage for p in result.provenance] == ["transcribe", "align_diarize"]
    assert result.provenance[1].packages["numpy"].startswith("1.") and "align" in result.provenance[1].timings
    names = sorted(path.name for path in aligned.output_dir.iterdir() if path.is_file())
    assert names == ["call.json", "call.rttm", "call.srt", "call.tsv", "call.txt", "call.vtt"]
    assert all(line.startswith("SPEAKER call 1 ") for line in (aligned.output_dir / "call.rttm").read_text().splitlines())


def test_bundled_diarization_der_on_the_sample(diarized: Run, sample_rttm: Path, align_python: Path) -> None:
    _result(diarized)
    report = subprocess.run(
        [str(align_python), str(ENV_SCRIPTS / "der.py"), str(sample_rttm), str(diarized.output_dir / "call.rttm")],
        capture_output=True,
        text=True,
        check=True,
    )
    der = json.loads(report.stdout)["der"]
    assert der <= 0.12, f"DER {der:.3f}"


def test_words_get_the_reference_speaker(diarized: Run, sample_rttm: Path) -> None:
    """≥ 90 % of words whose midpoint lies in a single-speaker reference turn get that turn's speaker (best mapping)."""
    result = _result(diarized)
    reference = []
    for line in sample_rttm.read_text().splitlines():
        fields = line.split()
        reference.append((float(fields[3]), float(fields[3]) + float(fields[4]), fields[7]))
    pairs = []
    for word in result.word_segments:
        assert word.speaker is not None and word.start is not None and word.end is not None
        middle = (word.start + word.end) / 2
        speakers = {speaker for start, end, speaker in reference if start <= middle <= end}
        if len(speakers) == 1:
            pairs.append((speakers.pop(), word.speaker))
    assert len(pairs) >= 50
    reference_speakers = sorted({speaker for _, _, speaker in reference})
    hypothesis_speakers = sorted({speaker for _, speaker in pairs})
    best = max(sum(1 for ref, hyp in pairs if mapping.get(hyp) == ref) for mapping in _mappings(hypothesis_speakers, reference_speakers))
    assert best / len(pairs) >= 0.9, f"{best}/{len(pairs)} words on the right speaker"


def _mappings(hypothesis: list[str], reference: list[str]) -> list[dict[str, str]]:
    from itertools import permutations

    if len(hypothesis) <= len(reference):
        return [dict(zip(hypothesis, chosen, strict=True)) for chosen in permutations(reference, len(hypothesis))]
    return [{hyp: ref for ref, hyp in zip(reference, chosen, strict=True)} for chosen in permutations(hypothesis, len(reference))]


def test_bad_inputs_fail_alone_with_one_line_each(tmp_path: Path, transcript_path: Path) -> None:
    """Another schema version, edited audio, missing audio and an uncached alignment model, in one batch."""
    transcript = load_document(transcript_path, Transcript)
    audio = transcript_path.parent / "call.wav"
    cases = tmp_path / "cases"
    cases.mkdir()
    old = json.loads(transcript_path.read_text())
    (cases / "old.transcript.json").write_text(json.dumps({**old, "schema_version": "0.9"}))
    edited_audio = cases / "edited.wav"
    edited_audio.write_bytes(audio.read_bytes() + b"\0\0")

    def placed(path: str) -> Transcript:  # as stage 1 records it: the path as typed and resolved
        return transcript.model_copy(update={"audio": transcript.audio.model_copy(update={"path": path, "resolved_path": path})})

    write_document(cases / "edited.transcript.json", placed(str(edited_audio)))
    write_document(cases / "gone.transcript.json", placed("/nowhere/gone.wav"))
    write_document(cases / "good.transcript.json", placed(str(audio)))
    names = ["old", "edited", "gone", "good"]
    result = stagewhisper(
        "align-diarize", *(cases / f"{name}.transcript.json" for name in names), "--output_dir", tmp_path / "out",
        env={"TORCH_HOME": str(tmp_path / "torch"), "HF_HOME": str(tmp_path / "hf")},
    )  # fmt: skip
    assert result.returncode == ExitCode.BAD_DOCUMENT, result.stderr
    errors = {name: _error_line(result.stderr, f"{name}.transcript.json") for name in names}
    assert "schema_version '0.9' is not supported" in errors["old"]
    assert "differs from the transcript's" in errors["edited"] and "--audio" in errors["edited"]
    assert "was not found" in errors["gone"] and "--audio" in errors["gone"]
    assert "WAV2VEC2_ASR_BASE_960H" in errors["good"] and "--no_align" in errors["good"]
    codes = {name: _exit_status(tmp_path / "out" / "logs" / f"{name}.transcript.json.align_diarize.log") for name in names}
    assert codes == {
        "old": ExitCode.BAD_DOCUMENT,
        "edited": ExitCode.BAD_AUDIO,
        "gone": ExitCode.BAD_AUDIO,
        "good": ExitCode.MODEL_UNAVAILABLE,
    }
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["logs"]  # no output of any kind


def test_uncached_hub_pipeline_offline_is_a_clear_error(tmp_path: Path, transcript_path: Path) -> None:
    result = stagewhisper(
        "align-diarize", transcript_path, "--no_align", "--diarize", "--output_dir", tmp_path, "--hf_token", "hf_" + "x" * 30,
        env={"HF_HOME": str(tmp_path / "hf"), "PYANNOTE_CACHE": str(tmp_path / "pyannote")},
    )  # fmt: skip
    assert result.returncode == ExitCode.MODEL_UNAVAILABLE, result.stderr
    assert "pyannote/speaker-diarization-3.1" in result.stderr and "--diarize_model bundled" in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["logs"]
    assert "hf_xxxx" not in "".join(path.read_text() for path in (tmp_path / "logs").iterdir()) + result.stderr


def _error_line(stderr: str, name: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error: ") and name in line]
    assert lines, stderr
    return lines[-1]


def _exit_status(log: Path) -> int:
    last = log.read_text().splitlines()[-1]
    assert last.startswith("# exit status "), last
    return int(last.split()[3])


def test_fast_diarization_reports_its_steps_and_keeps_the_speakers(
    tmp_path: Path, transcript_path: Path, align_python: Path, sample_rttm: Path
) -> None:
    """--diarize_speed fast, run as the orchestrator runs the stage: progress through segmentation, embeddings and
    clustering on stdout, the speed in the result, and the sample's two speakers found (DER as exact's bound)."""
    from orchestrator import runtime

    done = subprocess.run(
        [str(align_python), "-P", "-m", "stages.align_diarize", str(transcript_path), "--no_align", "--diarize",
         "--diarize_model", "bundled", "--diarize_speed", "fast", "--output_dir", str(tmp_path)],
        capture_output=True, text=True, env={**runtime.stage_environment("align_diarize"), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    events = [json.loads(line.removeprefix("@stagewhisper ")) for line in done.stdout.splitlines() if line.startswith("@stagewhisper ")]
    steps = [event["message"] for event in events if event["kind"] == "progress"]
    for step in ("diarize: segmentation", "diarize: embeddings", "diarize: clustering"):
        assert step in steps, steps
    assert steps.index("diarize: segmentation") < steps.index("diarize: embeddings") < steps.index("diarize: clustering")
    result = load_document(tmp_path / "call.json", Result)
    assert result.diarization is not None and result.diarization.speed == "fast"
    assert {"import_diarization", "load_diarization_pipeline", "diarize"} <= set(result.provenance[1].timings)
    report = subprocess.run(
        [str(align_python), str(ENV_SCRIPTS / "der.py"), str(sample_rttm), str(tmp_path / "call.rttm")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(report.stdout)["der"] <= 0.12 and len(result.speakers) == 2


def test_alignment_imports_neither_pyannote_nor_whisperx_pipeline(align_python: Path) -> None:
    """The stage's modules and stock whisperx.alignment (which benchmarks and tests compare with; the stage itself
    no longer imports it: tests/test_align_start.py) load without whisperx/__init__ (faster-whisper, ctranslate2,
    pyannote, lightning: seconds per process), and no pyannote at all."""
    probe = (
        "import json, sys; import stages.align_diarize.cli, stages.align_diarize.pipeline;"
        "from stages.align_diarize.alignment.model import whisperx_alignment; a = whisperx_alignment();"
        "print(json.dumps({'ctc': all(hasattr(a, n) for n in ('get_trellis', 'backtrack', 'load_align_model')),"
        "'loaded': sorted(m for m in ('pyannote.audio', 'faster_whisper', 'ctranslate2', 'pytorch_lightning') if m in sys.modules)}))"
    )
    done = subprocess.run([str(align_python), "-P", "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"ctc": True, "loaded": []}
