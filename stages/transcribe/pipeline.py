"""Stage 1: audio in, validated `Transcript` out, decoded by mlx_whisper."""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from shared.contract import DecodingOptions, LanguageInfo, Segment, Transcript, Word
from shared.errors import ExitCode, StageError
from shared.flags import DEFAULT_MODEL
from shared.provenance import build_provenance, utc_now
from stages.common.audio import SAMPLE_RATE, DecodedAudio

from .models import load_model, model_info, resolve_model

# what mlx_whisper.transcribe accepts (the batched pipeline's options are not its own)
SEQUENTIAL_FIELDS = (
    "task language temperature initial_prompt word_timestamps condition_on_previous_text compression_ratio_threshold "
    "logprob_threshold no_speech_threshold prepend_punctuations append_punctuations hallucination_silence_threshold best_of"
).split()
PROVENANCE_PACKAGES = [
    "numpy",
    "mlx",
    "mlx-metal",
    "mlx-cpu",
    "mlx-cuda-13",
    "mlx-whisper",
    "ctranslate2",
    "faster-whisper",
    "onnxruntime",
    "silero-vad",
    "huggingface-hub",
    "av",
    "pydantic",
]

# (seconds done, seconds total)
ProgressHook = Callable[[float, float], None]


@dataclass
class TranscribeOptions:
    model: str = DEFAULT_MODEL
    download_root: str | None = None
    compute_type: str | None = None  # None: float16 on a GPU, float32 on CPU
    # DecodingOptions fields as the user gave them (language None = detect); names are mlx_whisper's own.
    decoding: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)  # extra provenance (e.g. --threads)
    timings: dict[str, float] = field(default_factory=dict)  # steps timed before transcribe() (decode_audio)


@contextlib.contextmanager
def timed(timings: dict[str, float], step: str) -> Iterator[None]:
    """Seconds the block took, into `timings[step]` (the transcript's provenance.timings)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = round(time.perf_counter() - started, 3)


def default_compute_type() -> str:
    import mlx.core as mx

    return "float16" if mx.default_device() == mx.gpu else "float32"


def transcribe(audio: DecodedAudio, options: TranscribeOptions, on_progress: ProgressHook | None = None) -> Transcript:
    backend = options.decoding.get("backend", "auto")
    if backend == "mlx_whisper":
        return _transcribe_sequential(audio, options, on_progress)
    from .batched_run import transcribe_batched

    return transcribe_batched(audio, options, on_progress)


def _transcribe_sequential(audio: DecodedAudio, options: TranscribeOptions, on_progress: ProgressHook | None) -> Transcript:
    """mlx_whisper's own long-form decoding (30 s seeks over the whole file), kept as a reference and for
    --condition_on_previous_text / --hallucination_silence_threshold, which only it implements."""
    import mlx.core as mx

    started_at, clock = utc_now(), time.perf_counter()
    timings = dict(options.timings)
    compute_type = options.compute_type or default_compute_type()
    with timed(timings, "load_model"):
        resolved = resolve_model(options.model, compute_type, options.download_root)
        model = load_model(resolved, compute_type)
    with timed(timings, "language"):
        language_info = _language(model, audio, options.decoding.get("language"), compute_type)
    fields = {k: v for k, v in options.decoding.items() if k in SEQUENTIAL_FIELDS}
    decoding = DecodingOptions(**{**fields, "language": language_info.code, "compute_type": compute_type, "backend": "mlx_whisper"})
    with timed(timings, "decode"):
        raw = _run_mlx_whisper(model, str(resolved.folder), audio, decoding, on_progress)
    segments = [_segment(index, item) for index, item in enumerate(_well_formed(raw["segments"]))]
    return Transcript(
        audio=audio.info,
        language=language_info.code,
        language_info=language_info,
        task=decoding.task,
        text="".join(segment.text for segment in segments).strip(),
        segments=segments,
        model=model_info(resolved, compute_type),
        decoding=decoding,
        provenance=build_provenance(
            "transcribe",
            PROVENANCE_PACKAGES,
            started_at,
            time.perf_counter() - clock,
            device=mx.default_device().type.name,
            extra_env=options.settings,
            timings=timings,
        ),
    )


def refuse_english_only(requested: str | None, multilingual: bool) -> None:
    """An English-only (.en) model would transcribe in English whatever it is told, and stage 2 align with the wrong model."""
    if requested and requested != "en" and not multilingual:
        raise StageError(ExitCode.USAGE, f"--language {requested}: the model is English-only; use --language en or a multilingual model")


def _language(model: Any, audio: DecodedAudio, language: str | None, compute_type: str) -> LanguageInfo:
    """The user's language, English for .en models, else detected on the first 30 s with its probability."""
    refuse_english_only(language, model.is_multilingual)
    if language:
        return LanguageInfo(code=language, probability=None, source="user")
    if not model.is_multilingual:
        return LanguageInfo(code="en", probability=None, source="model")
    import mlx.core as mx
    from mlx_whisper.audio import N_FRAMES, log_mel_spectrogram, pad_or_trim

    mel = log_mel_spectrogram(audio.samples[: 30 * SAMPLE_RATE], n_mels=model.dims.n_mels)
    mel = pad_or_trim(mel, N_FRAMES, axis=-2).astype(getattr(mx, compute_type))
    _, probabilities = model.detect_language(mel)
    code = max(probabilities, key=probabilities.get)
    return LanguageInfo(code=code, probability=round(float(probabilities[code]), 4), source="detected")


