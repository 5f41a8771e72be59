"""Our diarization engine: pyannote 3.3's own `SpeakerDiarization`, with its embedding step done per chunk and its
clustering bounded in memory. Segmentation, speaker counting, reconstruction and every hyper-parameter stay stock.

Speeds (`--diarize_speed`):
- exact (default): stock's output for files up to MAX_CLUSTERED_EMBEDDINGS embeddings (~1 hour at 3.1's step),
  with far less work: one embedding-network pass per chunk instead of one per (chunk, speaker), none for chunks
  without speech, and batches sized for the CPU's caches (`embeddings.py`).
- fast: as exact, on windows FAST_STEP_FRACTION of a window apart instead of the pipeline's step (10 % for 3.1):
  3x fewer windows to segment and embed; its DER against exact is in benchmarks/README.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pyannote.audio import Model
from pyannote.audio.pipelines import SpeakerDiarization
from pyannote.core import SlidingWindowFeature

from .binarize import lean_binarization
from .clustering import BoundedAgglomerativeClustering
from .embeddings import ChunkEmbedder, chunk_embedder
from .options import DiarizeSpeed

FAST_STEP_FRACTION = 0.3  # of the segmentation window (3.1: 3 s between 10 s windows instead of 1 s)
# A file's key asking the engine to drop its waveform once the embeddings are made: nothing after them reads it.
RELEASE_WAVEFORM = "stagewhisper_release_waveform"


class EngineSpeakerDiarization(SpeakerDiarization):
    """`SpeakerDiarization` whose `get_embeddings` embeds each chunk once for all its local speakers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.klustering == "AgglomerativeClustering":
            self.clustering = BoundedAgglomerativeClustering(metric=self._embedding.metric)
        model = getattr(self._embedding, "model_", None)  # pyannote-loaded models; speechbrain/ONNX ones have none
        self._chunk_embedder: ChunkEmbedder | None = chunk_embedder(model) if model is not None else None

    @classmethod
    def from_pipeline(cls, stock: SpeakerDiarization, speed: DiarizeSpeed = "exact") -> SpeakerDiarization:
        """The engine over a loaded pipeline's own models and hyper-parameters; the pipeline itself if it cannot apply."""
        embedding = getattr(stock._embedding, "model_", None)
        if type(stock) is not SpeakerDiarization or not isinstance(embedding, Model):
            return stock
        step = stock.segmentation_step if speed == "exact" else max(stock.segmentation_step, FAST_STEP_FRACTION)
        engine = cls(
            segmentation=stock._segmentation.model,
            segmentation_step=step,
            embedding=embedding,
            embedding_exclude_overlap=stock.embedding_exclude_overlap,
            clustering=stock.klustering,
            embedding_batch_size=stock.embedding_batch_size,
            segmentation_batch_size=stock.segmentation_batch_size,
            der_variant=stock.der_variant,
        )
        engine.instantiate(stock.parameters(instantiated=True))
        return engine.to(torch.device("cpu"))

    def apply(self, file: Any, **kwargs: Any) -> Any:
        with lean_binarization():
            return super().apply(file, **kwargs)

    def get_embeddings(
        self,
        file: Any,
        binary_segmentations: SlidingWindowFeature,
        exclude_overlap: bool = False,
        hook: Callable[..., None] | None = None,
    ) -> np.ndarray:
        embeddings = self._embeddings(file, binary_segmentations, exclude_overlap, hook)
        if file.get(RELEASE_WAVEFORM):
            file.pop("waveform", None)
        return embeddings

    def _embeddings(
        self, file: Any, binary_segmentations: SlidingWindowFeature, exclude_overlap: bool, hook: Callable[..., None] | None
    ) -> np.ndarray:
        embedder = self._chunk_embedder
        if embedder is None or self.training:
            return super().get_embeddings(file, binary_segmentations, exclude_overlap=exclude_overlap, hook=hook)
        num_chunks, _, num_speakers = binary_segmentations.data.shape
        busy = np.flatnonzero((binary_segmentations.data > 0).any(axis=(1, 2)))  # NaN > 0 is False, as stock's nan_to_num
        size = embedder.chunks_per_batch
        batches = [busy[i : i + size] for i in range(0, len(busy), size)]
        if not batches:
            return super().get_embeddings(file, binary_segmentations, exclude_overlap=exclude_overlap, hook=hook)
        window = binary_segmentations.sliding_window
        if hook is not None:
            hook("embeddings", None, total=len(batches), completed=0)
        embeddings: np.ndarray | None = None
        for done, batch in enumerate(batches, 1):
            waveforms = torch.vstack([self._audio.crop(file, window[c], duration=window.duration, mode="pad")[0][None] for c in batch])
            masks = self.pooling_masks(binary_segmentations.data[batch], binary_segmentations.sliding_window.duration, exclude_overlap)
            batch_embeddings = embedder.embed(waveforms, torch.from_numpy(masks))
            if embeddings is None:
                embeddings = np.empty((num_chunks, num_speakers, batch_embeddings.shape[2]), dtype=batch_embeddings.dtype)
                embeddings[:] = embedder.silent(num_speakers)  # chunks without speech, as stock embeds them
            embeddings[batch] = batch_embeddings
            if hook is not None:
                hook("embeddings", batch_embeddings, total=len(batches), completed=done)
        assert embeddings is not None
        return embeddings

    def pooling_masks(self, data: np.ndarray, duration: float, exclude_overlap: bool) -> np.ndarray:
        """(chunks, speakers, frames): the masks stock pyannote pools these chunks' speakers with, from their
        (chunks, frames, speakers) binarized segmentation. Made per batch: for the whole file at once the float64
        temporaries would be ~0.4 GB at 4 hours of `bundled` (28800 windows x 293 frames x 3 speakers x 8 bytes, twice).

        With `exclude_overlap`, a speaker's frames without overlap if there are more than the embedding's minimum,
        else all its frames (SpeakerDiarization.get_embeddings, vectorised).
        """
        masks = np.nan_to_num(data, nan=0.0).astype(np.float32)
        if exclude_overlap:
            num_frames = data.shape[1]
            min_num_frames = math.ceil(num_frames * self._embedding.min_num_samples / (duration * self._embedding.sample_rate))
            clean_frames = 1.0 * (np.sum(data, axis=2, keepdims=True) < 2)
            clean = np.nan_to_num(data * clean_frames, nan=0.0).astype(np.float32)
            masks = np.where(np.sum(clean, axis=1, keepdims=True) > min_num_frames, clean, masks)
        return np.ascontiguousarray(masks.transpose(0, 2, 1))
