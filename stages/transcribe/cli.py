"""`python -m stages.transcribe AUDIO`: one audio file in, one validated transcript JSON out."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shared.contract import DecodingOptions, Transcript
from shared.errors import ExitCode, StageError
from shared.flags import DEVICE_ENV, THREADS_FLAG, TRANSCRIBE_FLAGS, VAD_FLAG_NAMES, WRITER_FLAGS, add_flags
from shared.io import TRANSCRIPT_SUFFIX
from shared.progress import ProgressEvent, emit, stop_quietly_on_sigterm
from shared.provenance import THREAD_ENV_VARS
from stages.common.worker import failure

if TYPE_CHECKING:
    from stages.common.audio import DecodedAudio

    from .pipeline.options import TranscribeOptions

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


@dataclass
class FileJob:
    """One file's command line made ready: its audio decoded and its options built (formats checked first)."""

    args: argparse.Namespace
    audio: DecodedAudio
    options: TranscribeOptions
    formats: list[str]


def read_job(args: argparse.Namespace) -> FileJob:
    from shared.writers import expand_formats
    from stages.common.audio import decode_audio

    from .pipeline.options import TranscribeOptions

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
    return FileJob(args, audio, options, formats)


def progress_of(args: argparse.Namespace) -> Callable[[float, float], None]:
    def report(done: float, total: float) -> None:
        emit(ProgressEvent(stage=STAGE, file=args.audio, done=done, total=total))

    return report


def write_transcript(job: FileJob, transcript: Transcript) -> Path:
    """All outputs or none, the transcript JSON renamed last: its presence means the stage finished."""
    from shared.writers import WriterOptions, write_outputs

    args = job.args
    output_dir = Path(args.output_dir)
    stem = args.output_name or Path(args.audio).stem
    json_path = Path(args.output) if args.output else output_dir / f"{stem}{TRANSCRIPT_SUFFIX}"
    subtitles = [name for name in job.formats if name != "json"]  # the transcript JSON is the json output
    writer_options = WriterOptions(args.max_line_width, args.max_line_count, args.highlight_words)
    *written, json_path = write_outputs(transcript, output_dir, stem, [*subtitles, "json"], writer_options, json_path=json_path)
    duration = job.audio.info.duration
    for path in [json_path, *written]:
        emit(ProgressEvent(stage=STAGE, file=args.audio, done=duration, total=duration, kind="output", message=str(path)))
    return json_path


def run(args: argparse.Namespace) -> Path:
    from .pipeline.transcribe import transcribe

    job = read_job(args)
    return write_transcript(job, transcribe(job.audio, job.options, on_progress=progress_of(args)))


def main(argv: list[str] | None = None) -> int:
    stop_quietly_on_sigterm()
    args = build_parser().parse_args(argv)
    apply_threads(args.threads)
    apply_device()
    try:
        run(args)
    except Exception as error:  # noqa: BLE001 - a StageError is one line; anything else a bug, with its traceback
        return failure(STAGE, args.audio, error)[0]
    return int(ExitCode.OK)
