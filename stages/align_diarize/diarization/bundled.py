"""The bundled, fully offline speaker-diarization pipeline: pyannote.audio's own `SpeakerDiarization`
with weights that ship inside PyPI wheels of the stage-2 env (no model hub).

- segmentation: whisperx's PyanNet checkpoint (`whisperx/assets/pytorch_model.bin`, pyannote/segmentation v2)
- embedding: Resemblyzer's GE2E d-vector (`resemblyzer/pretrained.pt`), see `ge2e.py`
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from pyannote.audio import Model
from pyannote.audio.pipelines import SpeakerDiarization

from shared.errors import ExitCode, StageError

from .ge2e import GE2EEmbedding, resemblyzer_weights_path

BUNDLED_PIPELINE = "bundled"

# Chosen with benchmarks/diarization_tuning.py on the sample call (x1), repeated 10x (x10) and repeated with other
# gains/offsets/noise (x10v), DER with 0.25 s collar, overlap scored. Measured: x1 1.3 %, x10 1.3 %, x10v 9.8 % with
# the speaker count unknown (1.5 % given --num_speakers 2). With the count unknown, only 0.25-0.26 gives <= 10 % on
# all three (0.24: x10v 24 %; 0.27: x1 43 %, one speaker): GE2E's same/cross-speaker margin is small, so pass
# --num_speakers / --min_speakers when known (any threshold 0.22-0.33 then gives <= 1.5 %). min_cluster_size above
# the number of embeddings means pyannote's 10 % of them: tiny clusters fold into the big ones.
BUNDLED_PARAMS: dict[str, Any] = {
    "segmentation_step": 0.1,
    "min_speech_seconds": 1.25,
    "embedding_exclude_overlap": False,
    "embedding_batch_size": 32,
    "segmentation_batch_size": 32,
    "hyper_parameters": {
        "segmentation": {"threshold": 0.5, "min_duration_off": 0.0},
        "clustering": {"method": "average", "threshold": 0.255, "min_cluster_size": 1000},
    },
}


def bundled_assets() -> dict[str, Path]:
    """The two weight files the pipeline loads (for provenance hashes); raises if one is missing."""
    assets = {"segmentation": whisperx_segmentation_path(), "embedding": resemblyzer_weights_path()}
    for name, path in assets.items():
        if path is None:
            package = "whisperx" if name == "segmentation" else "Resemblyzer"
            raise StageError(
                ExitCode.MODEL_UNAVAILABLE,
                f"bundled diarization: the {name} weights of the {package} package are missing: run `stagewhisper setup`",
            )
    return assets  # type: ignore[return-value]  # no None left


def whisperx_segmentation_path() -> Path | None:
    """whisperx's bundled segmentation checkpoint, found without importing whisperx (a slow import)."""
    spec = importlib.util.find_spec("whisperx")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "assets" / "pytorch_model.bin"
    return path if path.is_file() else None


def load_segmentation_model(checkpoint: Path) -> Model:
    """Load the Lightning checkpoint under torch>=2.6's weights_only unpickler.

    Why: the checkpoint pickles pyannote task/omegaconf hparams objects; allow exactly those, not arbitrary code.
    """
    from collections import defaultdict
    from typing import Any as TypingAny

    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.listconfig import ListConfig
    from omegaconf.nodes import AnyNode
    from pyannote.audio.core.model import Introspection
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from torch.torch_version import TorchVersion

    allowed = [TorchVersion, Specifications, Problem, Resolution, Introspection, ListConfig, ContainerMetadata, Metadata, AnyNode]
    allowed += [TypingAny, defaultdict, dict, list, int]  # plain types that appear as pickle GLOBALs in it
    with torch.serialization.safe_globals(allowed):
        return Model.from_pretrained(str(checkpoint), map_location=torch.device("cpu"))


def load_bundled_pipeline(params: dict[str, Any] | None = None) -> SpeakerDiarization:
    """pyannote's SpeakerDiarization on CPU with the bundled weights and tuned parameters (`params` overrides them)."""
    params = params or BUNDLED_PARAMS
    assets = bundled_assets()
    pipeline = SpeakerDiarization(
        segmentation=load_segmentation_model(assets["segmentation"]),
        segmentation_step=params["segmentation_step"],
        embedding=GE2EEmbedding.from_resemblyzer(assets["embedding"], min_speech_seconds=params["min_speech_seconds"]),
        embedding_exclude_overlap=params["embedding_exclude_overlap"],
        clustering="AgglomerativeClustering",
        embedding_batch_size=params["embedding_batch_size"],
        segmentation_batch_size=params["segmentation_batch_size"],
    )
    pipeline.instantiate(params["hyper_parameters"])
    return pipeline.to(torch.device("cpu"))
