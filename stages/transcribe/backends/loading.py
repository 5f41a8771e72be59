"""Choosing the backend for --backend auto and loading it with its model (MLX or CTranslate2)."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from shared.contract import ModelInfo
from stages.common.cache import memoized_sha256

from ..models.resolve import BUNDLED_MODELS, load_model, model_info, resolve_ct2_model, resolve_model
from ..models.text_tokenizer import get_tokenizer
from .base import Backend


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
    path = Path(model).expanduser()
    has_ct2 = model in BUNDLED_MODELS or (path / "model.bin").is_file() or "faster-whisper" in model
    return "ctranslate2" if has_ct2 else "mlx"


class ModelRequest(Protocol):
    """The model a backend is loaded with (the pipeline's TranscribeOptions is one)."""

    model: str
    download_root: str | None
    compute_type: str | None  # None: float16 on a GPU, float32 on CPU (MLX); "default" for CTranslate2


def load_backend(name: str, options: ModelRequest, threads: int) -> LoadedBackend:
    """The backend with its model, loaded once per process for the same model (a worker's files share it)."""
    return _loaded(name, options.model, options.download_root, options.compute_type, threads)


@functools.lru_cache(maxsize=1)
def _loaded(name: str, model: str, download_root: str | None, compute_type: str | None, threads: int) -> LoadedBackend:
    options = _Request(model, download_root, compute_type)
    if name == "ctranslate2":
        from .ct2_backend import CTranslate2Backend

        folder = resolve_ct2_model(options.model, options.download_root)
        backend = CTranslate2Backend(folder, options.compute_type or "default", threads)
        source = "bundled" if options.model.startswith("bundled") else ("ctranslate2" if Path(options.model).exists() else "hf")
        info = ModelInfo(
            id=options.model, source=source, path=str(folder), sha256=memoized_sha256(folder / "model.bin"), dtype=backend.compute_type
        )  # type: ignore[arg-type]
        return LoadedBackend(backend, info)
    from .mlx_backend import MlxBackend

    compute_type = options.compute_type or default_compute_type()
    resolved = resolve_model(options.model, compute_type, options.download_root)
    model = load_model(resolved, compute_type)
    tokenizer = get_tokenizer(model.is_multilingual, num_languages=model.num_languages)
    return LoadedBackend(MlxBackend(model, compute_type, tokenizer), model_info(resolved, compute_type))


@dataclass(frozen=True)
class _Request:
    model: str
    download_root: str | None
    compute_type: str | None


def default_compute_type() -> str:
    import mlx.core as mx

    return "float16" if mx.default_device() == mx.gpu else "float32"
