"""Importing this module imports pyannote.audio without transformers: import it before anything imports pyannote.

Why: pyannote.audio's Model is a Lightning module; Lightning imports torchmetrics, whose BERTScore, InfoLM and CLIPScore
modules import transformers' auto models whenever transformers is installed (here it is, for HF alignment models):
1-3 s of process start for metrics that diarization never computes. While pyannote.audio is imported, torchmetrics'
requirement checks (lightning_utilities' RequirementCache) answer "not installed" for transformers alone, so those
modules skip it; the answer stays cached in torchmetrics only. transformers itself stays importable and unchanged
(HF alignment, speechbrain), and pyannote's pipelines never call those metrics. tests/test_align_start.py checks
both. If torchmetrics is already imported, or lightning_utilities changes, nothing is hidden: it is only slower.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

HIDDEN = "transformers"


@contextlib.contextmanager
def requirement_checks_without(distribution: str) -> Iterator[None]:
    """lightning_utilities' RequirementCache checks first made inside this block report DISTRIBUTION missing."""
    try:
        from lightning_utilities.core.imports import RequirementCache
        from packaging.requirements import Requirement
    except ImportError:
        yield
        return
    original = getattr(RequirementCache, "_check_requirement", None)
    if original is None:
        yield
        return

    def check(self: Any) -> None:
        try:
            name = Requirement(self.requirement).name if self.requirement else None
        except ValueError:
            name = None
        if name != distribution:
            original(self)
            return
        self.available = False
        self.message = f"Requirement {self.requirement!r} treated as not met while pyannote.audio is imported (stagewhisper)"

    RequirementCache._check_requirement = check  # type: ignore[method-assign]
    try:
        yield
    finally:
        RequirementCache._check_requirement = original  # type: ignore[method-assign]


if "torchmetrics" not in sys.modules:
    with requirement_checks_without(HIDDEN):
        import pyannote.audio  # noqa: F401
        import pyannote.audio.pipelines  # noqa: F401
