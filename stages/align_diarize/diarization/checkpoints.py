"""Loading pyannote checkpoints under torch >= 2.6, whose `torch.load` unpickles only allow-listed types.

pyannote 3.3 checkpoints pickle its task specifications and omegaconf hyper-parameters; we allow
exactly those types instead of turning the safe loader off (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import torch


def _allowed_types() -> list[Any]:
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.dictconfig import DictConfig
    from omegaconf.listconfig import ListConfig
    from omegaconf.nodes import AnyNode
    from pyannote.audio.core.model import Introspection
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from torch.torch_version import TorchVersion

    pyannote_types = [Specifications, Problem, Resolution, Introspection]
    omegaconf_types = [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode]
    plain_types = [Any, defaultdict, dict, list, int]  # appear as pickle GLOBALs in these checkpoints
    return [TorchVersion, *pyannote_types, *omegaconf_types, *plain_types]


@contextlib.contextmanager
def pyannote_checkpoints_allowed() -> Iterator[None]:
    with torch.serialization.safe_globals(_allowed_types()):
        yield
