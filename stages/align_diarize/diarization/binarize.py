"""pyannote's hysteresis binarization of (chunks, frames, speakers) segmentations, with memory that does not grow
with the file: stock builds a Python list of every well-defined frame index (`zip_longest` over all rows), which is
1.2 GB at 4 hours of `bundled` (28800 windows x 293 frames x 3 speakers). Same 0/1 values, computed in blocks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from pyannote.audio.pipelines import speaker_diarization
from pyannote.audio.utils.signal import binarize as stock_binarize
from pyannote.core import SlidingWindowFeature

ROWS_PER_BLOCK = 4096  # (chunk, speaker) rows at a time: a few MB of temporaries


def binarize_rows(scores: np.ndarray, onset: float, offset: float, initial_state: np.ndarray) -> np.ndarray:
    """(rows, frames) scores -> bool: on above onset, off below offset, else the state of the last frame that was
    either (the row's initial state before any), as `pyannote.audio.utils.signal.binarize_ndarray`."""
    scores = np.nan_to_num(scores)
    on = scores > onset
    well_defined = (scores < offset) | on
    frames = np.arange(scores.shape[1], dtype=np.int32)
    last_defined = np.maximum.accumulate(np.where(well_defined, frames, -1), axis=1)
    state = np.take_along_axis(on, np.maximum(last_defined, 0), axis=1)
    return np.where(last_defined >= 0, state, initial_state[:, None])


def binarize_chunks(
    scores: SlidingWindowFeature, onset: float = 0.5, offset: float | None = None, initial_state: bool | None = None
) -> SlidingWindowFeature:
    """`binarize` for 3-D SlidingWindowFeatures, block by block; anything else goes to pyannote's own.

    Returns float32 0/1 values where stock returns float64 (the same numbers: every later step sums or thresholds
    them, and such sums of 0/1 are exact in float32), half the memory."""
    if not isinstance(scores, SlidingWindowFeature) or scores.data.ndim != 3:
        return stock_binarize(scores, onset=onset, offset=offset, initial_state=initial_state)
    offset = offset or onset
    num_chunks, num_frames, num_classes = scores.data.shape
    rows = scores.data.transpose(0, 2, 1).reshape(num_chunks * num_classes, num_frames)  # stock's "(c k) f"
    binarized = np.empty((num_chunks * num_classes, num_frames), dtype=np.float32)
    for start in range(0, len(rows), ROWS_PER_BLOCK):
        block = rows[start : start + ROWS_PER_BLOCK]
        if initial_state is None:
            state = np.nan_to_num(block[:, 0]) >= 0.5 * (onset + offset)
        else:
            state = np.full(len(block), bool(initial_state))
        binarized[start : start + len(block)] = binarize_rows(block, onset, offset, state)
    data = binarized.reshape(num_chunks, num_classes, num_frames).transpose(0, 2, 1)
    return SlidingWindowFeature(np.ascontiguousarray(data), scores.sliding_window)


@contextlib.contextmanager
def lean_binarization() -> Iterator[None]:
    """`SpeakerDiarization.apply` calls the module-level `binarize` it imported: point that name at ours while a
    pipeline of ours runs (a subclass cannot reach it otherwise without copying `apply`)."""
    original: Any = speaker_diarization.binarize
    speaker_diarization.binarize = binarize_chunks
    try:
        yield
    finally:
        speaker_diarization.binarize = original
