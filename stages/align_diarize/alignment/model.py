"""Loading the wav2vec2 CTC model that aligns words, through whisperx's `load_align_model`.

whisperx picks the default per language (torchaudio bundles for en/fr/de/es/it, HF repos for the
rest) and loads a local folder like an HF repo. We add what it lacks: a one-line error when the
model is neither cached nor downloadable, and the hash of the weights that ran.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import torch

from shared.contract import WeightsFile
from shared.errors import ExitCode, StageError
from stages.common.cache import memoized_sha256

WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")
WAYS_OUT = "pass --align_model PATH (a local wav2vec2 CTC folder) or --no_align"


@dataclass
class AlignModel:
    network: torch.nn.Module
    dictionary: dict[str, int]  # lower-case character -> CTC label
    kind: Literal["torchaudio", "huggingface"]
    blank_id: int
    name: str
    source: Literal["torchaudio", "hf", "local"]
    weights: list[WeightsFile]
    language: str
    device: str


def whisperx_alignment() -> ModuleType:
    """`whisperx.alignment` without running `whisperx/__init__.py`.

    Why: that __init__ imports whisperx's whole pipeline (faster-whisper, ctranslate2, pyannote, lightning: ~4 s) for
    names we never use; alignment.py needs only its siblings audio/utils/types. An empty package module stands in
    for `whisperx`, its submodules load from the real folder. Left alone if whisperx is already imported.
    """
    if "whisperx" not in sys.modules:
        spec = importlib.util.find_spec("whisperx")
        if spec is None or not spec.submodule_search_locations:
            raise StageError(ExitCode.ENV_BROKEN, "whisperx is not installed in the align_diarize environment: run `stagewhisper setup`")
        package = ModuleType("whisperx")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["whisperx"] = package
    return importlib.import_module("whisperx.alignment")


def default_model_name(language: str) -> str:
    alignment = whisperx_alignment()
    name = alignment.DEFAULT_ALIGN_MODELS_TORCH.get(language) or alignment.DEFAULT_ALIGN_MODELS_HF.get(language)
    if name is None:
        raise StageError(ExitCode.MODEL_UNAVAILABLE, f"no default alignment model for language {language!r}; {WAYS_OUT}")
    return name


@functools.lru_cache(maxsize=2)  # once per process: a worker's files in one language share it (read-only in inference)
def load_align_model(language: str, name: str | None = None, model_dir: str | None = None, device: str = "cpu") -> AlignModel:
    import torchaudio

    name = name or default_model_name(language)
    source = _source_of(name, torchaudio.pipelines.__all__)
    if source == "torchaudio":
        checkpoint = _torchaudio_checkpoint(name, model_dir)
        if not checkpoint.exists() and _offline():
            raise StageError(
                ExitCode.MODEL_UNAVAILABLE, f"alignment model {name} is not in {checkpoint.parent} and HF_HUB_OFFLINE is set; {WAYS_OUT}"
            )
    try:
        with contextlib.redirect_stdout(sys.stderr):  # whisperx and torch.hub print; stdout carries progress events
            network, metadata = whisperx_alignment().load_align_model(language, device, model_name=name, model_dir=model_dir)
    except (OSError, ValueError, RuntimeError) as error:
        raise StageError(ExitCode.MODEL_UNAVAILABLE, f"alignment model {name} could not be loaded ({_reason(error)}); {WAYS_OUT}") from None
    weights = _weights(name, source, model_dir)
    return AlignModel(
        network=network.eval(),
        dictionary=metadata["dictionary"],
        kind=metadata["type"],
        blank_id=_blank_id(metadata["dictionary"]),
        name=name,
        source=source,
        weights=[WeightsFile(name=path.name, sha256=memoized_sha256(path)) for path in weights],
        language=language,
        device=device,
    )


def _source_of(name: str, torchaudio_bundles: list[str]) -> Literal["torchaudio", "hf", "local"]:
    if name in torchaudio_bundles:
        return "torchaudio"
    if Path(name).expanduser().is_dir():
        return "local"
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # a path, not an HF "org/name" id
        raise StageError(ExitCode.MODEL_UNAVAILABLE, f"alignment model folder {name} does not exist; {WAYS_OUT}")
    return "hf"


def _torchaudio_checkpoint(bundle_name: str, model_dir: str | None) -> Path:
    """Where torch.hub keeps (or would download) the bundle's weights."""
    import torchaudio

    bundle = getattr(torchaudio.pipelines, bundle_name)
    folder = Path(model_dir) if model_dir else Path(torch.hub.get_dir()) / "checkpoints"
    return folder / os.path.basename(bundle._path)  # noqa: SLF001 - torchaudio names the file only here


def _weights(name: str, source: str, model_dir: str | None) -> list[Path]:
    if source == "torchaudio":
        return [_torchaudio_checkpoint(name, model_dir)]
    if source == "local":
        folder = Path(name).expanduser()
    else:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(name, cache_dir=model_dir, local_files_only=True))  # just loaded: cached
    return [folder / file for file in WEIGHT_FILE_NAMES if (folder / file).exists()][:1]


def _blank_id(dictionary: dict[str, int]) -> int:
    """whisperx's rule: the '[pad]' or '<pad>' label if there is one, else 0."""
    return next((code for char, code in dictionary.items() if char in ("[pad]", "<pad>")), 0)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[-1][:200] if text else type(error).__name__