def _run_mlx_whisper(model: Any, model_key: str, audio: DecodedAudio, decoding: DecodingOptions, on_progress: ProgressHook | None) -> dict:
    import mlx_whisper

    holder = importlib.import_module("mlx_whisper.transcribe").ModelHolder
    holder.model, holder.model_path = model, model_key  # hand mlx_whisper the model we loaded and cast
    kwargs = decoding.model_dump(include=set(SEQUENTIAL_FIELDS))
    kwargs["temperature"] = tuple(kwargs["temperature"])
    with _progress_reporting(on_progress):
        return mlx_whisper.transcribe(
            audio.samples,
            path_or_hf_repo=model_key,
            verbose=False,  # False = mlx_whisper drives its progress bar, which we redirect
            fp16=decoding.compute_type == "float16",
            **kwargs,
        )


class _ProgressBar:
    """Stands in for the tqdm bar mlx_whisper opens (total in mel frames, 100 per second)."""

    def __init__(self, hook: ProgressHook | None, total: int = 0, **_: Any) -> None:
        self.hook, self.total, self.done = hook, total, 0

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def update(self, frames: int) -> None:
        self.done += frames
        if self.hook:
            self.hook(self.done / 100.0, self.total / 100.0)


@contextlib.contextmanager
def _progress_reporting(hook: ProgressHook | None) -> Iterator[None]:
    module = importlib.import_module("mlx_whisper.transcribe")
    original = module.tqdm
    module.tqdm = SimpleNamespace(tqdm=lambda *args, **kwargs: _ProgressBar(hook, **kwargs))
    try:
        yield
    finally:
        module.tqdm = original


def _well_formed(raw_segments: list[dict]) -> list[dict]:
    """Whisper emits empty timestamp-only segments, and on garbage audio can emit reversed timestamps: skip both."""
    kept = []
    for item in raw_segments:
        if not item["text"].strip():
            continue
        if item["end"] < item["start"]:
            print(f"warning: skipped a segment with reversed times ({item['start']} > {item['end']}): {item['text']!r}", file=sys.stderr)
            continue
        kept.append(item)
    return kept


def _segment(index: int, raw: dict) -> Segment:
    start, end = round(raw["start"], 3), round(raw["end"], 3)
    words = None
    if "words" in raw:
        words = [_word(w) for w in raw["words"]]
        # mlx_whisper moves segments onto their words but may keep a timestamp token past a word that is too
        # long: the segment then covers the word (never the word squeezed into the segment, to zero length)
        start, end = min([start, *(w.start for w in words)]), max([end, *(w.end for w in words)])
    return Segment(
        id=index,
        start=start,
        end=end,
        text=raw["text"],
        avg_logprob=raw.get("avg_logprob"),
        no_speech_prob=_clamp(raw.get("no_speech_prob")),
        compression_ratio=raw.get("compression_ratio"),
        temperature=raw.get("temperature"),
        tokens=[int(token) for token in raw.get("tokens", [])],
        words=words,
    )


def _word(raw: dict) -> Word:
    start = round(raw["start"], 3)
    return whisperx_word(raw["word"], start, max(round(raw["end"], 3), start), raw.get("probability"))


def whisperx_word(text: str, start: float, end: float, probability: float | None) -> Word:
    """A word as WhisperX writes one: no leading space (Whisper's tokens carry it; writers join words with one, or
    none for ja/zh, as WhisperX does). `score` is the word's probability until stage 2's CTC alignment replaces it,
    so `--no_align` results have a confidence per word where WhisperX has a score."""
    probability = _clamp(probability)
    return Word(word=text.strip(), start=start, end=end, probability=probability, score=probability)


def _clamp(probability: float | None) -> float | None:
    return None if probability is None else min(1.0, max(0.0, float(probability)))
