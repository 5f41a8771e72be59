"""Stage 1 through the batched pipeline: pick and load a backend, chunk, vote the language, decode, build the Transcript."""

from __future__ import annotations

import importlib.util
import platform
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.contract import DecodingOptions, LanguageInfo, ModelInfo, Segment, Transcript, VadSettings
from shared.errors import ExitCode, StageError
from shared.provenance import build_provenance, utc_now
from stages.common.audio import DecodedAudio
from stages.common.cache import memoized_sha256

from .backend import Backend
from .batched import RawSegment, speech_chunks, transcribe_chunks, vote_language
from .pipeline import PROVENANCE_PACKAGES, ProgressHook, TranscribeOptions, refuse_english_only, timed, whisperx_word
from .vad import VadOptions

LANGUAGE_VOTE_CHUNKS = 8


@dataclass
class LoadedBackend:
    backend: Backend
    model: ModelInfo


def apple_silicon() -> bool:
    return platform.system() == "Darwin" and platform.machine() == "arm64"


def choose_backend(requested: str, model: str) -> str:
    """auto: MLX on Apple silicon and on an MLX GPU; CTranslate2 on other CPUs when the model has CT2 weights
    (MLX's CPU kernels are 3-25x slower than CTranslate2's on x86: benchmarks/README.md)."""
    if requested != "auto":
        return requested
    import mlx.core as mx

    if apple_silicon() or mx.default_device() == mx.gpu:
        return "mlx"
    from .models import BUNDLED_MODELS

    path = Path(model).expanduser()
    has_ct2 = model in BUNDLED_MODELS or (path / "model.bin").is_file() or "faster-whisper" in model
    return "ctranslate2" if has_ct2 else "mlx"


def load_backend(name: str, options: TranscribeOptions, threads: int) -> LoadedBackend:
    if name == "ctranslate2":
        from .backend_ct2 import CTranslate2Backend, resolve_ct2_model

        folder = resolve_ct2_model(options.model, options.download_root)
        backend = CTranslate2Backend(folder, options.compute_type or "default", threads)
        source = "bundled" if options.model.startswith("bundled") else ("ctranslate2" if Path(options.model).exists() else "hf")
        info = ModelInfo(
            id=options.model, source=source, path=str(folder), sha256=memoized_sha256(folder / "model.bin"), dtype=backend.compute_type
        )  # type: ignore[arg-type]
        return LoadedBackend(backend, info)
    from .backend_mlx import MlxBackend
    from .models import load_model, model_info, resolve_model
    from .pipeline import default_compute_type
    from .text_tokenizer import get_tokenizer

    compute_type = options.compute_type or default_compute_type()
    resolved = resolve_model(options.model, compute_type, options.download_root)
    model = load_model(resolved, compute_type)
    tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages)
    return LoadedBackend(MlxBackend(model, compute_type, tokenizer), model_info(resolved, compute_type))


def vad_options(decoding: dict[str, Any]) -> VadOptions | None:
    if decoding.get("no_vad"):
        return None
    return VadOptions(
        method=decoding.get("vad_method") or "silero",
        onset=decoding.get("vad_onset", 0.5),
        offset=decoding.get("vad_offset"),
        chunk_size=decoding.get("chunk_size", 30.0),
    )


def _language(backend: Backend, audio: DecodedAudio, chunks: list, requested: str | None) -> LanguageInfo:
    refuse_english_only(requested, backend.is_multilingual)
    if requested:
        return LanguageInfo(code=requested, source="user")
    if not backend.is_multilingual:
        return LanguageInfo(code="en", source="model")
    if not chunks:
        return LanguageInfo(code="en", source="detected", votes=[])  # nothing to hear: any language gives no text
    return vote_language(backend, audio.samples, chunks, LANGUAGE_VOTE_CHUNKS)


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


def transcribe_batched(audio: DecodedAudio, options: TranscribeOptions, on_progress: ProgressHook | None = None) -> Transcript:
    refuse_sequential_only(options.decoding)
    skip_package_init("mlx_whisper")
    from .text_tokenizer import get_tokenizer

    started_at, clock = utc_now(), time.perf_counter()
    wanted = dict(options.decoding)
    timings = dict(options.timings)  # README: per-step timings in provenance
    name = choose_backend(wanted.get("backend", "auto"), options.model)
    with timed(timings, "load_model"):
        loaded = load_backend(name, options, threads=0)  # 0: the thread variables the CLI set
    backend = loaded.backend
    vad = vad_options(wanted)
    with timed(timings, "vad"):
        chunks = speech_chunks(audio.samples, vad)
    with timed(timings, "language"):
        language = _language(backend, audio, chunks, wanted.get("language"))
    tokenizer = get_tokenizer(backend.is_multilingual, num_languages=backend.num_languages, language=language.code, task=wanted.get("task"))
    fields = {k: v for k, v in wanted.items() if k in DecodingOptions.model_fields}
    settings = (
        None if vad is None else VadSettings(method=vad.method, onset=vad.onset, offset=vad.resolved_offset, chunk_size=vad.chunk_size)
    )  # type: ignore[arg-type]
    decoding = DecodingOptions(
        **{**fields, "language": language.code, "compute_type": backend.compute_type, "backend": name, "vad": settings}
    )
    with timed(timings, "decode"):  # word timings included (--word_timestamps True)
        raw = transcribe_chunks(backend, tokenizer, audio.samples, chunks, decoding, on_progress)
    segments = [_segment(index, item, decoding.word_timestamps) for index, item in enumerate(raw)]
    return Transcript(
        audio=audio.info,
        language=language.code,
        language_info=language,
        task=decoding.task,
        text="".join(segment.text for segment in segments).strip(),
        segments=segments,
        model=loaded.model,
        decoding=decoding,
        provenance=build_provenance(
            "transcribe",
            PROVENANCE_PACKAGES,
            started_at,
            time.perf_counter() - clock,
            device=backend.device,
            extra_env=options.settings,
            timings=timings,
        ),
    )


def _segment(index: int, raw: RawSegment, with_words: bool) -> Segment:
    decoded = raw.decoded
    start, end = round(raw.start, 3), round(raw.end, 3)
    words = [whisperx_word(w["word"], w["start"], w["end"], w["probability"]) for w in raw.words]  # inside: fit_segments_to_words
    return Segment(
        id=index,
        start=start,
        end=end,
        text=raw.text,
        avg_logprob=round(decoded.generated.avg_logprob, 4),
        no_speech_prob=round(min(max(decoded.generated.no_speech_prob, 0.0), 1.0), 4),
        compression_ratio=round(decoded.compression_ratio, 4),
        temperature=decoded.temperature,
        tokens=raw.tokens,
        words=words if with_words else None,
    )
