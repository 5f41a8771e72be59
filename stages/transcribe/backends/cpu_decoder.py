"""Whisper's text decoder in numpy, for MLX's CPU device: mlx_whisper's weights, the maths of `mlx_forward`.

A decoder step is ~100 small operations on a handful of rows. On the CPU device MLX runs each on its stream thread
and the numpy parts (softmax, cross-attention: cpu_kernels) need a round trip per layer; measured on 2 Xeon cores
(tiny.en, batch 8) a step took 25-36 ms that way against ~15 ms of work. Here the whole step stays in numpy (its
BLAS for the products), the self-attention cache is written in place instead of concatenated, and the result is
the same to float32 rounding (tests/test_batched.py compares the text).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import cpu_kernels

F32 = np.float32
LN_EPS = 1e-5  # mlx.nn.LayerNorm's default, which mlx_whisper uses


@dataclass(frozen=True)
class _Linear:
    weight_t: np.ndarray  # (in, out): x @ weight_t
    bias: np.ndarray | None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        out = x @ self.weight_t
        if self.bias is not None:
            out += self.bias
        return out


@dataclass(frozen=True)
class _Norm:
    weight: np.ndarray
    bias: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        centred = x - mean
        variance = np.square(centred).mean(axis=-1, keepdims=True)
        centred *= 1.0 / np.sqrt(variance + F32(LN_EPS))
        centred *= self.weight
        centred += self.bias
        return centred


@dataclass(frozen=True)
class _Block:
    attn_ln: _Norm
    qkv: _Linear  # query, key (no bias in Whisper), value in one product
    attn_out: _Linear
    cross_ln: _Norm
    cross_query: _Linear
    cross_key: _Linear
    cross_value: _Linear
    cross_out: _Linear
    mlp_ln: _Norm
    mlp1: _Linear
    mlp2: _Linear
    n_head: int


@dataclass(frozen=True)
class NumpyDecoder:
    blocks: list[_Block]
    embedding: np.ndarray  # (vocab, width): token lookup
    embedding_t: np.ndarray  # (width, vocab), contiguous: logits in one product
    positions: np.ndarray  # (n_ctx, width)
    ln: _Norm


def _np(array: Any) -> np.ndarray:
    return np.array(array, dtype=F32)


def _linear(layer: Any, bias: bool = True) -> _Linear:
    return _Linear(np.ascontiguousarray(_np(layer.weight).T), _np(layer.bias) if bias and "bias" in layer else None)


def _norm(layer: Any) -> _Norm:
    return _Norm(_np(layer.weight), _np(layer.bias))


def _block(block: Any) -> _Block:
    attn, cross = block.attn, block.cross_attn
    qkv_weight = np.concatenate([_np(attn.query.weight), _np(attn.key.weight), _np(attn.value.weight)]).T
    qkv_bias = np.concatenate([_np(attn.query.bias), np.zeros_like(_np(attn.query.bias)), _np(attn.value.bias)])
    return _Block(
        attn_ln=_norm(block.attn_ln),
        qkv=_Linear(np.ascontiguousarray(qkv_weight), qkv_bias),
        attn_out=_linear(attn.out),
        cross_ln=_norm(block.cross_attn_ln),
        cross_query=_linear(cross.query),
        cross_key=_linear(cross.key, bias=False),
        cross_value=_linear(cross.value),
        cross_out=_linear(cross.out),
        mlp_ln=_norm(block.mlp_ln),
        mlp1=_linear(block.mlp1),
        mlp2=_linear(block.mlp2),
        n_head=attn.n_head,
    )


_CONVERTED: dict[int, tuple[Any, NumpyDecoder]] = {}


def numpy_decoder(decoder: Any) -> NumpyDecoder:
    """The decoder's weights as numpy (float32), converted once per model (it lives as long as the process)."""
    cached = _CONVERTED.get(id(decoder))
    if cached is None or cached[0] is not decoder:
        embedding = _np(decoder.token_embedding.weight)
        converted = NumpyDecoder(
            blocks=[_block(block) for block in decoder.blocks],
            embedding=embedding,
            embedding_t=np.ascontiguousarray(embedding.T),
            positions=_np(decoder.positional_embedding),
            ln=_norm(decoder.ln),
        )
        cached = _CONVERTED[id(decoder)] = (decoder, converted)
    return cached[1]


def _split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    batch, length, width = x.shape
    return x.reshape(batch, length, n_head, width // n_head).transpose(0, 2, 1, 3)


def _merge_heads(x: np.ndarray) -> np.ndarray:
    batch, n_head, length, depth = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch * length, n_head * depth)


