"""Command-line flags a stage accepts, defined once: the stage parses them, the orchestrator shows and forwards them.

Names follow WhisperX / openai-whisper (`--word_timestamps True`, `--max_line_width 42`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .languages import language_code
from .writers import FORMATS

DEFAULT_MODEL = "mlx-community/whisper-large-v3-turbo"
BUNDLED_MODEL = "bundled-tiny.en"
# --allow_truncated reaches stage 2 (which decodes the audio again, with no such flag) through its environment.
ALLOW_TRUNCATED_ENV = "STAGEWHISPER_ALLOW_TRUNCATED"


def str2bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False, got {value!r}")


def optional_float(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer flag's type that refuses values below MINIMUM: argparse then reports a usage error (exit 2)."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be {minimum} or more, got {number}")
        return number

    return parse


def float_in(
    low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False, none: bool = False
) -> Callable[[str], Any]:
    """A float flag's type bounded by LOW..HIGH (open ends excluded); `none`: the word None is also accepted."""
    shown = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}" if math.isfinite(high) else None

    def parse(value: str) -> float | None:
        if none and value.lower() == "none":
            return None
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number{' or None' if none else ''}, got {value!r}") from None
        below = number <= low if low_open else number < low
        above = number >= high if high_open else number > high
        if not math.isfinite(number) or below or above:
            wanted = f"in {shown}" if shown else f"{'above' if low_open else 'at least'} {low:g}"
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return number

    return parse


def token_ids(value: str) -> str:
    """--suppress_tokens: comma-separated integer token ids (-1: Whisper's non-speech symbols), kept as given."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not all(item.lstrip("-").isdigit() for item in items):
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids such as -1 or 50,220, got {value!r}")
    return value


def language(value: str) -> str:
    """--language: a code or a name in any case, as WhisperX accepts (English, en), normalised to Whisper's code."""
    try:
        return language_code(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


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
    Flag(
        "--max_line_width", {"type": int_at_least(1), "default": None, "help": "subtitle line width in characters (needs word timestamps)"}
    ),
    Flag("--max_line_count", {"type": int_at_least(1), "default": None, "help": "lines per subtitle cue (needs --max_line_width)"}),
    Flag("--highlight_words", {"type": str2bool, "default": False, "help": "underline each word as it is spoken in srt/vtt"}),
)

TRANSCRIBE_FLAGS = (
    Flag(
        "--model",
        {"default": DEFAULT_MODEL, "help": f"HF repo id, MLX folder, CTranslate2 (faster-whisper) folder, or {BUNDLED_MODEL} (offline)"},
    ),
    Flag("--model_dir", {"default": None, "help": "Hugging Face cache folder to use instead of HF_HOME's"}),
    Flag("--language", {"type": language, "default": None, "help": "language code or name (en, English); detected when omitted"}),
    Flag("--task", {"default": "transcribe", "choices": ["transcribe", "translate"]}),
    Flag("--initial_prompt", {"default": None, "help": "text to prime the first window with (names, spelling)"}),
    Flag("--temperature", {"type": float_in(0.0), "default": 0.0}),
    Flag("--temperature_increment_on_fallback", {"type": float_in(0.0, none=True), "default": 0.2}),
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
        {
            "default": "default",
            "choices": ["default", "float16", "float32", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16"],
            "help": "default: float16 on Metal/CUDA, float32 on CPU (int8* is CTranslate2 only: ~1.2x faster on CPU, other tokens)",
        },
    ),
    Flag(
        "--backend",
        {
            "default": "auto",
            "choices": ["auto", "mlx", "ctranslate2", "mlx_whisper"],
            "help": "auto: MLX on Apple silicon or an MLX GPU, CTranslate2 on other CPUs when the model has CTranslate2 weights; "
            "mlx_whisper: its own sequential long-form decoding (no VAD, no batches)",
        },
    ),
    Flag("--batch_size", {"type": int_at_least(1), "default": 8, "help": "speech chunks decoded together"}),
    Flag("--beam_size", {"type": int_at_least(1), "default": 5, "help": "beams per chunk at temperature 0 (1: greedy, fastest)"}),
    Flag(
        "--best_of",
        {"type": int_at_least(1), "default": 5, "help": "candidates sampled per chunk when falling back to a temperature above 0"},
    ),
    Flag(
        "--patience",
        {"type": float_in(0.0, low_open=True), "default": 1.0, "help": "beam search patience (finished candidates = beam_size x patience)"},
    ),
    Flag("--length_penalty", {"type": optional_float, "default": None, "help": "beam ranking: None divides by length"}),
    Flag("--hotwords", {"default": None, "help": "words to prime every chunk with (names, jargon)"}),
    Flag(
        "--suppress_tokens", {"type": token_ids, "default": "-1", "help": "comma-separated token ids never emitted; -1: non-speech symbols"}
    ),
    # %% is a literal % (argparse formats help strings with %): a bare % crashed every --help
    Flag("--suppress_numerals", {"type": str2bool, "default": False, "help": "spell numbers as words (no digits or %%$ tokens)"}),
    Flag("--without_timestamps", {"type": str2bool, "default": False, "help": "text only: one segment per speech chunk (faster)"}),
    Flag(
        "--interleaved_context",
        {"type": str2bool, "default": False, "help": "prompt each chunk with the text decoded before it (in batch_size parallel streams)"},
    ),
    Flag(
        "--word_time_shift",
        {
            "type": float_in(0.0, 1.0, none=True),
            "default": None,
            "help": "seconds to move --word_timestamps word times earlier (None: the model's measured lag, 0.1 for bundled-tiny.en "
            "and 0 for models not measured; 0: off; batched backends only)",
        },
    ),
    Flag("--vad_method", {"default": "silero", "choices": ["silero", "pyannote"], "help": "voice activity detection for chunking"}),
    Flag(
        "--vad_onset",
        {"type": float_in(0.0, 1.0, low_open=True, high_open=True), "default": 0.5, "help": "speech probability that starts speech"},
    ),
    Flag(
        "--vad_offset",
        {
            "type": float_in(0.0, 1.0, none=True),
            "default": None,
            "help": "probability that ends it (None: silero onset - 0.15, pyannote 0.363)",
        },
    ),
    Flag("--chunk_size", {"type": float_in(0.0, 30.0, low_open=True), "default": 30.0, "help": "longest speech chunk in seconds (<= 30)"}),
    Flag("--no_vad", {"action": "store_true", "help": "no VAD: consecutive 30 s windows"}),
    Flag(
        "--allow_truncated",
        {"action": "store_true", "help": "transcribe what a cut or damaged file holds (refused by default), with a warning in the JSON"},
    ),
)

