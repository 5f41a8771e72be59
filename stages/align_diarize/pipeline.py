"""Stage 2: a validated `Transcript` and its audio in, a validated `Result` out."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.contract import AlignmentInfo, Result, Segment, Transcript
from shared.errors import ExitCode, StageError
from shared.io import recorded_audio
from shared.provenance import build_provenance, utc_now
from stages.common.audio import DecodedAudio, check_readable, decode_audio

from .alignment.align import InterpolateMethod
from .diarization.options import DiarizeOptions
from .speakers import assign_speakers, speaker_summaries

PROVENANCE_PACKAGES = ["numpy", "torch", "torchaudio", "whisperx", "pyannote.audio", "transformers", "resemblyzer", "av", "pydantic"]

ProgressReport = Callable[[str, float, float], None]  # (step, done, total)

# A worker keeps the alignment model for its next file (loading it again costs seconds). Past half an hour of audio
# the diarization that follows holds the most memory of the run, and the model (0.4-1.2 GB) would only add to it.
KEEP_ALIGN_MODEL_UP_TO_S = 1800.0


@dataclass(frozen=True)
class Stage2Options:
    align: bool = True
    align_model: str | None = None
    model_dir: str | None = None
    align_device: str = "cpu"
    interpolate_method: InterpolateMethod = "nearest"
    return_char_alignments: bool = False
    diarize: DiarizeOptions | None = None


def find_audio(transcript: Transcript, transcript_path: Path, given: str | None) -> Path:
    """--audio if given, else where the transcript's recorded paths lead (shared.io.recorded_audio)."""
    if given:
        check_readable(Path(given))
        return Path(given)
    found = recorded_audio(transcript.audio, transcript_path)
    if found is None:
        raise StageError(
            ExitCode.BAD_AUDIO,
            f"{transcript_path}: its audio {transcript.audio.path} was not found (nor beside the transcript); pass --audio PATH",
        )
    return found


def load_matching_audio(transcript: Transcript, path: Path) -> DecodedAudio:
    """The audio, refused unless it is the very file stage 1 transcribed."""
    # stage 1 took a truncated file only with --allow_truncated, and then recorded it: the same file is fine here
    audio = decode_audio(path, allow_truncated=True if transcript.audio.warnings else None)
    if audio.info.sha256 != transcript.audio.sha256:
        raise StageError(
            ExitCode.BAD_AUDIO,
            f"{path}: sha256 {audio.info.sha256[:12]}... differs from the transcript's {transcript.audio.sha256[:12]}... "
            "(another or edited file); pass the audio stage 1 transcribed with --audio, or rerun stage 1",
        )
    return audio


def align_and_diarize(
    transcript: Transcript, audio_path: Path, options: Stage2Options, on_progress: ProgressReport | None = None
) -> Result:
    started_at, clock = utc_now(), time.perf_counter()
    report = on_progress or (lambda step, done, total: None)
    timings: dict[str, float] = {}
    audio = load_matching_audio(transcript, audio_path)
    duration = audio.info.duration
    segments = [segment.model_copy(deep=True) for segment in transcript.segments]
    alignment_info = None
    if options.align and segments:
        segments, alignment_info = _align(transcript.language, segments, audio, options, timings, report)
        if options.diarize is not None and duration > KEEP_ALIGN_MODEL_UP_TO_S:
            _release_align_model()
    diarization = None
    if options.diarize is not None:
        step = time.perf_counter()
        from .diarization.pipelines import diarize, load_pipeline

        timings["import_diarization"] = time.perf_counter() - step
        step = time.perf_counter()
        pipeline, info = load_pipeline(options.diarize)
        timings["load_diarization_pipeline"] = time.perf_counter() - step
        step = time.perf_counter()
        diarization = diarize(
            pipeline,
            info,
            audio.take_samples(),  # handed over, no name kept here: the engine frees them once the embeddings are made
            options.diarize,
            lambda name, fraction: report(f"diarize: {name}", fraction * duration, duration),
        )
        timings["diarize"] = time.perf_counter() - step
        segments = assign_speakers(segments, diarization.turns)
    provenance = build_provenance("align_diarize", PROVENANCE_PACKAGES, started_at, time.perf_counter() - clock, "cpu", timings=timings)
    return Result(
        audio=transcript.audio,
        language=transcript.language,
        segments=segments,
        word_segments=[word for segment in segments for word in segment.words or []],
        speakers=speaker_summaries(diarization.turns, diarization.embeddings) if diarization else [],
        speaker_turns=diarization.turns if diarization else [],
        model=transcript.model,
        alignment=alignment_info,
        diarization=diarization.info if diarization else None,
        provenance=[transcript.provenance, provenance],
    )


def _release_align_model() -> None:
    import gc

    from .alignment.model import load_align_model

    load_align_model.cache_clear()
    gc.collect()


def _align(
    language: str, segments: list[Segment], audio: DecodedAudio, options: Stage2Options, timings: dict[str, float], report: ProgressReport
) -> tuple[list[Segment], AlignmentInfo]:
    from .alignment.align import align_segments
    from .alignment.model import default_model_name, import_alignment_stack, load_align_model

    step = time.perf_counter()
    import_alignment_stack(options.align_model or default_model_name(language))  # torchaudio; transformers for HF models
    timings["import_alignment"] = time.perf_counter() - step
    step = time.perf_counter()
    model = load_align_model(language, options.align_model, options.model_dir, options.align_device)
    timings["load_align_model"] = time.perf_counter() - step
    step = time.perf_counter()
    duration = audio.info.duration
    aligned = align_segments(
        segments,
        audio.samples,
        model,
        options.interpolate_method,
        options.return_char_alignments,
        on_progress=lambda done: report("align", done, duration),
    )
    timings["align"] = time.perf_counter() - step
    info = AlignmentInfo(
        model=model.name,
        source=model.source,
        weights=model.weights,
        language=language,
        interpolate_method=options.interpolate_method,
        return_char_alignments=options.return_char_alignments,
        device=options.align_device,
        interpolated_words=aligned.interpolated_words,
        unaligned_segments=aligned.unaligned_segments,
    )
    return aligned.segments, info