@dataclass
class NumpyDecoderState:
    """As mlx_forward.DecoderState, in numpy: cross keys (transposed) and values per window, a self-attention cache
    per layer with room to grow (written in place; `length` positions are filled), left padding per row."""

    model: NumpyDecoder
    cross: list[tuple[np.ndarray, np.ndarray]]  # per layer: keys (windows, heads, depth, 1500), values (windows, heads, 1500, depth)
    keys: list[np.ndarray]  # per layer: (batch, heads, capacity, depth)
    values: list[np.ndarray]
    padding: np.ndarray  # (batch,) tokens of left padding in the prompt
    length: int = 0
    group: int = 1  # consecutive rows that share one window's audio (beam search)

    def select(self, rows: np.ndarray) -> NumpyDecoderState:
        windows = rows[:: self.group] // self.group
        return NumpyDecoderState(
            model=self.model,
            cross=[(k[windows], v[windows]) for k, v in self.cross],
            keys=[k[rows] for k in self.keys],
            values=[v[rows] for v in self.values],
            padding=self.padding[rows],
            length=self.length,
            group=self.group,
        )

    @property
    def capacity(self) -> int:
        """Positions the self-attention cache has room for (the first `length` are filled)."""
        return self.keys[0].shape[2]

    def _reserve(self, needed: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity, 64)
        for cache in (self.keys, self.values):
            for layer, old in enumerate(cache):
                grown = np.empty((*old.shape[:2], capacity, old.shape[3]), dtype=F32)
                grown[:, :, : self.length] = old[:, :, : self.length]
                cache[layer] = grown


def new_state(decoder: Any, audio_features: Any, padding: np.ndarray, group: int = 1) -> NumpyDecoderState:
    """Cross-attention keys/values for every layer, computed once (keys stored transposed for one product per head)."""
    model = numpy_decoder(decoder)
    features = np.asarray(audio_features, dtype=F32)
    windows, frames, width = features.shape
    flat = features.reshape(windows * frames, width)
    cross = []
    for block in model.blocks:
        keys = _split_heads(block.cross_key(flat).reshape(windows, frames, width), block.n_head)
        values = _split_heads(block.cross_value(flat).reshape(windows, frames, width), block.n_head)
        cross.append((np.ascontiguousarray(keys.transpose(0, 1, 3, 2)), np.ascontiguousarray(values)))
    batch, heads = len(padding), model.blocks[0].n_head
    empty = [np.empty((batch, heads, 0, width // heads), dtype=F32) for _ in model.blocks]
    return NumpyDecoderState(model, cross, empty, [e.copy() for e in empty], np.asarray(padding), group=group)


def self_mask(past: int, length: int, padding: np.ndarray) -> np.ndarray | None:
    """Additive mask (batch, 1, length, past + length): causal, and no real token sees left padding (None: no ban)."""
    total = past + length
    key_pos = np.arange(total)[None, None, :]
    query_pos = np.arange(past, total)[None, :, None]
    pad = padding[:, None, None]
    banned = (key_pos > query_pos) | ((key_pos < pad) & (query_pos >= pad))
    if not banned.any():
        return None
    return np.where(banned, -np.inf, 0.0).astype(F32)[:, None]


def decode_hidden(tokens: Any, state: NumpyDecoderState, cross_qk: list | None = None) -> np.ndarray:
    """Run tokens (batch, length) through the decoder, extending `state`; hidden states after the last norm.
    With `cross_qk` (a list), also appends each layer's raw cross-attention scores (for word timings)."""
    model = state.model
    tokens = np.asarray(tokens)
    batch, length = tokens.shape
    positions = np.maximum(np.arange(state.length, state.length + length)[None, :] - state.padding[:, None], 0)
    x = (model.embedding[tokens] + model.positions[positions]).reshape(batch * length, -1)
    mask = self_mask(state.length, length, state.padding)
    state._reserve(state.length + length)
    start, total = state.length, state.length + length
    for layer, block in enumerate(model.blocks):
        n_head = block.n_head
        q, k, v = (_split_heads(part, n_head) for part in np.split(block.qkv(block.attn_ln(x)).reshape(batch, length, -1), 3, axis=-1))
        state.keys[layer][:, :, start:total] = k
        state.values[layer][:, :, start:total] = v
        scores = (q * F32(q.shape[-1] ** -0.5)) @ state.keys[layer][:, :, :total].transpose(0, 1, 3, 2)
        if mask is not None:
            scores += mask
        cpu_kernels.softmax_inplace(scores)
        x = x + block.attn_out(_merge_heads(scores @ state.values[layer][:, :, :total]))
        query = block.cross_query(block.cross_ln(x))
        # per window: its rows' queries (the beams of a window share its audio) against its audio
        heads = _split_heads(query.reshape(batch // state.group, state.group * length, -1), n_head)
        keys, values = state.cross[layer]
        attended, raw = cpu_kernels.cross_attention(heads * F32(heads.shape[-1] ** -0.5), keys, values)
        if cross_qk is not None:
            cross_qk.append(raw)
        x = x + block.cross_out(_merge_heads(attended).reshape(batch * length, -1))
        hidden = block.mlp1(block.mlp_ln(x))
        x = x + block.mlp2(cpu_kernels.gelu(hidden, threads=1 if hidden.size < cpu_kernels.BLOCK * 4 else None))
    state.length = total
    return model.ln(x).reshape(batch, length, -1)


def logits_of(model: NumpyDecoder, hidden: Any) -> np.ndarray:
    """(batch, width) -> (batch, vocab), float32, through the embedding stored transposed (80 MB for tiny.en: 4.3 ms
    per batch-8 product against 9.0 for MLX's strided read of the embedding)."""
    return np.asarray(hidden, dtype=F32) @ model.embedding_t
