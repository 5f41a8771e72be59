"""Speaker embeddings of a whole chunk at once: one pass over the chunk's audio serves all its local speakers.

Stock pyannote 3.3 embeds every (chunk, local speaker) pair as its own item: the chunk's 10 s of audio go
through the embedding network once per local speaker (3 times with segmentation-3.0), although the speaker's
mask only weighs the statistics pooling at the very end (WeSpeaker) or picks frames after the features
(GE2E). Here the features and the network trunk run once per chunk and only the pooling runs per speaker:
the same numbers up to float rounding (tests/test_diarization_engine.py compares the turns with stock).
"""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .ge2e import GE2EEmbedding


class ChunkEmbedder(Protocol):
    chunks_per_batch: int

    def embed(self, waveforms: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
        """(chunks, 1, samples) audio and (chunks, speakers, frames) pooling masks → (chunks, speakers, dimension)."""
        ...

    def silent(self, num_speakers: int) -> np.ndarray:
        """(speakers, dimension): what stock pyannote computes for a chunk where no speaker is active."""
        ...


def chunk_embedder(model: nn.Module) -> ChunkEmbedder | None:
    """The chunk-level embedder for this embedding model, or None when only pyannote's per-item path applies."""
    from pyannote.audio.models.embedding.wespeaker import BaseWeSpeakerResNet

    if isinstance(model, BaseWeSpeakerResNet) and not model.fbank_only:
        return WeSpeakerChunks(model)
    if isinstance(model, GE2EEmbedding):
        return GE2EChunks(model)
    return None


class WeSpeakerChunks:
    """WeSpeaker ResNet: fbank and the convolutional trunk once per chunk, statistics pooling per speaker.

    The trunk is a copy with each batch norm folded into its convolution (eval-mode batch norm is an affine map
    per channel, so this is the same function) in channels-last layout, which oneDNN's CPU convolutions run
    faster. Measured on 2 cores, one 10 s chunk through ResNet34: 0.37 s in stock's 32-item batches, 0.11 s here.
    """

    # One or two 10 s chunks per pass keep ResNet34's activations in the CPU's caches: 0.11 s per chunk on
    # 2 cores, against 0.26 s per item in batches of 16 and 0.37 s in stock's 32 (benchmarks/README.md).
    chunks_per_batch = 2

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.trunk = fold_batch_norms(copy.deepcopy(model.resnet)).to(memory_format=torch.channels_last)
        self._silent: torch.Tensor | None = None

    def frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        fbank = self.model.compute_fbank(waveforms)  # (B, T, F), centred per chunk as stock does
        features = fbank.permute(0, 2, 1).unsqueeze(1).contiguous(memory_format=torch.channels_last)
        trunk = self.trunk
        out = torch.relu(trunk.bn1(trunk.conv1(features)))  # bn1 is an Identity once folded
        for layer in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4):
            out = layer(out)
        return out

    def embed(self, waveforms: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            frames = self.frames(waveforms)
            embeddings = self.model.resnet.forward_embedding(frames, weights=masks)[1]
            if self._silent is None:  # all-zero weights pool to zeros whatever the frames: seg_1's bias, as stock
                self._silent = self.model.resnet.forward_embedding(frames[:1], weights=torch.zeros_like(masks[:1, :1]))[1][0, 0]
        return embeddings.numpy()

    def silent(self, num_speakers: int) -> np.ndarray:
        if self._silent is None:
            raise RuntimeError("silent() before any embed(): no frames to pool yet")
        return self._silent.numpy()[None].repeat(num_speakers, axis=0)


class GE2EChunks:
    """GE2E: the mel spectrogram once per chunk, then each speaker's frames through the LSTM (GE2EEmbedding.embed_masked)."""

    chunks_per_batch = 32  # the LSTM runs all partials of a batch at once: the more, the better it uses the cores

    def __init__(self, model: GE2EEmbedding) -> None:
        self.model = model

    def embed(self, waveforms: torch.Tensor, masks: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.model.forward_speakers(waveforms, masks).numpy()

    def silent(self, num_speakers: int) -> np.ndarray:
        return np.full((num_speakers, self.model.dimension), np.nan, dtype=np.float32)  # GE2E's answer to no speech


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm2d into the Conv2d that feeds it (attribute pairs convN/bnN, Sequential(conv, bn))."""
    for child in module.children():
        fold_batch_norms(child)
    for name, child in list(module.named_children()):
        if name.startswith("conv") and isinstance(child, nn.Conv2d):
            norm = getattr(module, "bn" + name[len("conv") :], None)
            if isinstance(norm, nn.BatchNorm2d):
                setattr(module, name, fuse_conv_bn_eval(child, norm))
                setattr(module, "bn" + name[len("conv") :], nn.Identity())
    if (
        isinstance(module, nn.Sequential)
        and len(module) == 2
        and isinstance(module[0], nn.Conv2d)
        and isinstance(module[1], nn.BatchNorm2d)
    ):
        module[0], module[1] = fuse_conv_bn_eval(module[0], module[1]), nn.Identity()
    return module