# stage-1 flags that are not decoding options of the contract (they choose the chunks)
VAD_FLAG_NAMES = ("vad_method", "vad_onset", "vad_offset", "chunk_size", "no_vad")

ALIGN_FLAGS = (
    Flag(
        "--align_model",
        {"default": None, "help": "wav2vec2 CTC model: HF repo id, torchaudio bundle or folder (default: WhisperX's per language)"},
    ),
    Flag(
        "--interpolate_method",
        {
            "default": "nearest",
            "choices": ["nearest", "linear", "ignore"],
            "help": "times for words the CTC model cannot place (digits, symbols): nearest fills the gap between their "
            "neighbours or shares a neighbour's span when there is no gap; linear always splits the gap; ignore leaves them untimed",
        },
    ),
    Flag("--return_char_alignments", {"action": "store_true", "help": "also write each character's time (segments[].chars)"}),
    Flag("--no_align", {"action": "store_true", "help": "skip word alignment (keep stage 1's word times, if any)"}),
    Flag("--align_device", {"default": "cpu", "choices": ["cpu", "cuda", "mps"], "help": "where alignment runs (diarization is CPU only)"}),
)

DIARIZE_FLAGS = (
    Flag("--diarize", {"action": "store_true", "help": "find speakers and give every word and segment one"}),
    Flag(
        "--diarize_model",
        {
            "default": "pyannote/speaker-diarization-3.1",
            "help": "pyannote pipeline: HF id (gated: needs --hf_token), config.yaml, or bundled (offline)",
        },
    ),
    Flag(
        "--diarize_speed",
        {
            "default": "exact",
            "choices": ["exact", "fast"],
            "help": "exact: stock pyannote's speakers with a fraction of its work; fast: windows 3x further apart (see README)",
        },
    ),
    Flag("--num_speakers", {"type": int_at_least(1), "default": None, "help": "exact number of speakers, when known"}),
    Flag("--min_speakers", {"type": int_at_least(1), "default": None}),
    Flag("--max_speakers", {"type": int_at_least(1), "default": None}),
    Flag("--speaker_embeddings", {"action": "store_true", "help": "write each speaker's embedding into the JSON"}),
)

STAGE2_MODEL_DIR_FLAG = Flag("--model_dir", {"default": None, "help": "cache folder for alignment/diarization models"})

# Never forwarded on a command line (logs keep command lines): the orchestrator passes it as HF_TOKEN.
HF_TOKEN_FLAG = Flag(
    "--hf_token", {"default": None, "help": "Hugging Face token for gated models (default: $HF_TOKEN); never written anywhere"}
)

# WhisperX's flags that name what stagewhisper decides otherwise: accepted so that a WhisperX command line runs
# unchanged, mapped by the orchestrator (orchestrator/usage.py) and never forwarded. Default None: "not given".
WHISPERX_FLAGS = (
    Flag(
        "--device",
        {
            "default": None,
            "choices": ["cpu", "cuda", "mps"],
            "help": "WhisperX's: cpu keeps stage 1 on the CPU; "
            "cuda/mps: stage 1 uses the GPU MLX has, and alignment runs there (unless --align_device)",
        },
    ),
    Flag("--device_index", {"type": int_at_least(0), "default": None, "help": "WhisperX's: the GPU to use (sets CUDA_VISIBLE_DEVICES)"}),
    Flag("--fp16", {"type": str2bool, "default": None, "help": "WhisperX's: False means --compute_type float32"}),
    Flag("--verbose", {"type": str2bool, "default": None, "help": "WhisperX's: progress bars and logs are always shown/kept"}),
    Flag("--print_progress", {"type": str2bool, "default": None, "help": "WhisperX's: progress is always shown"}),
    Flag(
        "--segment_resolution",
        {"default": None, "choices": ["sentence", "chunk"], "help": "WhisperX's: segments stay as Whisper decoded them (chunk)"},
    ),
)
# The device choice reaches stage 1 through its environment (read before MLX picks its default device).
DEVICE_ENV = "STAGEWHISPER_DEVICE"

THREADS_FLAG = Flag("--threads", {"type": int_at_least(0), "default": 0, "help": "CPU threads (0: the machine's performance cores)"})


def add_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, flags: tuple[Flag, ...]) -> None:
    for flag in flags:
        parser.add_argument(flag.name, **flag.options)


def to_argv(args: argparse.Namespace, flags: tuple[Flag, ...]) -> list[str]:
    """The flags whose values differ from their defaults, as a stage's command line."""
    argv: list[str] = []
    for flag in flags:
        value = getattr(args, flag.dest)
        if flag.options.get("action") == "store_true":
            argv += [flag.name] if value else []
        elif value != flag.options.get("default"):
            argv += [flag.name, "None" if value is None else str(value)]
    return argv
