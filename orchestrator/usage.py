"""Command lines checked as a whole before any stage starts: combinations that cannot work are refused (exit 2, one
line), flags that would do nothing in this command are named in a warning.

Single values (ranges, languages, formats) are checked by the flags' own argparse types in shared/flags.py, so the
stages refuse them too when run by hand.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from shared.errors import ExitCode, StageError
from shared.flags import ALIGN_FLAGS, DEVICE_ENV, DIARIZE_FLAGS, TRANSCRIBE_FLAGS, WRITER_FLAGS
from shared.writers import expand_formats

# mlx_whisper's sequential decoding is the only backend with these; "off" values
SEQUENTIAL_ONLY = {"condition_on_previous_text": False, "hallucination_silence_threshold": None}
DIARIZE_ONLY = ("num_speakers", "min_speakers", "max_speakers", "speaker_embeddings", "diarize_model", "diarize_speed")
ALIGN_ONLY = ("align_model", "interpolate_method", "return_char_alignments", "align_device")
VAD_ONLY = ("vad_method", "vad_onset", "vad_offset", "chunk_size")
# `.en` as a name part: bundled-tiny.en, whisper-tiny.en-mlx, faster-whisper-base.en
ENGLISH_ONLY_NAME = re.compile(r"\.en($|[-_.])", re.IGNORECASE)


def _default(options: dict[str, object]) -> object:
    return options.get("default", False if options.get("action") == "store_true" else None)


# each shared flag's default, to tell the flags the user gave from those left alone
DEFAULTS = {flag.dest: _default(flag.options) for flag in TRANSCRIBE_FLAGS + WRITER_FLAGS + ALIGN_FLAGS + DIARIZE_FLAGS}


def check_usage(args: argparse.Namespace) -> None:
    """Raise a one-line StageError(USAGE) for a combination of flags no stage could run."""
    _check_formats(args)
    _check_speakers(args)
    _check_language(args)
    _check_backend(args)
    _check_ray(args)


def usage_warnings(args: argparse.Namespace) -> list[str]:
    """One line per group of flags that have no effect in this command."""
    if args.command not in ("transcribe", "run", "align-diarize"):
        return []
    given = {name for name, default in DEFAULTS.items() if getattr(args, name, default) != default}
    warnings: list[str] = []
    if hasattr(args, "diarize") and not args.diarize:
        warnings += _unused(given, DIARIZE_ONLY, "without --diarize; add --diarize or drop {them}")
    if getattr(args, "no_align", False):
        warnings += _unused(given, ALIGN_ONLY, "with --no_align; drop {them} or --no_align")
    if getattr(args, "no_vad", False):
        warnings += _unused(given, VAD_ONLY, "with --no_vad; drop {them} or --no_vad")
    if "highlight_words" in given and word_times(args) is False:
        warnings.append(f"--highlight_words has no effect without word times; {_word_times_hint(args)}")
    if "best_of" in given and args.temperature == 0 and args.temperature_increment_on_fallback is None:
        warnings.append("--best_of has no effect without a fallback to sampling; drop it or --temperature_increment_on_fallback None")
    if "max_line_count" in given and args.max_line_width is None:
        warnings.append("--max_line_count has no effect without --max_line_width; add --max_line_width N")
    if getattr(args, "ray", None) and getattr(args, "jobs", 1) != 1:
        warnings.append("--jobs has no effect with --ray: each node runs its own stage-2 workers (`node join --stage2-workers N`)")
    return warnings


def word_times(args: argparse.Namespace) -> bool | None:
    """Whether the outputs will have word times: None when only the transcript knows (align-diarize --no_align)."""
    if args.command == "transcribe":
        return bool(args.word_timestamps)
    if not args.no_align:
        return True
    return bool(args.word_timestamps) if args.command == "run" else None


def english_only(model: str) -> bool:
    """Whisper's English-only models are named `*.en` (tiny.en ... medium.en), as repos, folders and bundled names."""
    return bool(ENGLISH_ONLY_NAME.search(Path(model.rstrip("/")).name))


def _check_formats(args: argparse.Namespace) -> None:
    if not hasattr(args, "output_format") or "rttm" not in expand_formats(args.output_format):
        return
    if args.command == "transcribe":
        raise StageError(ExitCode.USAGE, "--output_format rttm needs speakers, which transcribe does not find; use `run --diarize`")
    if not getattr(args, "diarize", False):
        raise StageError(ExitCode.USAGE, "--output_format rttm needs speakers; add --diarize")


