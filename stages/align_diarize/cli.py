"""`python -m stages.align_diarize TRANSCRIPT.json`: stage 1's transcript in, the final result out.

Aligns words with a wav2vec2 CTC model and, with --diarize, gives every word a speaker. Writes
<name>.json (the result), the requested subtitle formats and, when diarizing, <name>.rttm.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from shared.contract import Transcript
from shared.errors import ExitCode
from shared.flags import ALIGN_FLAGS, DIARIZE_FLAGS, HF_TOKEN_FLAG, STAGE2_MODEL_DIR_FLAG, THREADS_FLAG, WRITER_FLAGS, add_flags
from shared.io import TRANSCRIPT_SUFFIX, load_document
from shared.progress import ProgressEvent, emit, stop_quietly_on_sigterm
from shared.provenance import THREAD_ENV_VARS
from stages.common.worker import failure

from .diarization.options import DiarizeOptions  # light: no torch or pyannote

STAGE = "align_diarize"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.align_diarize", description=__doc__)
    parser.add_argument("transcript", help=f"stage 1's JSON (<name>{TRANSCRIPT_SUFFIX})")
    parser.add_argument("--audio", default=None, help="the audio stage 1 transcribed (default: the path recorded in the transcript)")
    parser.add_argument("--output_dir", "-o", default=None, help="folder for the outputs (default: the transcript's folder)")
    parser.add_argument(
        "--output_name", default=None, help="base name of the outputs (default: the transcript's, without .transcript.json)"
    )
    add_flags(parser, ALIGN_FLAGS + DIARIZE_FLAGS + WRITER_FLAGS + (STAGE2_MODEL_DIR_FLAG, HF_TOKEN_FLAG, THREADS_FLAG))
    return parser


def apply_threads(threads: int) -> None:
    """Must run before torch loads: its thread pools read these once."""
    if threads > 0:
        os.environ.update({name: str(threads) for name in THREAD_ENV_VARS})


def output_stem(transcript_path: Path) -> str:
    name = transcript_path.name
    return name[: -len(TRANSCRIPT_SUFFIX)] if name.endswith(TRANSCRIPT_SUFFIX) else transcript_path.stem


def diarize_options(args: argparse.Namespace) -> DiarizeOptions:
    return DiarizeOptions(
        pipeline=args.diarize_model,
        hf_token=args.hf_token or os.environ.get("HF_TOKEN") or None,
        model_dir=args.model_dir,
        num_speakers=args.num_speakers,
        min_speakers=args.min_speakers,
        max_speakers=args.max_speakers,
        speaker_embeddings=args.speaker_embeddings,
        speed=args.diarize_speed,
    )


def run(args: argparse.Namespace) -> Path:
    from shared.writers import WriterOptions, result_formats, write_outputs

    from .pipeline import Stage2Options, align_and_diarize, find_audio

    formats = result_formats(args.output_format, args.diarize)  # fail on a bad format before any work
    transcript_path = Path(args.transcript)
    transcript = load_document(transcript_path, Transcript)
    audio_path = find_audio(transcript, transcript_path, args.audio)
    options = Stage2Options(
        align=not args.no_align,
        align_model=args.align_model,
        model_dir=args.model_dir,
        align_device=args.align_device,
        interpolate_method=args.interpolate_method,
        return_char_alignments=args.return_char_alignments,
        diarize=diarize_options(args) if args.diarize else None,
    )

    def report(step: str, done: float, total: float) -> None:
        emit(ProgressEvent(stage=STAGE, file=str(transcript_path), done=done, total=total, message=step))

    result = align_and_diarize(transcript, audio_path, options, on_progress=report)
    output_dir = Path(args.output_dir) if args.output_dir else transcript_path.parent
    stem = args.output_name or output_stem(transcript_path)
    writer_options = WriterOptions(args.max_line_width, args.max_line_count, args.highlight_words)
    # all or none, the JSON always and renamed last: its presence means the stage finished
    *written, json_path = write_outputs(result, output_dir, stem, [*formats, "json"], writer_options)
    for path in [json_path, *written]:
        emit(ProgressEvent(stage=STAGE, file=str(transcript_path), done=1, total=1, kind="output", message=str(path)))
    return json_path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    stop_quietly_on_sigterm()
    apply_threads(args.threads)
    try:
        run(args)
    except Exception as error:  # noqa: BLE001 - a StageError is one line; anything else a bug, with its traceback
        return failure(STAGE, args.transcript, error)[0]
    return int(ExitCode.OK)
