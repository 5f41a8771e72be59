"""Stage 1 through the batched pipeline: pick and load a backend, chunk, choose the language, decode, build the Transcript."""

from __future__ import annotations

import importlib.util
import sys
import time
import types
from dataclasses import dataclass
from typing import Any

from shared.contract import DecodingOptions, LanguageInfo, Transcript, VadSettings
from shared.errors import ExitCode, StageError
from shared.provenance import build_provenance, utc_now
from stages.common.audio import DecodedAudio

from ..backends.loading import LoadedBackend, choose_backend, load_backend
from ..models.text_tokenizer import get_tokenizer
from ..vad.options import SpeechChunk, VadOptions
from .batched import ChunkStream, speech_chunks, transcribe_chunks, transcribe_streams
from .decoded import RawSegment
from .language import batched_language
from .options import PROVENANCE_PACKAGES, ProgressHook, TranscribeOptions, timed
from .segments import chunk_segment
from .words import word_time_shift


def vad_options(decoding: dict[str, Any]) -> VadOptions | None:
    if decoding.get("no_vad"):
        return None
    return VadOptions(
        method=decoding.get("vad_method") or "silero",
        onset=decoding.get("vad_onset", 0.5),
        offset=decoding.get("vad_offset"),
        chunk_size=decoding.get("chunk_size", 30.0),
    )


def skip_package_init(package: str) -> None:
    """Let `package.sub` import without running `package/__init__.py`. mlx_whisper's imports its transcribe module,
    and with it scipy.signal and numba: 2.2 s per process, which the batched path (no word timings) never uses."""
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return
    stub = types.ModuleType(package)
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules[package] = stub


# Flags only mlx_whisper's sequential long-form decoding implements, with the value that means "off".
SEQUENTIAL_ONLY = {"condition_on_previous_text": False, "hallucination_silence_threshold": None}


def refuse_sequential_only(decoding: dict[str, Any]) -> None:
    for name, off in SEQUENTIAL_ONLY.items():
        if decoding.get(name, off) != off:
            raise StageError(
                ExitCode.USAGE,
                f"--{name} needs --backend mlx_whisper (batched chunks are decoded independently; "
                "--interleaved_context True carries each stream's text forward)",
            )


@dataclass
class PreparedFile:
    """A file made ready for decoding (backend loaded, VAD chunks, language), waiting for its batches."""

    audio: DecodedAudio
    options: TranscribeOptions
    loaded: LoadedBackend
    chunks: list[SpeechChunk]
    language: LanguageInfo
    tokenizer: Any
    decoding: DecodingOptions
    timings: dict[str, float]
    started_at: str
    clock: float
    on_progress: ProgressHook | None = None

    def stream(self) -> ChunkStream:
        return ChunkStream(self.audio.samples, self.chunks, self.tokenizer, self.on_progress)

    def shared_settings(self) -> DecodingOptions:
        """What must be equal for files to share batches: every decoding setting but the language."""
        return self.decoding.model_copy(update={"language": None})


def transcribe_batched(audio: DecodedAudio, options: TranscribeOptions, on_progress: ProgressHook | None = None) -> Transcript:
    prepared = prepare_batched(audio, options, on_progress)
    with timed(prepared.timings, "decode"):  # word timings included (--word_timestamps True)
        raw = transcribe_chunks(prepared.loaded.backend, prepared.tokenizer, audio.samples, prepared.chunks, prepared.decoding, on_progress)
    return finish_batched(prepared, raw)


def transcribe_batched_together(files: list[PreparedFile]) -> list[Transcript]:
    """Files of the same model and settings decoded in shared batches (each file's transcript is what decoding it
    alone gives); the decode time, shared, is recorded in each file's timings with the number of files."""
    first = files[0]
    if any(f.loaded is not first.loaded or f.shared_settings() != first.shared_settings() for f in files):
        raise ValueError("files decoded together need the same backend and decoding settings")
    started = time.perf_counter()
    raws = transcribe_streams(first.loaded.backend, [f.stream() for f in files], first.decoding)
    seconds = round(time.perf_counter() - started, 3)
    transcripts = []
    for prepared, raw in zip(files, raws, strict=True):
        prepared.timings["decode"] = seconds
        prepared.options.settings["decoded_with_files"] = str(len(files))
        transcripts.append(finish_batched(prepared, raw))
    return transcripts


def prepare_batched(audio: DecodedAudio, options: TranscribeOptions, on_progress: ProgressHook | None = None) -> PreparedFile:
    refuse_sequential_only(options.decoding)
    skip_package_init("mlx_whisper")
    started_at, clock = utc_now(), time.perf_counter()
    wanted = dict(options.decoding)
    timings = dict(options.timings)  # README: per-step timings in provenance
    name = choose_backend(wanted.get("backend", "auto"), options.model)
    with timed(timings, "load_model"):
        loaded = load_backend(name, options, threads=0)  # 0: the thread variables the CLI set; once per process
    backend = loaded.backend
    vad = vad_options(wanted)
    with timed(timings, "vad"):
        chunks = speech_chunks(audio.samples, vad)
    with timed(timings, "language"):
        language = batched_language(backend, audio, chunks, wanted.get("language"))
    tokenizer = get_tokenizer(backend.is_multilingual, num_languages=backend.num_languages, language=language.code, task=wanted.get("task"))
    fields = {k: v for k, v in wanted.items() if k in DecodingOptions.model_fields}
    shift = word_time_shift(options.model, wanted.get("word_time_shift"))
    fields["word_time_shift"] = shift if wanted.get("word_timestamps") else 0.0  # what was applied: the transcript records it
    settings = (
        None if vad is None else VadSettings(method=vad.method, onset=vad.onset, offset=vad.resolved_offset, chunk_size=vad.chunk_size)
    )  # type: ignore[arg-type]
    decoding = DecodingOptions(
        **{**fields, "language": language.code, "compute_type": backend.compute_type, "backend": name, "vad": settings}
    )
    return PreparedFile(audio, options, loaded, chunks, language, tokenizer, decoding, timings, started_at, clock, on_progress)


def finish_batched(prepared: PreparedFile, raw: list[RawSegment]) -> Transcript:
    decoding = prepared.decoding
    segments = [chunk_segment(index, item, decoding.word_timestamps) for index, item in enumerate(raw)]
    return Transcript(
        audio=prepared.audio.info,
        language=prepared.language.code,
        language_info=prepared.language,
        task=decoding.task,
        text="".join(segment.text for segment in segments).strip(),
        segments=segments,
        model=prepared.loaded.model,
        decoding=decoding,
        provenance=build_provenance(
            "transcribe",
            PROVENANCE_PACKAGES,
            prepared.started_at,
            time.perf_counter() - prepared.clock,
            device=prepared.loaded.backend.device,
            extra_env=prepared.options.settings,
            timings=prepared.timings,
        ),
    )
