"""Pieces of our diarization engine against stock pyannote's, on real speech (run inside envs/align_diarize).

usage: python engine_checks.py CONFIG.yaml AUDIO.wav   (CONFIG: random_pyannote31.py's)
Prints JSON: the largest differences between our per-chunk embeddings and stock's per-(chunk, speaker) ones, whether
the pooling masks are stock's, what the bounded clustering does below and above its bound, and whether our
block-wise binarization gives stock's values on real and adversarial scores.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from pyannote.audio import Pipeline  # noqa: E402
from pyannote.audio.pipelines.clustering import AgglomerativeClustering  # noqa: E402
from pyannote.audio.utils.signal import binarize  # noqa: E402
from pyannote.core import SlidingWindow, SlidingWindowFeature  # noqa: E402

from stages.align_diarize.diarization.binarize import ROWS_PER_BLOCK, binarize_chunks  # noqa: E402
from stages.align_diarize.diarization.checkpoints import pyannote_checkpoints_allowed  # noqa: E402
from stages.align_diarize.diarization.clustering import BoundedAgglomerativeClustering  # noqa: E402
from stages.align_diarize.diarization.engine import EngineSpeakerDiarization  # noqa: E402


class Recorder(EngineSpeakerDiarization):
    """Keeps what stock's and our get_embeddings return for the same binarized segmentation."""

    def get_embeddings(self, file, binary_segmentations, exclude_overlap=False, hook=None):  # type: ignore[no-untyped-def]
        self.ours = super().get_embeddings(file, binary_segmentations, exclude_overlap=exclude_overlap)
        self.stock = SpeakerDiarizationStock.get_embeddings(self, file, binary_segmentations, exclude_overlap=exclude_overlap)
        self.segmentations = binary_segmentations
        return self.ours


SpeakerDiarizationStock = EngineSpeakerDiarization.__mro__[1]


def embedding_checks(config: str, samples: np.ndarray, rate: int) -> dict:
    with contextlib.redirect_stdout(sys.stderr), pyannote_checkpoints_allowed():
        stock = Pipeline.from_pretrained(config)
    recorder = Recorder.from_pipeline(stock)
    recorder.__class__ = Recorder  # from_pipeline builds the engine class; record through the same instance
    with torch.inference_mode():
        recorder({"waveform": torch.from_numpy(samples)[None], "sample_rate": rate})
    ours, theirs = recorder.ours, recorder.stock
    active = recorder.segmentations.data.sum(axis=1) > 0
    scale = float(np.abs(theirs).max())
    return {
        "shape_equal": ours.shape == theirs.shape,
        "max_abs_diff_active": float(np.abs(ours - theirs)[active].max()),
        "max_abs_diff_all": float(np.abs(ours - theirs).max()),
        "scale": scale,
        "active_pairs": int(active.sum()),
        "pairs": int(active.size),
    }


def clustering_checks() -> dict:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    chunks, speakers = 400, 3
    labels = rng.integers(0, 3, size=(chunks, speakers))
    embeddings = centres[labels] + 0.3 * rng.normal(size=(chunks, speakers, 16))
    segmentations = SlidingWindowFeature(
        (rng.random((chunks, 20, speakers)) > 0.3).astype(float), SlidingWindow(start=0, duration=1, step=1)
    )
    params = {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7}
    stock = AgglomerativeClustering(metric="cosine")
    stock.instantiate(params)
    unbounded = BoundedAgglomerativeClustering(metric="cosine")
    unbounded.instantiate(params)
    bounded = BoundedAgglomerativeClustering(metric="cosine", max_num_embeddings=300)
    bounded.instantiate(params)
    stock_hard, _, _ = stock(embeddings=embeddings.copy(), segmentations=segmentations)
    same_hard, _, _ = unbounded(embeddings=embeddings.copy(), segmentations=segmentations)
    trained, _, _ = bounded.filter_embeddings(embeddings.copy(), segmentations=segmentations)
    bounded_hard, _, _ = bounded(embeddings=embeddings.copy(), segmentations=segmentations)
    # the bounded clusters are the true groups up to a renaming
    agreement = max(np.mean(np.array(perm)[labels] == bounded_hard) for perm in __import__("itertools").permutations(range(3)))
    return {
        "below_bound_equal": bool(np.array_equal(stock_hard, same_hard)),
        "trained_on": int(trained.shape[0]),
        "bounded_clusters": int(bounded_hard.max() + 1),
        "bounded_agreement": float(agreement),
    }


def binarize_checks(samples: np.ndarray, rate: int) -> dict:
    """Stock's binarize vs ours: the bundled segmentation of the call (tiled past one block of rows), and random scores
    with NaNs and values exactly at the thresholds (the frames whose state is inherited), for each way it is called."""
    from stages.align_diarize.diarization.bundled import load_bundled_pipeline

    with contextlib.redirect_stdout(sys.stderr):
        pipeline = load_bundled_pipeline()
    real = pipeline.get_segmentations({"waveform": torch.from_numpy(np.tile(samples, 40))[None], "sample_rate": rate})
    rng = np.random.default_rng(0)
    scores = rng.random((300, 50, 3)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.05] = np.nan
    scores[rng.random(scores.shape) < 0.1] = 0.5
    scores[rng.random(scores.shape) < 0.05] = 0.3
    scores[:7] = 0.5  # rows that never leave the initial state
    adversarial = SlidingWindowFeature(scores, SlidingWindow(start=0, duration=5, step=0.5))
    equal = []
    for swf in (real, adversarial):
        for onset, offset, initial_state in [(0.5, None, False), (0.5, 0.3, None), (0.6, 0.4, True)]:
            stock = binarize(swf, onset=onset, offset=offset, initial_state=initial_state).data
            ours = binarize_chunks(swf, onset=onset, offset=offset, initial_state=initial_state).data
            equal.append(bool(stock.shape == ours.shape and np.array_equal(stock, ours)))
    return {"equal": equal, "real_rows": int(real.data.shape[0] * real.data.shape[2]), "rows_per_block": ROWS_PER_BLOCK}


def main() -> None:
    samples, rate = sf.read(sys.argv[2], dtype="float32")
    checks = {"embeddings": embedding_checks(sys.argv[1], samples, rate), "clustering": clustering_checks()}
    print(json.dumps({**checks, "binarize": binarize_checks(samples, rate)}))


if __name__ == "__main__":
    main()
