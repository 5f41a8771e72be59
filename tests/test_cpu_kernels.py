"""Stage 1's numpy kernels for MLX's CPU device (GELU, encoder self-attention, decoder cross-attention) against
plain float64 references, and threads that change nothing. They need numpy 2 + threadpoolctl: run in stage 1's env."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from orchestrator import runtime

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, math
import numpy as np
from stages.transcribe import cpu_kernels as k

rng = np.random.default_rng(0)
out = {}
x = (rng.standard_normal((3, 70_001)) * 4).astype(np.float32)  # several blocks, a ragged last one
exact = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(x.astype(np.float64))
out["gelu_err"] = float(np.abs(k.gelu(x, threads=1) - exact).max())
out["gelu_threads_equal"] = bool(np.array_equal(k.gelu(x, threads=1), k.gelu(x, threads=2)))
out["gelu_shape"] = list(k.gelu(x[:, :5], threads=2).shape)

def softmax64(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

batch, length, heads, depth = 2, 300, 3, 16
q, kk, v = (rng.standard_normal((batch, length, heads * depth)).astype(np.float32) for _ in range(3))
def split(a):
    return a.reshape(batch, length, heads, depth).transpose(0, 2, 1, 3).astype(np.float64)
ref = softmax64(split(q) @ split(kk).transpose(0, 1, 3, 2) / math.sqrt(depth)) @ split(v)
ref = ref.transpose(0, 2, 1, 3).reshape(batch, length, heads * depth)
one, two = k.attention(q, kk, v, heads, threads=1), k.attention(q, kk, v, heads, threads=2)
out["attention_err"] = float(np.abs(one - ref).max())
out["attention_threads_equal"] = bool(np.array_equal(one, two))

frames = 150
cq = rng.standard_normal((3, heads, 2, depth)).astype(np.float32)
keys = rng.standard_normal((3, heads, depth, frames)).astype(np.float32)
values = rng.standard_normal((3, heads, frames, depth)).astype(np.float32)
scores64 = cq.astype(np.float64) @ keys
ref_out = softmax64(scores64) @ values
o1, s1 = k.cross_attention(cq, keys, values, threads=1)
o2, s2 = k.cross_attention(cq, keys, values, threads=2)
out["cross_err"] = float(np.abs(o1 - ref_out).max())
out["cross_scores_err"] = float(np.abs(s1 - scores64).max())
out["cross_threads_equal"] = bool(np.array_equal(o1, o2) and np.array_equal(s1, s2))
print(json.dumps(out))
"""


def test_cpu_kernels_match_float64_references_at_any_thread_count(transcribe_python: Path) -> None:
    env = runtime.stage_environment("transcribe", threads=2)
    done = subprocess.run([str(transcribe_python), "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["gelu_err"] < 2e-6 * 16, result  # float32 rounding of values up to ~16 in size
    assert result["attention_err"] < 1e-5 and result["cross_err"] < 1e-5 and result["cross_scores_err"] < 1e-4, result
    assert result["gelu_threads_equal"] and result["attention_threads_equal"] and result["cross_threads_equal"], result
    assert result["gelu_shape"] == [3, 5]
