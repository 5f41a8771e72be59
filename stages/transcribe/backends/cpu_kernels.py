"""numpy kernels for the work MLX's CPU device does on scalar, single-threaded kernels (softmax, GELU, attention).

Measured on 2 Xeon cores (tiny.en, batch 8): one encoder GELU over 18.4 M values took 0.61 s as whole-array numpy
(each of its ~15 passes streams 74 MB through memory) and 0.09 s in blocks of 64 K values on 2 threads (the blocks'
temporaries stay in cache; numpy releases the GIL inside each pass), bit-identical. One encoder self-attention
layer (48 heads x 1500 x 1500): 0.41 s one head after another with 2 BLAS threads, 0.22 s with heads spread over
our 2 threads and BLAS held to one (its threads gain little on 1500 x 64 products, softmax gains none). One decoder
step's cross-attention (batch 8, 147 MB of keys and values): 9.7 ms in one thread, 3.9 ms split over 2.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

F32 = np.float32
BLOCK = 1 << 16  # values per block: 256 KB per temporary, within a core's L2
# Abramowitz-Stegun 7.1.26 for erf (|error| < 1.5e-7, below float32's resolution here), highest power first
_ERF_POLY = tuple(F32(c) for c in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592))


def cpu_threads() -> int:
    """The thread count stage 1 was given (the CLI sets OMP_NUM_THREADS from --threads), else every CPU."""
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="stagewhisper-cpu")


@functools.cache
def _blas():  # type: ignore[no-untyped-def]
    from threadpoolctl import ThreadpoolController  # only the CPU device needs it

    return ThreadpoolController()


def _gelu_block(x: np.ndarray, out: np.ndarray, z: np.ndarray, t: np.ndarray) -> None:
    """out = x * Phi(x) (exact GELU) for one block, in place in the scratch arrays z and t."""
    np.abs(x, out=z)
    z *= F32(0.7071067811865476)
    np.multiply(z, F32(0.3275911), out=t)
    t += F32(1.0)
    np.reciprocal(t, out=t)
    np.multiply(t, _ERF_POLY[0], out=out)
    for coefficient in _ERF_POLY[1:]:
        out += coefficient
        out *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    out *= z  # = 1 - erf(|x| / sqrt 2)
    np.subtract(F32(1.0), out, out=out)
    np.copysign(out, x, out=out)  # erf(x / sqrt 2)
    out += F32(1.0)
    out *= x
    out *= F32(0.5)


def _gelu_range(flat: np.ndarray, result: np.ndarray, start: int, stop: int) -> None:
    z, t = np.empty(BLOCK, F32), np.empty(BLOCK, F32)
    for low in range(start, stop, BLOCK):
        high = min(low + BLOCK, stop)
        size = high - low
        _gelu_block(flat[low:high], result[low:high], z[:size], t[:size])


def gelu(x: np.ndarray, threads: int | None = None) -> np.ndarray:
    """Exact (erf) GELU of a float32 array, in cache-sized blocks spread over `threads` threads."""
    flat = np.ascontiguousarray(x, dtype=F32).reshape(-1)
    out = np.empty_like(flat)
    threads = min(threads or cpu_threads(), max(1, flat.size // BLOCK))
    if threads == 1:
        _gelu_range(flat, out, 0, flat.size)
    else:
        share = -(-flat.size // threads // BLOCK) * BLOCK  # whole blocks per thread
        bounds = [(start, min(start + share, flat.size)) for start in range(0, flat.size, share)]
        list(_pool(threads).map(lambda bound: _gelu_range(flat, out, *bound), bounds))
    return out.reshape(x.shape)


def softmax_inplace(scores: np.ndarray) -> None:
    """Softmax over the last axis, in place."""
    np.subtract(scores, scores.max(axis=-1, keepdims=True), out=scores)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_head: int, threads: int | None = None) -> np.ndarray:
    """Unmasked multi-head attention, (batch, length, width) each; one (item, head) per task, so that a
    length x length score matrix (9 MB at 1500) is made, normalised and used while it is still in cache."""
    batch, length, width = q.shape
    depth = width // n_head
    qs, ks, vs = (np.asarray(a, dtype=F32).reshape(batch, length, n_head, depth) for a in (q, k, v))
    out = np.empty((batch, length, n_head, depth), dtype=F32)
    scale = F32(depth**-0.5)

    def head(task: int) -> None:
        item, index = divmod(task, n_head)
        scores = (qs[item, :, index] * scale) @ ks[item, :, index].T
        softmax_inplace(scores)
        out[item, :, index] = scores @ vs[item, :, index]

    threads = min(threads or cpu_threads(), batch * n_head)
    # our threads split the heads and BLAS runs each product on one thread, whatever `threads` is: BLAS's own threads
    # would oversubscribe, and a threaded small GEMM may take other kernels (seen on AMD EPYC), so other last bits
    with _blas().limit(limits=1, user_api="blas"):
        if threads == 1:
            for task in range(batch * n_head):
                head(task)
        else:
            list(_pool(threads).map(head, range(batch * n_head)))
    return out.reshape(batch, length, width)


def cross_attention(q: np.ndarray, keys: np.ndarray, values: np.ndarray, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """q (batch, heads, length, depth), already scaled, against keys (batch, heads, depth, frames) and values
    (batch, heads, frames, depth): (output like q, raw scores (batch, heads, length, frames)). Reading the keys
    and values bounds it, so the batch is split across threads (each reads its own rows' audio)."""
    scores = np.empty((*q.shape[:3], keys.shape[-1]), dtype=F32)
    out = np.empty(q.shape, dtype=F32)

    def rows(part: slice) -> None:
        np.matmul(q[part], keys[part], out=scores[part])
        probs = scores[part].copy()
        softmax_inplace(probs)
        np.matmul(probs, values[part], out=out[part])

    batch = q.shape[0]
    threads = min(threads or cpu_threads(), batch)
    if threads == 1:
        rows(slice(0, batch))
    else:
        bounds = np.linspace(0, batch, threads + 1).astype(int)
        with _blas().limit(limits=1, user_api="blas"):
            list(_pool(threads).map(rows, [slice(low, high) for low, high in zip(bounds[:-1], bounds[1:], strict=True)]))
    return out, scores
