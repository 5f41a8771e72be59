"""Batched Whisper forward passes on MLX, over mlx_whisper's modules and weights.

mlx_whisper's own `__call__` is built for one sequence: every decoder step it re-lays out and re-scales the
cached cross-attention keys (a full copy per layer), and it has no padding mask, so prompts of different
lengths cannot share a batch. On MLX's CPU device, softmax and GELU run on scalar, single-threaded kernels
(exp: 10 ns per element against numpy's 0.4; 80 % of encoder time in our profile), so there the encoder's
attention and GELU run through numpy (cpu_kernels) and the decoder, a few rows per step, runs wholly in numpy
(cpu_decoder); the encoder's matrix products stay in MLX. On Metal/CUDA everything stays in MLX.

Decoder steps are matrix products with few rows (the batch), where MLX is launch- and latency-bound: measured on an
H200 (large-v3, batch 64, benchmarks/gpu_batched.py --micro), (M, K) inputs beat (B, 1, K) by 14 %, one fused
query/key/value product beats three by 20 %, and cross-attention as two products over keys stored transposed ran
at 2.6 TB/s against 1.7 for `mx.fast.scaled_dot_product_attention` (5.9 ms against 9.1 per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from . import cpu_decoder, cpu_kernels

NUMPY_MIN_ELEMENTS = 1 << 16  # below this, a round trip through numpy costs more than MLX's slow kernels


def on_cpu() -> bool:
    return mx.default_device() == mx.cpu


def _transposed_cross_keys() -> bool:
    """Cross-attention as two products over transposed keys: measured faster on CUDA (and on MLX's CPU device in
    float16). On Metal, unmeasured here, MLX's fused decoding kernel (scaled_dot_product_attention) stays."""
    return not (mx.metal.is_available() and not on_cpu())


def gelu(x: mx.array) -> mx.array:
    if on_cpu() and x.dtype == mx.float32 and x.size >= NUMPY_MIN_ELEMENTS:
        return mx.array(cpu_kernels.gelu(np.asarray(x)))
    return nn.gelu(x)


