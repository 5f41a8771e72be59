"""A new user's command lines: every `--help` works, and misuse is refused in one line before any stage starts."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from orchestrator import cli
from shared.errors import ExitCode
from shared.languages import language_code

COMMANDS = ["setup", "transcribe", "run", "align-diarize", "pack", "demo"]


@pytest.fixture
def no_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything would start a stage or an environment."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stage or an environment was started")

    for name in ("WorkerPool", "export_pyannote_vad"):
        monkeypatch.setattr(cli, name, refuse)
    monkeypatch.setattr(cli.envs, "ensure_ready", refuse)
    monkeypatch.setattr(cli.envs, "setup_all", refuse)


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "talk.wav"
    path.write_bytes(b"RIFF")
    return path


@pytest.mark.parametrize("command", [[], *([name] for name in COMMANDS)])
def test_help_of_every_command_works(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_help_of_the_stages_parsers_works(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.flags import ALIGN_FLAGS, DIARIZE_FLAGS, THREADS_FLAG, TRANSCRIBE_FLAGS, WRITER_FLAGS, add_flags

    parser = argparse.ArgumentParser(prog="stage")
    add_flags(parser, TRANSCRIBE_FLAGS + WRITER_FLAGS + ALIGN_FLAGS + DIARIZE_FLAGS + (THREADS_FLAG,))
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert "--suppress_numerals" in capsys.readouterr().out


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str | Path]) -> str:
    with pytest.raises(SystemExit) as done:
        code = cli.main([str(arg) for arg in argv])
        raise SystemExit(code)
    assert done.value.code == ExitCode.USAGE
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["transcribe", "--output_format", "rttm"], "rttm"),
        (["transcribe", "--output_format", "srt,rttm"], "rttm"),
        (["transcribe", "--batch_size", "0"], "--batch_size"),
        (["run", "--beam_size", "-1"], "--beam_size"),
        (["run", "--patience", "0"], "--patience"),
        (["run", "--diarize", "--min_speakers", "3", "--max_speakers", "2"], "--min_speakers"),
        (["run", "--diarize", "--num_speakers", "0"], "--num_speakers"),
        (["run", "--diarize", "--num_speakers", "5", "--max_speakers", "3"], "--num_speakers"),
        (["run", "--jobs", "0"], "--jobs"),
        (["run", "--max_line_width", "0"], "--max_line_width"),
        (["run", "--threads", "-2"], "--threads"),
        (["run", "--chunk_size", "45"], "--chunk_size"),
        (["run", "--vad_onset", "1.5"], "--vad_onset"),
        (["run", "--temperature", "-0.1"], "--temperature"),
        (["run", "--temperature_increment_on_fallback", "-0.2"], "--temperature_increment_on_fallback"),
        (["run", "--suppress_tokens", "1,x"], "--suppress_tokens"),
        (["run", "--language", "xx"], "unknown language 'xx'"),
        (["run", "--language", "Klingon"], "unknown language 'Klingon'"),
        (["run", "--model", "bundled-tiny.en", "--language", "fr"], "English-only"),
        (["transcribe", "--model", "mlx-community/whisper-tiny.en-mlx", "--language", "French"], "English-only"),
    ],
)
def test_misuse_is_one_line_and_exit_2_before_any_stage(
    no_stage: None, audio: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    command, *flags = argv
    assert expected in _refused(capsys, [command, audio, *flags])


def test_align_diarize_flags_are_checked_before_any_stage(no_stage: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    transcript = tmp_path / "talk.transcript.json"
    transcript.write_text("{}")
    assert "--max_speakers" in _refused(capsys, ["align-diarize", transcript, "--diarize", "--max_speakers", "0"])


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["run", "--num_speakers", "2"], "--num_speakers has no effect without --diarize"),
        (["run", "--min_speakers", "2", "--speaker_embeddings"], "--min_speakers, --speaker_embeddings have no effect without --diarize"),
        (["align-diarize", "--diarize_speed", "fast"], "--diarize_speed has no effect without --diarize"),
        (["transcribe", "--highlight_words", "True"], "--highlight_words has no effect without word times"),
        (["run", "--no_align", "--highlight_words", "True"], "--highlight_words has no effect without word times"),
        (["run", "--max_line_count", "2"], "--max_line_count has no effect without --max_line_width"),
        (["run", "--no_align", "--align_model", "x"], "--align_model has no effect with --no_align"),
        (["run", "--no_vad", "--vad_onset", "0.4"], "--vad_onset has no effect with --no_vad"),
        (["run", "--best_of", "3", "--temperature_increment_on_fallback", "None"], "--best_of has no effect without a fallback"),
    ],
)
def test_flags_without_effect_are_named_in_a_warning(argv: list[str], expected: str) -> None:
    command, *flags = argv
    args = cli.build_parser().parse_args([command, "talk.wav", *flags])
    (warning,) = cli.usage_warnings(args)
    assert warning.startswith(expected), warning


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--diarize", "--num_speakers", "2"],
        ["run", "--no_align", "--word_timestamps", "True", "--highlight_words", "True"],
        ["transcribe", "--word_timestamps", "True", "--highlight_words", "True", "--max_line_width", "30", "--max_line_count", "2"],
        ["run", "--highlight_words", "True"],
    ],
)
def test_flags_that_work_give_no_warning(argv: list[str]) -> None:
    command, *flags = argv
    assert cli.usage_warnings(cli.build_parser().parse_args([command, "talk.wav", *flags])) == []


def test_warning_is_printed_once_on_one_line(monkeypatch: pytest.MonkeyPatch, audio: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "transcribe_all", lambda *args, **kwargs: [])
    assert cli.main(["run", str(audio), "--num_speakers", "2"]) == ExitCode.OK
    err = capsys.readouterr().err
    assert err.count("--num_speakers has no effect without --diarize") == 1
    assert [line for line in err.splitlines() if "warning" in line] == [
        "warning: --num_speakers has no effect without --diarize; add --diarize or drop it"
    ]


@pytest.mark.parametrize(
    ("given", "code"),
    [("en", "en"), ("English", "en"), ("ENGLISH", "en"), ("fr", "fr"), ("French", "fr"), ("castilian", "es"), ("Haw", "haw")],
)
def test_language_names_and_codes_become_codes(given: str, code: str) -> None:
    assert language_code(given) == code
    args = cli.build_parser().parse_args(["run", "talk.wav", "--language", given])
    assert args.language == code
    assert cli.to_argv(args, cli.TRANSCRIBE_FLAGS)[-2:] == ["--language", code]  # what the stage is given


@pytest.mark.parametrize("model", ["bundled-tiny.en", "mlx-community/whisper-tiny.en-mlx", "Systran/faster-whisper-base.en"])
def test_english_models_accept_english(model: str) -> None:
    args = cli.build_parser().parse_args(["run", "talk.wav", "--model", model, "--language", "English"])
    cli.check_usage(args)  # no error


# A WhisperX 3.3 command line, its flags at values a user passes (WhisperX's defaults where they matter).
WHISPERX_LINE = [
    "--model", "bundled-tiny.en", "--language", "en", "--best_of", "5", "--device", "cpu", "--device_index", "1",
    "--fp16", "False", "--verbose", "False", "--print_progress", "True", "--segment_resolution", "chunk",
    "--compute_type", "default", "--batch_size", "8", "--beam_size", "5", "--output_format", "all",
]  # fmt: skip


def test_a_whisperx_command_line_runs_unchanged(monkeypatch: pytest.MonkeyPatch, audio: Path, capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[argparse.Namespace] = []
    monkeypatch.setattr(cli, "transcribe_all", lambda args, *rest, **kwargs: seen.append(args) or [])
    assert cli.main(["run", str(audio), *WHISPERX_LINE]) == ExitCode.OK
    assert "warning" not in capsys.readouterr().err
    (args,) = seen
    assert args.compute_type == "float32" and args.best_of == 5  # --fp16 False is float32
    assert args.stage1_env == {"STAGEWHISPER_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": "1"}
    assert args.stage2_env == {"CUDA_VISIBLE_DEVICES": "1"} and cli.stage2_env(args)["CUDA_VISIBLE_DEVICES"] == "1"
    stage_argv = cli.to_argv(args, cli.TRANSCRIBE_FLAGS)
    assert stage_argv[stage_argv.index("--compute_type") + 1] == "float32"
    assert "--device" not in stage_argv and "--fp16" not in stage_argv  # WhisperX's own flags never reach a stage
    assert "--device" in cli.stage1_key_argv(args)  # a CPU transcript is not a GPU one: kept apart


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--verbose", "True"], "--verbose True: stagewhisper shows progress and keeps logs"),
        (["--segment_resolution", "sentence"], "--segment_resolution sentence is not implemented"),
    ],
)
def test_whisperx_flags_that_cannot_apply_are_one_warning(flags: list[str], expected: str) -> None:
    args = cli.build_parser().parse_args(["run", "talk.wav", *flags])
    (warning,) = cli.apply_whisperx_flags(args)
    assert warning.startswith(expected), warning


def test_whisperx_device_moves_alignment_unless_told_otherwise() -> None:
    def mapped(*flags: str) -> argparse.Namespace:
        args = cli.build_parser().parse_args(["run", "talk.wav", *flags])
        cli.apply_whisperx_flags(args)
        return args

    assert mapped("--device", "cuda").align_device == "cuda"
    assert mapped("--device", "cuda", "--align_device", "mps").align_device == "mps"
    assert mapped("--device", "cuda", "--no_align").align_device == "cpu"  # no alignment to move: no warning about it
    assert mapped("--device", "cuda").stage1_env == {}  # MLX uses its GPU when it has one


def test_fp16_false_with_a_float16_compute_type_is_refused(no_stage: None, audio: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refusal = _refused(capsys, ["run", audio, "--fp16", "False", "--compute_type", "float16"])
    assert "--fp16 False contradicts --compute_type float16" in refusal
