"""pyannote's agglomerative clustering with its training set bounded, so that memory stops growing with the file.

Stock pyannote clusters every active (chunk, speaker) embedding at once: scipy's linkage holds a condensed
distance matrix of n(n-1)/2 doubles, about 0.2 GB per hour of audio at 3.1's 1 s step and 3.6 GB at 4 hours
(WhisperX #659). Above `max_num_embeddings`, pyannote's own mechanism applies: the dendrogram is built on a
subset and every embedding is then assigned to the nearest centroid (pyannote's `assign_embeddings`). Our
subset is spread evenly over the file, not random, so the same file always gives the same speakers.
Below the bound nothing differs from stock.
"""

from __future__ import annotations

import numpy as np
from pyannote.audio.pipelines.clustering import AgglomerativeClustering
from pyannote.core import SlidingWindowFeature

# Trained on at most this many embeddings: ~0.25 GB of distances (x2-3 inside scipy's linkage), about 1 hour
# of speech with 3.1's 1 s step; longer files are clustered on an even subset and assigned.
MAX_CLUSTERED_EMBEDDINGS = 8000


class BoundedAgglomerativeClustering(AgglomerativeClustering):
    def __init__(self, metric: str = "cosine", max_num_embeddings: int = MAX_CLUSTERED_EMBEDDINGS) -> None:
        super().__init__(metric=metric, max_num_embeddings=max_num_embeddings)

    def filter_embeddings(
        self, embeddings: np.ndarray, segmentations: SlidingWindowFeature | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        assert segmentations is not None  # the diarization pipeline always passes them
        active = np.sum(segmentations.data, axis=1) > 0
        valid = ~np.any(np.isnan(embeddings), axis=2)
        chunk_idx, speaker_idx = np.where(active * valid)
        if len(chunk_idx) > self.max_num_embeddings:
            keep = np.unique(np.linspace(0, len(chunk_idx) - 1, self.max_num_embeddings).round().astype(int))
            chunk_idx, speaker_idx = chunk_idx[keep], speaker_idx[keep]
        return embeddings[chunk_idx, speaker_idx], chunk_idx, speaker_idx