def split_heads(x: mx.array, n_head: int) -> mx.array:
    batch, length, width = x.shape
    return x.reshape(batch, length, n_head, width // n_head).transpose(0, 2, 1, 3)


def merge_heads(x: mx.array) -> mx.array:
    batch, n_head, length, depth = x.shape
    return x.transpose(0, 2, 1, 3).reshape(batch, length, n_head * depth)


def self_attention(q: mx.array, k: mx.array, v: mx.array, n_head: int) -> mx.array:
    if on_cpu() and q.dtype == mx.float32:
        return mx.array(cpu_kernels.attention(np.asarray(q), np.asarray(k), np.asarray(v), n_head))
    depth = q.shape[-1] // n_head
    out = mx.fast.scaled_dot_product_attention(split_heads(q, n_head), split_heads(k, n_head), split_heads(v, n_head), scale=depth**-0.5)
    return merge_heads(out)


def encode(encoder: nn.Module, mel: mx.array) -> mx.array:
    """mel (batch, 3000, n_mels) -> audio features (batch, 1500, width); same maths as AudioEncoder.__call__."""
    x = gelu(encoder.conv1(mel))
    x = gelu(encoder.conv2(x))
    x = x + encoder._positional_embedding
    for block in encoder.blocks:
        h = block.attn_ln(x)
        attn = block.attn
        x = x + attn.out(self_attention(attn.query(h), attn.key(h), attn.value(h), attn.n_head))
        x = x + block.mlp2(gelu(block.mlp1(block.mlp_ln(x))))
    return encoder.ln_post(x)


@dataclass
class DecoderState:
    """Per batch row: cross-attention keys/values (computed once), the self-attention cache and left padding."""

    cross: list[tuple[Any, Any]]  # per layer: keys (batch, heads, depth, 1500) if transposed, else (.., 1500, depth); values
    keys: list[mx.array | None]  # per layer, (batch, heads, length, depth)
    values: list[mx.array | None]
    padding: np.ndarray  # (batch,) tokens of left padding in the prompt
    qkv: list[tuple[mx.array, mx.array]]  # per layer: fused self-attention weight (width, 3 width), bias (shared by rows)
    length: int = 0
    group: int = 1  # consecutive rows that share one window's audio (beam search): cross keys are stored once per group

    def select(self, rows: np.ndarray) -> DecoderState:
        """Keep these rows (finished ones leave the batch, beams are reordered within their window)."""
        index = mx.array(rows.astype(np.int32))
        windows = rows[:: self.group] // self.group
        window_index = mx.array(windows.astype(np.int32))
        return DecoderState(
            cross=[(k[window_index], v[window_index]) for k, v in self.cross],
            keys=[None if k is None else k[index] for k in self.keys],
            values=[None if v is None else v[index] for v in self.values],
            padding=self.padding[rows],
            length=self.length,
            group=self.group,
            qkv=self.qkv,
        )


def new_state(decoder: nn.Module, audio_features: mx.array, padding: np.ndarray, group: int = 1) -> Any:
    """Cross-attention keys/values, laid out once for every step: contiguous (MLX copies a strided view on
    every use). On the CPU device in float32 the decoder runs in numpy (cpu_decoder) and this is its state."""
    if on_cpu() and audio_features.dtype == mx.float32:
        return cpu_decoder.new_state(decoder, audio_features, padding, group)
    cross: list = []
    for block in decoder.blocks:
        attn = block.cross_attn
        keys, values = split_heads(attn.key(audio_features), attn.n_head), split_heads(attn.value(audio_features), attn.n_head)
        if _transposed_cross_keys():
            cross.append((mx.contiguous(keys.transpose(0, 1, 3, 2)), mx.contiguous(values)))
        else:
            cross.append((mx.contiguous(keys), mx.contiguous(values)))
    qkv = [_fused_qkv(block.attn) for block in decoder.blocks]
    mx.eval(cross, qkv)
    layers = len(decoder.blocks)
    return DecoderState(cross=cross, keys=[None] * layers, values=[None] * layers, padding=padding, group=group, qkv=qkv)


def _fused_qkv(attn: nn.Module) -> tuple[mx.array, mx.array]:
    """One (width, 3 width) product instead of three; rebuilt per decoding call (a few ms), so no copy outlives it."""
    weight = mx.contiguous(mx.concatenate([attn.query.weight, attn.key.weight, attn.value.weight]).T)
    bias = mx.concatenate([attn.query.bias, mx.zeros_like(attn.query.bias), attn.value.bias])  # Whisper's key has no bias
    return weight, bias


def _self_mask(state: DecoderState, length: int, dtype: mx.Dtype) -> mx.array | None:
    mask = cpu_decoder.self_mask(state.length, length, state.padding)
    return None if mask is None else mx.array(mask).astype(dtype)


def decode_hidden(decoder: nn.Module, tokens: mx.array, state: DecoderState, cross_qk: list | None = None) -> mx.array:
    """Run tokens (batch, length) through the decoder, extending `state`; returns hidden states after the last norm.

    With `cross_qk` (a list), also appends each layer's raw cross-attention scores (for word timings)."""
    if isinstance(state, cpu_decoder.NumpyDecoderState):
        return cpu_decoder.decode_hidden(tokens, state, cross_qk)
    batch, length = tokens.shape
    positions = np.maximum(np.arange(state.length, state.length + length)[None, :] - state.padding[:, None], 0)
    x = decoder.token_embedding(tokens) + decoder.positional_embedding[mx.array(positions)]
    x = x.reshape(batch * length, -1)  # rows x width: MLX's few-row matrix products are faster on 2-D inputs
    mask = _self_mask(state, length, x.dtype)
    for layer, block in enumerate(decoder.blocks):
        n_head = block.attn.n_head
        weight, bias = state.qkv[layer]
        fused = mx.addmm(bias, block.attn_ln(x), weight).reshape(batch, length, -1)
        q, k, v = (split_heads(part, n_head) for part in mx.split(fused, 3, axis=-1))
        if state.keys[layer] is not None:
            k = mx.concatenate([state.keys[layer], k], axis=2)
            v = mx.concatenate([state.values[layer], v], axis=2)
        state.keys[layer], state.values[layer] = k, v
        scale = q.shape[-1] ** -0.5
        attended = mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask)
        x = x + block.attn.out(merge_heads(attended).reshape(batch * length, -1))
        cross = block.cross_attn
        q = cross.query(block.cross_attn_ln(x))
        # per window: its rows' queries (the beams of a window share its audio) against its audio
        q = q.reshape(batch // state.group, state.group * length, q.shape[-1])
        x = x + cross.out(_cross_attention(q, *state.cross[layer], n_head, cross_qk).reshape(batch * length, -1))
        x = x + block.mlp2(gelu(block.mlp1(block.mlp_ln(x))))
    state.length += length
    return decoder.ln(x).reshape(batch, length, -1)


def _cross_attention(q: mx.array, keys: Any, values: Any, n_head: int, cross_qk: list | None) -> mx.array:
    """q (batch, length, width) against the audio; appends the raw scores to `cross_qk` when given."""
    q = split_heads(q, n_head)
    scale = q.shape[-1] ** -0.5
    transposed = keys.shape[-1] != values.shape[-1]  # (.., depth, 1500) against (.., 1500, depth)
    if cross_qk is None and not transposed:
        return merge_heads(mx.fast.scaled_dot_product_attention(q, keys, values, scale=scale))
    scores = (q * scale) @ (keys if transposed else keys.transpose(0, 1, 3, 2))
    if cross_qk is not None:
        cross_qk.append(scores)
    return merge_heads(mx.softmax(scores, axis=-1, precise=True) @ values)


def logits_of(decoder: nn.Module, hidden: Any) -> Any:
    """(batch, width) -> (batch, vocab) in float32: one matrix product for the whole batch (numpy on the CPU device)."""
    if isinstance(hidden, np.ndarray) or (on_cpu() and decoder.token_embedding.weight.dtype == mx.float32):
        return cpu_decoder.logits_of(cpu_decoder.numpy_decoder(decoder), hidden)
    return (hidden @ decoder.token_embedding.weight.T).astype(mx.float32)


def softmax_numpy(logits: Any) -> np.ndarray:
    """Softmax over the last axis as a numpy array, wherever the logits are (numpy on CPU, MLX on a GPU)."""
    if isinstance(logits, mx.array):
        return np.asarray(mx.softmax(logits.astype(mx.float32), axis=-1, precise=True))
    probs = np.array(logits, dtype=np.float32)
    cpu_kernels.softmax_inplace(probs)
    return probs
