"""Flags are defined once and forwarded by the orchestrator: what it forwards must parse to what the user gave."""

from __future__ import annotations

import argparse

from shared.flags import ALIGN_FLAGS, DIARIZE_FLAGS, HF_TOKEN_FLAG, TRANSCRIBE_FLAGS, WRITER_FLAGS, add_flags, to_argv

FORWARDED = TRANSCRIBE_FLAGS + WRITER_FLAGS + ALIGN_FLAGS + DIARIZE_FLAGS


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser()
    add_flags(result, FORWARDED + (HF_TOKEN_FLAG,))
    return result


def test_defaults_forward_nothing() -> None:
    assert to_argv(parser().parse_args([]), FORWARDED) == []


def test_forwarded_flags_parse_back_to_the_same_values() -> None:
    given = ["--no_align", "--diarize", "--num_speakers", "2", "--interpolate_method", "linear", "--word_timestamps", "True"]
    given += ["--temperature_increment_on_fallback", "None", "--max_line_width", "42", "--hf_token", "hf_secret"]
    args = parser().parse_args(given)
    forwarded = to_argv(args, FORWARDED)
    assert "hf_secret" not in forwarded  # the token is never part of a command line
    reparsed = parser().parse_args(forwarded)
    assert {k: v for k, v in vars(reparsed).items() if k != "hf_token"} == {k: v for k, v in vars(args).items() if k != "hf_token"}
