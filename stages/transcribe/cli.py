"""`python -m stages.transcribe AUDIO`: one audio file in, one validated transcript JSON out."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

from shared.contract import DecodingOptions
from shared.errors import ExitCode, StageError
from shared.flags import DEVICE_ENV, THREADS_FLAG, TRANSCRIBE_FLAGS, VAD_FLAG_NAMES, WRITER_FLAGS, add_flags
from shared.io import TRANSCRIPT_SUFFIX
from shared.progress import ProgressEvent, emit, stop_quietly_on_sigterm
from shared.provenance import THREAD_ENV_VARS

STAGE = "transcribe"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.transcribe", description=__doc__)
    parser.add_argument("audio", help="audio or video file (anything FFmpeg decodes)")
    parser.add_argument("--output", help=f"transcript JSON path (default: OUTPUT_DIR/<name>{TRANSCRIPT_SUFFIX})")
    parser.add_argument("--output_dir", "-o", default=".", help="folder for the outputs")
    parser.add_argument("--output_name", default=None, help="base name of the outputs (default: the audio's name without extension)")
    add_flags(parser, TRANSCRIBE_FLAGS + WRITER_FLAGS + (THREADS_FLAG,))
    parser.set_defaults(output_format="json")
    return parser


def temperatures(start: float, increment: float | None) -> tuple[float, ...]:
    if not increment:
        return (start,)
    steps = int(round((1.0 - start) / increment)) + 1
    return tuple(round(start + i * increment, 4) for i in range(steps) if start + i * increment <= 1.0 + 1e-6)


def apply_threads(threads: int) -> None:
    """Must run before MLX/BLAS load: they read these once."""
    if threads > 0:
        os.environ.update({name: str(threads) for name in THREAD_ENV_VARS})


def apply_device() -> None:
    """WhisperX's --device cpu, passed by the orchestrator: MLX's default device is the GPU when there is one."""
    if os.environ.get(DEVICE_ENV) == "cpu":
        import mlx.core as mx

        mx.set_default_device(mx.cpu)


def run(args: argparse.Namespace) -> Path:
    from shared.writers import WriterOptions, expand_formats, write_outputs
    from stages.common.audio import decode_audio

    from .pipeline.options import TranscribeOptions
    from .pipeline.transcribe import transcribe

    formats = expand_formats(args.output_format)  # fail on a bad format before any work
    if "rttm" in formats:
        raise StageError(ExitCode.USAGE, "--output_format rttm needs speakers, which stage 1 does not find; run stage 2 with --diarize")
    started = time.perf_counter()
    audio = decode_audio(args.audio, allow_truncated=args.allow_truncated or None)  # None: the environment decides
    decode_seconds = round(time.perf_counter() - started, 3)
    decoding = {name: getattr(args, name) for name in DecodingOptions.model_fields if name != "compute_type" and hasattr(args, name)}
    decoding["temperature"] = list(temperatures(args.temperature, args.temperature_increment_on_fallback))
    decoding |= {name: getattr(args, name) for name in VAD_FLAG_NAMES}
    options = TranscribeOptions(
        model=args.model,
        download_root=args.model_dir,
        compute_type=None if args.compute_type == "default" else args.compute_type,
        decoding=decoding,
        timings={"decode_audio": decode_seconds},
    )

    def report(done: float, total: float) -> None:
        emit(ProgressEvent(stage=STAGE, file=args.audio, done=done, total=total))

    transcript = transcribe(audio, options, on_progress=report)
    output_dir = Path(args.output_dir)
    stem = args.output_name or Path(args.audio).stem
    json_path = Path(args.output) if args.output else output_dir / f"{stem}{TRANSCRIPT_SUFFIX}"
    subtitles = [name for name in formats if name != "json"]  # the transcript JSON is the json output
    writer_options = WriterOptions(args.max_line_width, args.max_line_count, args.highlight_words)
    # all or none, the transcript JSON renamed last: its presence means the stage finished
    *written, json_path = write_outputs(transcript, output_dir, stem, [*subtitles, "json"], writer_options, json_path=json_path)
    for path in [json_path, *written]:
        emit(
            ProgressEvent(
                stage=STAGE, file=args.audio, done=audio.info.duration, total=audio.info.duration, kind="output", message=str(path)
            )
        )
    return json_path


def main(argv: list[str] | None = None) -> int:
    stop_quietly_on_sigterm()
    args = build_parser().parse_args(argv)
    apply_threads(args.threads)
    apply_device()
    try:
        run(args)
    except StageError as error:
        print(f"stagewhisper {STAGE}: error: {error.message}", file=sys.stderr)
        return int(error.exit_code)
    except Exception as error:  # noqa: BLE001 - anything else is a bug: full traceback for the log
        traceback.print_exc()
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        print(f"stagewhisper {STAGE}: error: unexpected failure on {args.audio} ({reason}); please report it with the log", file=sys.stderr)
        return int(ExitCode.FAILED)
    return int(ExitCode.OK)
