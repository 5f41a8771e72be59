"""Command-line flags a stage accepts, defined once: the stage parses them, the orchestrator shows and forwards them.

Names follow WhisperX / openai-whisper (`--word_timestamps True`, `--max_line_width 42`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

from .writers import FORMATS

DEFAULT_MODEL = "mlx-community/whisper-large-v3-turbo"
BUNDLED_MODEL = "bundled-tiny.en"


def str2bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def optional_float(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def output_formats(value: str) -> str:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in (*FORMATS, "all")]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"unknown output format {', '.join(unknown) or value!r}; choose from {', '.join(FORMATS)} or all")
    return ",".join(names)


@dataclass(frozen=True)
class Flag:
    name: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.name.lstrip("-")


WRITER_FLAGS = (
    Flag(
        "--output_format",
        {"type": output_formats, "default": "all", "help": "json, txt, srt, vtt, tsv, aud, rttm or all; comma-separated for several"},
    ),
    Flag("--max_line_width", {"type": int, "default": None, "help": "subtitle line width in characters (needs word timestamps)"}),
    Flag("--max_line_count", {"type": int, "default": None, "help": "lines per subtitle cue (needs --max_line_width)"}),
    Flag("--highlight_words", {"type": str2bool, "default": False, "help": "underline each word as it is spoken in srt/vtt"}),
)

TRANSCRIBE_FLAGS = (
    Flag(
        "--model",
        {"default": DEFAULT_MODEL, "help": f"HF repo id, MLX folder, CTranslate2 (faster-whisper) folder, or {BUNDLED_MODEL} (offline)"},
    ),
    Flag("--model_dir", {"default": None, "help": "Hugging Face cache folder to use instead of HF_HOME's"}),
    Flag("--language", {"default": None, "help": "language code (e.g. en); detected when omitted"}),
    Flag("--task", {"default": "transcribe", "choices": ["transcribe", "translate"]}),
    Flag("--initial_prompt", {"default": None, "help": "text to prime the first window with (names, spelling)"}),
    Flag("--temperature", {"type": float, "default": 0.0}),
    Flag("--temperature_increment_on_fallback", {"type": optional_float, "default": 0.2}),
    Flag("--word_timestamps", {"type": str2bool, "default": False, "help": "word times from cross-attention (True/False)"}),
    # False, as in WhisperX: prompting each window with the last one's text feeds loops and temperature fallbacks
    # (300 s of real speech, tiny.en: WER 33% and 4.1x realtime with it, 13.6% and 9.4x without).
    Flag("--condition_on_previous_text", {"type": str2bool, "default": False}),
    Flag("--compression_ratio_threshold", {"type": optional_float, "default": 2.4}),
    Flag("--logprob_threshold", {"type": optional_float, "default": -1.0}),
    Flag("--no_speech_threshold", {"type": optional_float, "default": 0.6}),
    Flag("--hallucination_silence_threshold", {"type": optional_float, "default": None}),
    Flag(
        "--compute_type",
        {"default": "default", "choices": ["default", "float16", "float32"], "help": "default: float16 on Metal/CUDA, float32 on CPU"},
    ),
)

THREADS_FLAG = Flag("--threads", {"type": int, "default": 0, "help": "CPU threads (0: the machine's performance cores)"})


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: tuple[Flag, ...]) -> None:
    for flag in flags:
        parser.add_argument(flag.name, **flag.options)


def to_argv(args: argparse.Namespace, flags: tuple[Flag, ...]) -> list[str]:
    """The flags whose values differ from their defaults, as a stage's command line."""
    argv: list[str] = []
    for flag in flags:
        value = getattr(args, flag.dest)
        if value == flag.options.get("default"):
            continue
        argv += [flag.name, "None" if value is None else str(value)]
    return argv
