"""mlx_whisper's own long-form decoding (--backend mlx_whisper): audio in, validated `Transcript` out."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

from shared.contract import DecodingOptions, Transcript
from shared.provenance import build_provenance, utc_now
from stages.common.audio import DecodedAudio

from ..backends.loading import default_compute_type
from ..models.resolve import load_model, model_info, resolve_model
from .language import sequential_language
from .options import PROVENANCE_PACKAGES, ProgressHook, TranscribeOptions, timed
from .segments import mlx_whisper_segment, well_formed

# what mlx_whisper.transcribe accepts (the batched pipeline's options are not its own)
SEQUENTIAL_FIELDS = (
    "task language temperature initial_prompt word_timestamps condition_on_previous_text compression_ratio_threshold "
    "logprob_threshold no_speech_threshold prepend_punctuations append_punctuations hallucination_silence_threshold best_of"
).split()


def transcribe_sequential(audio: DecodedAudio, options: TranscribeOptions, on_progress: ProgressHook | None) -> Transcript:
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
        language_info = sequential_language(model, audio, options.decoding.get("language"), compute_type)
    fields = {k: v for k, v in options.decoding.items() if k in SEQUENTIAL_FIELDS}
    decoding = DecodingOptions(**{**fields, "language": language_info.code, "compute_type": compute_type, "backend": "mlx_whisper"})
    with timed(timings, "decode"):
        raw = _run_mlx_whisper(model, str(resolved.folder), audio, decoding, on_progress)
    segments = [mlx_whisper_segment(index, item) for index, item in enumerate(well_formed(raw["segments"]))]
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
