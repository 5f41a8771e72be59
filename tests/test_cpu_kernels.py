"""Stage 1's numpy kernels for MLX's CPU device (GELU, encoder self-attention, decoder cross-attention) against
plain float64 references, threads that change nothing, and the numpy logit rules against the MLX ones. They need
numpy 2, MLX and threadpoolctl: run in stage 1's env."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from orchestrator import runtime

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, math
import numpy as np
from stages.transcribe.backends import cpu_kernels as k

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

# the logit rules: numpy's slice-writing path against the whole-vocabulary masks MLX runs (on its CPU device here)
import mlx.core as mx
from stages.transcribe.backends.logit_rules import RowHistory, Vocabulary, filtered_logprobs
vocab = Vocabulary(size=51864, eot=50256, timestamp_begin=50363, no_timestamps=50362, blank=(220, 50256))
ts = vocab.timestamp_begin
histories = [RowHistory(), RowHistory([400]), RowHistory([ts + 10], ts + 10), RowHistory([ts + 10, 400], ts + 10),
             RowHistory([ts, 400, ts + 30], ts + 30), RowHistory([ts, 400, ts + 30, ts + 30], ts + 30)]
logits = rng.standard_normal((len(histories), vocab.size)).astype(np.float32) * 3
logits[3, ts + 40] = 30.0  # a timestamp that outweighs all text: the rule forces a timestamp on this row
mask = np.zeros(vocab.size, np.float32)
mask[[50257, 50358, 50359]] = -np.inf
agree = []
for timestamps in (True, False):
    kwargs = dict(timestamps=timestamps, max_initial_index=50)
    fast = filtered_logprobs(np, logits, histories, vocab, mask, **kwargs)
    full = np.array(filtered_logprobs(mx, mx.array(logits), histories, vocab, mx.array(mask), **kwargs))
    same_bans = bool(np.array_equal(np.isneginf(fast), np.isneginf(full)))
    finite = np.isfinite(full)
    agree.append([same_bans, float(np.abs(fast[finite] - full[finite]).max()), int(np.isneginf(fast).sum())])
out["rules"] = agree
forced = filtered_logprobs(np, logits, histories, vocab, mask, timestamps=True, max_initial_index=50)
out["forced_row_text_banned"] = bool(np.isneginf(forced[3, :ts]).all())
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
    for same_bans, largest_difference, banned in result["rules"]:
        assert same_bans and largest_difference < 1e-4 and banned > 0, result["rules"]
    assert result["forced_row_text_banned"], "the timestamp-mass rule must ban text on the row it fires for"