def _check_speakers(args: argparse.Namespace) -> None:
    low, high, exact = (getattr(args, name, None) for name in ("min_speakers", "max_speakers", "num_speakers"))
    if low is not None and high is not None and low > high:
        raise StageError(ExitCode.USAGE, f"--min_speakers {low} is more than --max_speakers {high}; swap or correct them")
    if exact is not None and ((low is not None and exact < low) or (high is not None and exact > high)):
        raise StageError(ExitCode.USAGE, f"--num_speakers {exact} is outside --min_speakers/--max_speakers; give the count or the range")


def _check_language(args: argparse.Namespace) -> None:
    language, model = getattr(args, "language", None), getattr(args, "model", None)
    if language and language != "en" and model and english_only(model):
        raise StageError(
            ExitCode.USAGE,
            f"--language {language}: {model} is an English-only model; use --language en or a multilingual model (without .en)",
        )


def _check_backend(args: argparse.Namespace) -> None:
    if getattr(args, "backend", "mlx_whisper") == "mlx_whisper":
        return
    for name, off in SEQUENTIAL_ONLY.items():
        if getattr(args, name, off) != off:
            raise StageError(
                ExitCode.USAGE,
                f"--{name} needs --backend mlx_whisper (batched chunks are decoded independently; "
                "--interleaved_context True carries each stream's text forward)",
            )


def _check_ray(args: argparse.Namespace) -> None:
    """What a run on a Ray cluster cannot take: a token given here would cross the cluster (nodes keep their own)."""
    if not getattr(args, "ray", None):
        return
    if getattr(args, "hf_token", None):
        raise StageError(
            ExitCode.USAGE,
            "--hf_token with --ray: the token would travel through the cluster; give it to the stage-2 nodes instead "
            "(`HF_TOKEN=... stagewhisper node join ...`), which pass it to their workers through the environment",
        )
    if getattr(args, "vad_method", "silero") == "pyannote" and not getattr(args, "no_vad", False):
        why = "--vad_method pyannote is not available with --ray yet (its model is exported on this machine); use silero"
        raise StageError(ExitCode.USAGE, why)


def _unused(given: set[str], names: tuple[str, ...], why: str) -> list[str]:
    flags = [f"--{name}" for name in names if name in given]
    if not flags:
        return []
    verb, them = ("has", "it") if len(flags) == 1 else ("have", "them")
    return [f"{', '.join(flags)} {verb} no effect {why.format(them=them)}"]


def _word_times_hint(args: argparse.Namespace) -> str:
    return "add --word_timestamps True" if args.command == "transcribe" else "add --word_timestamps True or drop --no_align"


# --- WhisperX's flags (shared.flags.WHISPERX_FLAGS) -----------------------------------------------------------------
def apply_whisperx_flags(args: argparse.Namespace) -> list[str]:
    """Map WhisperX's flags onto ours, in place (`args.stage1_env`, `args.stage2_env` get what travels by environment);
    returns one warning per flag that cannot apply here. Raises USAGE for a contradiction."""
    args.stage1_env, args.stage2_env = {}, {}
    if not hasattr(args, "segment_resolution"):  # setup, pack, demo
        return []
    _map_fp16(args)
    _map_device(args)
    warnings: list[str] = []
    if args.verbose:
        warnings.append("--verbose True: stagewhisper shows progress and keeps logs instead of printing the text as it decodes")
    if args.segment_resolution == "sentence":
        warnings.append("--segment_resolution sentence is not implemented: segments stay as Whisper decoded them (chunk)")
    return warnings  # --print_progress: progress is always shown


def _map_fp16(args: argparse.Namespace) -> None:
    """--fp16 False is WhisperX's way to ask for float32; True is our default wherever float16 is fast (a GPU)."""
    if args.fp16 is not False or not hasattr(args, "compute_type"):
        return
    if args.compute_type == "default":
        args.compute_type = "float32"
    elif "float16" in args.compute_type:
        raise StageError(ExitCode.USAGE, f"--fp16 False contradicts --compute_type {args.compute_type}; drop one of them")


def _map_device(args: argparse.Namespace) -> None:
    """--device cpu keeps stage 1 off the GPU; cuda/mps move alignment there as WhisperX does (MLX already uses its
    GPU when it has one). --device_index picks the GPU for both stages."""
    if args.device == "cpu":
        args.stage1_env[DEVICE_ENV] = "cpu"
    elif args.device and not getattr(args, "no_align", True) and args.align_device == DEFAULTS["align_device"]:
        args.align_device = args.device
    if args.device_index is not None:
        for env in (args.stage1_env, args.stage2_env):
            env["CUDA_VISIBLE_DEVICES"] = str(args.device_index)
