"""Batched MLX Whisper decoding speed on a GPU (or the CPU): our backend against mlx_whisper's own model code.

Random-weight models with the real shapes (large-v3, large-v3-turbo), float16, `--batch` windows of 30 s of
noise, 100 tokens forced per window (end-of-text suppressed), as the reference measurement
"random-weight large-v3, fp16, batch 64, 100 tokens per 30 s window: PyTorch eager 628x, MLX (mlx_whisper's
model code) 276x". Paths timed:

- `ours`: `stages.transcribe.backends.mlx_backend.MlxBackend.encode` + `.generate` (greedy, GPU logit rules, KV cache).
- `mlxw-loop`: mlx_whisper's modules as mlx_whisper's DecodingTask drives them: `model.encoder(mel)`, then
  `Inference.logits` (its `model.decoder(tokens, audio_features, kv_cache)`) + `SuppressTokens` +
  `GreedyDecoder.update`, one step ahead with `mx.async_eval`, 100 steps.
- `mlxw-decode`: `mlx_whisper.decoding.decode(model, audio_features, DecodingOptions(sample_len=100,
  suppress_tokens=[eot], without_timestamps=True))` (its whole DecodingTask; encoder timed as in mlxw-loop).
- `torch-decode`: the PyTorch eager reference on the same machine: openai-whisper's model (same dims, random
  weights, fp16, its SDPA attention and KV-cache hooks), its log-mel on the GPU, encoder, then
  `whisper.decoding.decode` with the same options. Needs torch with CUDA and `openai-whisper`.

Both mlx_whisper paths use the same log-mel code (mlx_whisper.audio) as ours. x-realtime = batch * 30 s / wall s.

    PYTHONPATH=. python3 benchmarks/gpu_batched.py --json benchmarks/results/gpu-batched.json     # on the GPU
    UV_PYTHON_DOWNLOADS=never envs/transcribe/.venv/bin/python benchmarks/gpu_batched.py --dims tiny --batch 2 --runs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import statistics
import sys
import time
import types
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SAMPLE_RATE = 16_000
WINDOW_S = 30.0

# ModelDimensions fields: n_mels, n_audio_ctx, n_audio_state, n_audio_head, n_audio_layer,
#                         n_vocab, n_text_ctx, n_text_state, n_text_head, n_text_layer
DIMS = {
    "large-v3": (128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 32),
    "large-v3-turbo": (128, 1500, 1280, 20, 32, 51866, 448, 1280, 20, 4),
    # a multilingual vocabulary, so the same 100-language tokenizer fits
    "tiny": (80, 1500, 384, 6, 4, 51866, 448, 384, 6, 4),
}
PATHS = ("ours", "mlxw-loop", "mlxw-decode", "torch-decode")


def _stub_unused_imports() -> list[str]:
    """`import mlx_whisper` imports numba and scipy.signal (word timings only; never called here).
    Where one is missing (a GPU machine that cannot install them), put an inert module in its place."""
    stubbed = []
    for name in ("numba", "scipy.signal"):
        try:
            __import__(name)
        except Exception:  # noqa: BLE001 - missing, or broken against this numpy
            for part in (name.split(".")[0], name):
                module = types.ModuleType(part)
                module.jit = lambda *a, **k: lambda f: f  # numba.jit(...)
                if part != name:
                    module.signal = types.ModuleType(name)
                sys.modules[part] = module
            stubbed.append(name)
    return stubbed


STUBBED = _stub_unused_imports()

import mlx.core as mx  # noqa: E402
from mlx.nn import gelu as nn_gelu  # noqa: E402
from mlx.utils import tree_map  # noqa: E402
from mlx_whisper import decoding as mlxw_decoding  # noqa: E402
from mlx_whisper.audio import log_mel_spectrogram  # noqa: E402
from mlx_whisper.tokenizer import get_tokenizer  # noqa: E402
from mlx_whisper.whisper import ModelDimensions, Whisper  # noqa: E402

from stages.transcribe.backends import mlx_forward as fwd  # noqa: E402
from stages.transcribe.backends.base import GenerateOptions  # noqa: E402
from stages.transcribe.backends.logit_rules import RowHistory  # noqa: E402
from stages.transcribe.backends.mlx_backend import N_FRAMES, N_SAMPLES, MlxBackend  # noqa: E402

GIB = 1 << 30


# --- memory --------------------------------------------------------------------------------------------
def _mem_fn(name: str) -> Any:
    for owner in (mx, getattr(mx, "cuda", None), getattr(mx, "metal", None)):
        if owner is not None and hasattr(owner, name):
            return getattr(owner, name)
    return None


def peak_memory() -> float | None:
    fn = _mem_fn("get_peak_memory")
    return None if fn is None else fn() / GIB


def active_memory() -> float | None:
    fn = _mem_fn("get_active_memory")
    return None if fn is None else fn() / GIB


def reset_peak() -> None:
    fn = _mem_fn("reset_peak_memory")
    if fn is not None:
        fn()


def clear_cache() -> None:
    fn = _mem_fn("clear_cache")
    if fn is not None:
        fn()


# --- model ---------------------------------------------------------------------------------------------
def build_model(dims_name: str, dtype: mx.Dtype, seed: int) -> Whisper:
    mx.random.seed(seed)
    dims = ModelDimensions(*DIMS[dims_name])
    model = Whisper(dims, dtype=dtype)
    model.update(tree_map(lambda p: p.astype(dtype) if mx.issubdtype(p.dtype, mx.floating) else p, model.parameters()))
    mx.eval(model.parameters())
    return model


def param_count(tree: Any) -> int:
    from mlx.utils import tree_flatten

    return sum(int(p.size) for _, p in tree_flatten(tree))


def noise_windows(batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [(0.1 * rng.standard_normal(N_SAMPLES)).astype(np.float32) for _ in range(batch)]


def mel_batch(windows: list[np.ndarray], n_mels: int, dtype: mx.Dtype) -> mx.array:
    """The same log-mel + padding as MlxBackend.encode, for the mlx_whisper paths."""
    mels = []
    for samples in windows:
        mel = log_mel_spectrogram(samples[:N_SAMPLES], n_mels=n_mels)[:N_FRAMES]
        mels.append(mx.pad(mel, [(0, N_FRAMES - mel.shape[0]), (0, 0)]))
    return mx.stack(mels).astype(dtype)


# --- the three paths -------------------------------------------------------------------------------------
def run_ours(backend: MlxBackend, windows: list[np.ndarray], prompt: list[int], options: GenerateOptions) -> tuple[float, float, list[int]]:
    t0 = time.perf_counter()
    encoded = backend.encode(windows)  # evaluates the features
    t1 = time.perf_counter()
    results = backend.generate(encoded, [prompt] * len(windows), options)  # returns host lists: synchronised
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, [len(r.tokens) for r in results]


def mlxw_encode(model: Whisper, windows: list[np.ndarray], dtype: mx.Dtype) -> mx.array:
    features = model.encoder(mel_batch(windows, model.dims.n_mels, dtype))
    mx.eval(features)
    return features


def mlxw_greedy(model: Whisper, features: mx.array, prompt: list[int], steps: int, eot: int) -> mx.array:
    """DecodingTask._main_loop with its parts (Inference, SuppressTokens, GreedyDecoder), without the early stop."""
    inference = mlxw_decoding.Inference(model)
    greedy = mlxw_decoding.GreedyDecoder(0.0, eot)
    suppress = mlxw_decoding.SuppressTokens([eot], model.dims.n_vocab)
    batch = features.shape[0]
    tokens = mx.broadcast_to(mx.array(prompt), (batch, len(prompt)))
    sum_logprobs = mx.zeros(batch)

    def step(inputs: mx.array, tokens: mx.array, sum_logprobs: mx.array) -> tuple[mx.array, mx.array, mx.array]:
        logits = inference.logits(inputs, features)[:, -1]
        logits = suppress.apply(logits, tokens)
        tokens, completed, sum_logprobs = greedy.update(tokens, logits, sum_logprobs)
        return tokens, completed, sum_logprobs

    tokens, completed, sum_logprobs = step(tokens, tokens, sum_logprobs)
    mx.async_eval(completed, tokens, sum_logprobs)
    for _ in range(1, steps):
        next_tokens, next_completed, next_sum = step(tokens[:, -1:], tokens, sum_logprobs)
        mx.async_eval(next_completed, next_tokens, next_sum)
        if completed:  # the host waits for the previous step here, as mlx_whisper does
            break
        tokens, completed, sum_logprobs = next_tokens, next_completed, next_sum
    mx.eval(tokens, sum_logprobs)
    return tokens


def run_mlxw_loop(
    model: Whisper, windows: list[np.ndarray], prompt: list[int], steps: int, eot: int, dtype: mx.Dtype
) -> tuple[float, float, list[int]]:
    t0 = time.perf_counter()
    features = mlxw_encode(model, windows, dtype)
    t1 = time.perf_counter()
    tokens = mlxw_greedy(model, features, prompt, steps, eot)
    counts = [int(n) for n in (np.asarray(tokens[:, len(prompt) :]) != eot).sum(axis=1)]
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, counts


def run_mlxw_decode(model: Whisper, windows: list[np.ndarray], steps: int, eot: int, dtype: mx.Dtype) -> tuple[float, float, list[int]]:
    options = mlxw_decoding.DecodingOptions(
        task="transcribe", language="en", sample_len=steps, suppress_tokens=[eot], without_timestamps=True, fp16=dtype == mx.float16
    )
    t0 = time.perf_counter()
    features = mlxw_encode(model, windows, dtype)
    t1 = time.perf_counter()
    results = mlxw_decoding.decode(model, features, options)  # features of shape (batch, n_audio_ctx, state): no encoder
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, [len(r.tokens) for r in results]


def build_torch_model(dims_name: str, seed: int) -> Any:
    """openai-whisper's PyTorch model with the same shapes, random weights, fp16 on the GPU (built there: no CPU init).
    Its LayerNorms compute in float32 (they cast their input up), so they keep float32 weights; everything else is fp16
    (openai-whisper's own fp32-weights-fp16-activations casts every weight at every call: slower, not eager's best)."""
    import torch
    from whisper.model import ModelDimensions as TorchDims
    from whisper.model import Whisper as TorchWhisper

    torch.manual_seed(seed)
    with torch.device("cuda"):
        model = TorchWhisper(TorchDims(*DIMS[dims_name])).half().eval()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.float()
    return model


def run_torch_decode(model: Any, windows: list[np.ndarray], steps: int, eot: int) -> tuple[float, float, list[int]]:
    import torch
    from whisper import decoding as torch_decoding
    from whisper.audio import log_mel_spectrogram as torch_log_mel

    options = torch_decoding.DecodingOptions(
        task="transcribe", language="en", sample_len=steps, suppress_tokens=[eot], without_timestamps=True, fp16=True
    )
    with torch.inference_mode():
        t0 = time.perf_counter()
        audio = torch.from_numpy(np.stack([w[:N_SAMPLES] for w in windows])).cuda()
        mel = torch_log_mel(audio, n_mels=model.dims.n_mels)[..., :N_FRAMES]
        features = model.encoder(mel.half())
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        results = torch_decoding.decode(model, features, options)  # encoder output given: decode() skips the encoder
        torch.cuda.synchronize()
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, [len(r.tokens) for r in results]


# --- one configuration -----------------------------------------------------------------------------------
def measure(path: str, model: Whisper, backend: MlxBackend, tokenizer: Any, batch: int, args: argparse.Namespace, dtype: mx.Dtype) -> dict:
    rng = np.random.default_rng(args.seed + batch)
    prompt = list(tokenizer.sot_sequence_including_notimestamps)
    options = GenerateOptions(max_new_tokens=args.tokens, suppress_tokens=(tokenizer.eot,), without_timestamps=True, beam_size=1)

    def once() -> tuple[float, float, list[int]]:
        windows = noise_windows(batch, rng)  # fresh input each run, drawn outside the timed region
        if path == "ours":
            return run_ours(backend, windows, prompt, options)
        if path == "mlxw-loop":
            return run_mlxw_loop(model, windows, prompt, args.tokens, tokenizer.eot, dtype)
        if path == "torch-decode":
            return run_torch_decode(args.torch_model, windows, args.tokens, tokenizer.eot)
        return run_mlxw_decode(model, windows, args.tokens, tokenizer.eot, dtype)

    if path == "torch-decode" and args.torch_model is None:
        raise RuntimeError("no PyTorch model (torch with CUDA and openai-whisper are needed)")
    gc.collect()
    clear_cache()
    reset_peak()
    if path == "torch-decode":
        import torch

        torch.cuda.reset_peak_memory_stats()
    warm_start = time.perf_counter()
    once()  # warm-up: kernel compilation, allocator growth
    warmup_s = time.perf_counter() - warm_start
    runs = []
    for _ in range(args.runs):
        encode_s, decode_s, counts = once()
        runs.append({"encode_s": encode_s, "decode_s": decode_s, "total_s": encode_s + decode_s,
                     "tokens_min": min(counts), "tokens_max": max(counts)})  # fmt: skip
    audio_s = batch * WINDOW_S
    totals = [r["total_s"] for r in runs]
    row = {
        "model": args.current_model,
        "batch": batch,
        "path": path,
        "audio_s": audio_s,
        "warmup_s": warmup_s,
        "runs": runs,
        "encode_s_min": min(r["encode_s"] for r in runs),
        "encode_s_median": statistics.median(r["encode_s"] for r in runs),
        "decode_s_min": min(r["decode_s"] for r in runs),
        "decode_s_median": statistics.median(r["decode_s"] for r in runs),
        "total_s_min": min(totals),
        "total_s_median": statistics.median(totals),
        "x_realtime_best": audio_s / min(totals),
        "x_realtime_median": audio_s / statistics.median(totals),
        "tokens_per_window_ok": all(r["tokens_min"] == r["tokens_max"] == args.tokens for r in runs),
        "tokens_per_window": sorted({r["tokens_min"] for r in runs} | {r["tokens_max"] for r in runs}),
        "decode_tokens_per_s_median": batch * args.tokens / statistics.median(r["decode_s"] for r in runs),
        "peak_memory_gib": peak_memory() if path != "torch-decode" else _torch_peak_gib(),
    }
    return row


def _torch_peak_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / GIB


# --- profile: where the time of one configuration goes ------------------------------------------------------
def _timed(fn: Any, repeat: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _build_and_eval_ms(step: Any, steps: int = 40, warmup: int = 5) -> tuple[Any, float, float]:
    """Run `step` (returns a lazy array) `steps` times: the last output, then median ms to build its graph and to evaluate it."""
    build, run, output = [], [], None
    for i in range(steps):
        t0 = time.perf_counter()
        output = step()
        t1 = time.perf_counter()
        mx.eval(output)
        t2 = time.perf_counter()
        if i >= warmup:
            build.append(t1 - t0)
            run.append(t2 - t1)
    return output, 1e3 * statistics.median(build), 1e3 * statistics.median(run)


def profile(model: Whisper, backend: MlxBackend, tokenizer: Any, batch: int, args: argparse.Namespace, dtype: mx.Dtype) -> dict:
    """Split encode into mel / encoder and one decode step into graph building (host), GPU evaluation and
    the logit rules; the same for mlx_whisper's decoder step."""
    rng = np.random.default_rng(args.seed)
    windows = noise_windows(batch, rng)
    prompt = list(tokenizer.sot_sequence_including_notimestamps)
    decoder = model.decoder
    out: dict[str, Any] = {"model": args.current_model, "batch": batch}

    mel = mel_batch(windows, model.dims.n_mels, dtype)
    mx.eval(mel)
    out["mel_s"] = _timed(lambda: mx.eval(mel_batch(windows, model.dims.n_mels, dtype)))
    out["encoder_ours_s"] = _timed(lambda: mx.eval(fwd.encode(model.encoder, mel)))
    out["encoder_mlxw_s"] = _timed(lambda: mx.eval(model.encoder(mel)))
    features = fwd.encode(model.encoder, mel)
    mx.eval(features)
    out["features_nonfinite"] = int(mx.sum(~mx.isfinite(features.astype(mx.float32))).item())
    out["new_state_s"] = _timed(lambda: fwd.new_state(decoder, features, np.zeros(batch, np.int64)))

    # our decoder step: host graph building vs evaluation
    state = fwd.new_state(decoder, features, np.zeros(batch, np.int64))
    hidden = fwd.decode_hidden(decoder, mx.array(np.array([prompt] * batch, np.int32)), state)
    logits = mx.array(fwd.logits_of(decoder, hidden[:, -1]))
    mx.eval(logits, state.keys, state.values)
    token = mx.array(np.full((batch, 1), 440, np.int32))
    logits, out["ours_step_build_ms"], out["ours_step_eval_ms"] = _build_and_eval_ms(
        lambda: mx.array(fwd.logits_of(decoder, fwd.decode_hidden(decoder, token, state)[:, -1]))
    )
    out["ours_step_forward_ms"] = out["ours_step_build_ms"] + out["ours_step_eval_ms"]

    # the logit rules and the pick, on fixed logits (as in MlxBackend._sample, without_timestamps)
    static_mask = backend._static_mask((tokenizer.eot,))
    histories = [RowHistory(sampled=[440] * 50) for _ in range(batch)]
    options = GenerateOptions(max_new_tokens=args.tokens, suppress_tokens=(tokenizer.eot,), without_timestamps=True)

    def rules() -> None:
        logprobs = backend._logprobs(logits, histories, options, static_mask)
        chosen = backend.xp.argmax(logprobs, axis=-1)
        picked = backend.xp.take_along_axis(logprobs, chosen[:, None], axis=-1)[:, 0]
        np.asarray(chosen), np.asarray(picked)

    out["ours_step_rules_ms"] = 1e3 * _timed(rules, repeat=10)
    state = None  # frees the cross keys/values before the next measurement
    # the whole generate, per step, for comparison with the parts
    encoded = backend.encode(windows)
    generate_s = _timed(lambda: backend.generate(encoded, [prompt] * batch, options), repeat=1)
    out["ours_generate_ms_per_step"] = 1e3 * generate_s / args.tokens
    encoded = None

    # mlx_whisper's decoder step
    inference = mlxw_decoding.Inference(model)
    mx.eval(inference.logits(mx.array([prompt] * batch), features), inference.kv_cache)
    _, out["mlxw_step_build_ms"], out["mlxw_step_eval_ms"] = _build_and_eval_ms(lambda: inference.logits(token, features)[:, -1])
    inference = None

    # what a step must at least read: decoder weights + cross-attention keys/values (+ self cache, small)
    dims = model.dims
    weight_bytes = param_count(decoder.parameters()) * 2 if dtype == mx.float16 else param_count(decoder.parameters()) * 4
    itemsize = 2 if dtype in (mx.float16, mx.bfloat16) else 4
    cross_bytes = dims.n_text_layer * 2 * batch * dims.n_audio_ctx * dims.n_text_state * itemsize
    out["step_bytes_gb"] = (weight_bytes + cross_bytes) / 1e9
    out["step_floor_ms_at_3TBps"] = (weight_bytes + cross_bytes) / 3.0e12 * 1e3
    # encoder matrix work: 2 * params * frames + attention (4 * L * ctx^2 * d per window)
    enc_params = param_count(model.encoder.parameters())
    enc_flops = batch * (2 * enc_params * dims.n_audio_ctx + 4 * dims.n_audio_layer * dims.n_audio_ctx**2 * dims.n_audio_state)
    out["encoder_tflop"] = enc_flops / 1e12
    out["encoder_tflops_achieved"] = enc_flops / out["encoder_ours_s"] / 1e12
    return out


# --- micro: the parts of one decoder step, against the machine's own ceilings --------------------------------
def _median_ms(fn: Any, iters: int = 10) -> float:
    fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def micro(model: Whisper, tokenizer: Any, batch: int, args: argparse.Namespace, dtype: mx.Dtype) -> dict:
    """One decoder step of `batch` rows at ~50 tokens of context, split by operation (each timed over all
    layers in one evaluation), plus copy bandwidth, a large matrix product and a step-ahead greedy loop."""
    if fwd.on_cpu() and dtype == mx.float32:
        raise SystemExit("--micro times MLX's decoder operations; in float32 on the CPU device the decoder runs in numpy "
                         "(stages/transcribe/backends/cpu_decoder.py): pass --dtype float16 to time MLX's CPU operations")  # fmt: skip
    decoder, dims = model.decoder, model.dims
    layers, heads, width = dims.n_text_layer, dims.n_text_head, dims.n_text_state
    depth = width // heads
    out: dict[str, Any] = {"model": args.current_model, "batch": batch}
    rng = np.random.default_rng(args.seed)
    mel = mel_batch(noise_windows(batch, rng), dims.n_mels, dtype)
    features = fwd.encode(model.encoder, mel)
    mx.eval(features)
    del mel
    prompt = list(tokenizer.sot_sequence_including_notimestamps)
    context = prompt + [440] * (50 - len(prompt))
    state = fwd.new_state(decoder, features, np.zeros(batch, np.int64))
    mx.eval(fwd.decode_hidden(decoder, mx.array(np.array([context] * batch, np.int32)), state), state.keys, state.values)
    token = mx.array(np.full((batch, 1), 440, np.int32))

    def copy_state() -> fwd.DecoderState:
        return dataclasses.replace(state, keys=list(state.keys), values=list(state.values))

    def full_step() -> None:
        mx.eval(mx.array(fwd.logits_of(decoder, fwd.decode_hidden(decoder, token, copy_state())[:, -1])))

    out["step_ms"] = _median_ms(full_step)
    cross_bytes = sum(k.nbytes + v.nbytes for k, v in state.cross)
    # the (.., 1500, depth) layout scaled_dot_product_attention takes, whichever layout the state keeps
    # (the CPU device keeps them as numpy arrays)
    sdpa_cross = [
        (mx.array(k) if k.shape[-1] == v.shape[-1] else mx.contiguous(mx.array(k).transpose(0, 1, 3, 2)), mx.array(v))
        for k, v in state.cross
    ]
    mx.eval(sdpa_cross)
    qs = [mx.random.normal((batch, heads, 1, depth)).astype(dtype) for _ in range(layers)]
    mx.eval(qs)
    scale = depth**-0.5

    def cross_sdpa() -> None:
        mx.eval([mx.fast.scaled_dot_product_attention(q, k, v, scale=scale) for q, (k, v) in zip(qs, sdpa_cross, strict=True)])

    def cross_manual() -> None:
        outs = []
        for q, (k, v) in zip(qs, sdpa_cross, strict=True):
            scores = (q * scale) @ k.transpose(0, 1, 3, 2)
            outs.append(mx.softmax(scores.astype(mx.float32), axis=-1).astype(dtype) @ v)
        mx.eval(outs)

    for name, fn in (("cross_sdpa", cross_sdpa), ("cross_manual", cross_manual)):
        ms = _median_ms(fn)
        out[f"{name}_ms"], out[f"{name}_GBps"] = ms, cross_bytes / ms / 1e6
    # sdpa alone at other key lengths (one layer's shape), to see whether the kernel changes with length
    for keys_n in (512, 1024, 1500, 2048, 4096):
        ks = [mx.random.normal((batch, heads, keys_n, depth)).astype(dtype) for _ in range(4)]
        vs = [mx.random.normal((batch, heads, keys_n, depth)).astype(dtype) for _ in range(4)]
        mx.eval(ks, vs)

        def sdpa_n(ks: list = ks, vs: list = vs) -> None:
            mx.eval([mx.fast.scaled_dot_product_attention(q, k, v, scale=scale) for q, k, v in zip(qs, ks, vs, strict=False)])

        ms = _median_ms(sdpa_n)
        out[f"sdpa_keys{keys_n}_GBps"] = sum(k.nbytes + v.nbytes for k, v in zip(ks, vs, strict=True)) / ms / 1e6
        del ks, vs
    x = mx.random.normal((batch, 1, width)).astype(dtype)
    mx.eval(x)
    linear_bytes = 0
    for block in decoder.blocks:
        for lin in (block.attn.query, block.attn.key, block.attn.value, block.attn.out, block.cross_attn.query,
                    block.cross_attn.out, block.mlp1, block.mlp2):  # fmt: skip
            linear_bytes += lin.weight.nbytes

    def linears() -> None:
        outs = []
        for block in decoder.blocks:
            a, c = block.attn, block.cross_attn
            outs += [a.query(x), a.key(x), a.value(x), a.out(x), c.query(x), c.out(x), block.mlp2(block.mlp1(x))]
        mx.eval(outs)

    ms = _median_ms(linears)
    out["linears_ms"], out["linears_GBps"] = ms, linear_bytes / ms / 1e6

    def self_attention() -> None:
        outs = []
        mask = fwd._self_mask(state, 1, dtype)
        for layer in range(layers):
            q = mx.random.normal((batch, heads, 1, depth)).astype(dtype) if layer == 0 else qs[layer]
            k = mx.concatenate([state.keys[layer], qs[layer]], axis=2)
            v = mx.concatenate([state.values[layer], qs[layer]], axis=2)
            outs.append(mx.fast.scaled_dot_product_attention(q, k, v, scale=scale, mask=mask))
        mx.eval(outs)

    out["self_attention_ms"] = _median_ms(self_attention)
    hidden = mx.random.normal((batch, width)).astype(dtype)
    mx.eval(hidden)
    out["logits_ms"] = _median_ms(lambda: mx.eval(mx.array(fwd.logits_of(decoder, hidden))))
    small = mx.random.normal((batch, 1, width)).astype(dtype)
    mx.eval(small)

    def small_ops() -> None:  # layer norms, GELU and residual adds of one step: launch-bound work
        outs = []
        for block in decoder.blocks:
            y = small + block.attn_ln(small)
            y = y + block.cross_attn_ln(y)
            outs.append(y + nn_gelu(block.mlp_ln(y)))
        mx.eval(outs)

    out["small_ops_ms"] = _median_ms(small_ops)
    out["cross_bytes_gb"] = cross_bytes / 1e9
    out["linear_bytes_gb"] = linear_bytes / 1e9
    out["step_floor_ms_at_3TBps"] = (cross_bytes + linear_bytes + decoder.token_embedding.weight.nbytes) / 3e9

    if not fwd.on_cpu():  # ceilings as MLX reaches them here
        out.update(_ceilings(dtype))

    # greedy 100 steps: the host waits for each step (as MlxBackend) vs builds the next step while the GPU runs
    def greedy(ahead: bool) -> None:
        st = copy_state()
        tok = token
        pending = []
        for _ in range(args.tokens):
            logits = mx.array(fwd.logits_of(decoder, fwd.decode_hidden(decoder, tok, st)[:, -1]))
            tok = mx.argmax(logits, axis=-1)[:, None].astype(mx.int32)
            if ahead:
                mx.async_eval(tok)
                pending.append(tok)
            else:
                tok = mx.array(np.asarray(tok))
        mx.eval(pending)

    out["greedy_sync_ms_per_step"] = _median_ms(lambda: greedy(False), iters=2) / args.tokens
    out["greedy_ahead_ms_per_step"] = _median_ms(lambda: greedy(True), iters=2) / args.tokens
    return out


def variants(model: Whisper, batch: int, args: argparse.Namespace, dtype: mx.Dtype) -> dict:
    """Alternatives for the two costly parts of a decoder step (matrix products at M = batch, cross-attention),
    timed over all layers in one evaluation, to say what a change in mlx_forward would buy."""
    decoder, dims = model.decoder, model.dims
    heads, width, keys_n = dims.n_text_head, dims.n_text_state, dims.n_audio_ctx
    depth = width // heads
    out: dict[str, Any] = {"model": args.current_model, "batch": batch}
    x3 = mx.random.normal((batch, 1, width)).astype(dtype)
    h3 = mx.random.normal((batch, 1, 4 * width)).astype(dtype)
    x2, h2 = x3.reshape(batch, width), h3.reshape(batch, 4 * width)
    blocks = decoder.blocks
    fused = [mx.concatenate([b.attn.query.weight, b.attn.key.weight, b.attn.value.weight]) for b in blocks]
    lins = [[b.attn.query, b.attn.key, b.attn.value, b.attn.out, b.cross_attn.query, b.cross_attn.out, b.mlp1] for b in blocks]
    transposed = [
        [mx.contiguous(lin.weight.T) for lin in row] + [mx.contiguous(b.mlp2.weight.T)] for row, b in zip(lins, blocks, strict=True)
    ]
    mx.eval(x3, h3, fused, transposed)
    weight_bytes = sum(lin.weight.nbytes for row in lins for lin in row) + sum(b.mlp2.weight.nbytes for b in blocks)

    def run(make: Any) -> tuple[float, float]:
        ms = _median_ms(lambda: mx.eval([y for i in range(len(blocks)) for y in make(i)]))
        return ms, weight_bytes / ms / 1e6

    cases = {
        "linear_3d": lambda i: [lin(x3) for lin in lins[i]] + [blocks[i].mlp2(h3)],
        "linear_2d": lambda i: [lin(x2) for lin in lins[i]] + [blocks[i].mlp2(h2)],
        "matmul_2d_nobias": lambda i: [x2 @ lin.weight.T for lin in lins[i]] + [h2 @ blocks[i].mlp2.weight.T],
        "matmul_2d_pretransposed": lambda i: [x2 @ w for w in transposed[i][:-1]] + [h2 @ transposed[i][-1]],
        "matmul_2d_fused_qkv": lambda i: [x2 @ fused[i].T] + [x2 @ lin.weight.T for lin in lins[i][3:]] + [h2 @ blocks[i].mlp2.weight.T],
    }
    for name, make in cases.items():
        ms, gbps = run(make)
        out[f"{name}_ms"], out[f"{name}_GBps"] = ms, gbps
    # one shape alone, many distinct weights: the time of a single (batch x 1280) @ (1280 x 1280) product
    singles = [mx.random.normal((width, width)).astype(dtype) for _ in range(64)]
    mx.eval(singles)
    out["one_matmul_1280_us"] = 1e3 * _median_ms(lambda: mx.eval([x2 @ w.T for w in singles])) / len(singles)
    out["one_matmul_1280_3d_us"] = 1e3 * _median_ms(lambda: mx.eval([x3 @ w.T for w in singles])) / len(singles)

    # cross-attention over the real cross keys/values layout (batch, heads, 1500, depth), all layers
    layers = dims.n_text_layer
    ks = [mx.random.normal((batch, heads, keys_n, depth)).astype(dtype) for _ in range(layers)]
    vs = [mx.random.normal((batch, heads, keys_n, depth)).astype(dtype) for _ in range(layers)]
    kts = [mx.contiguous(k.transpose(0, 1, 3, 2)) for k in ks]
    qs = [mx.random.normal((batch, heads, 1, depth)).astype(dtype) for _ in range(layers)]
    mx.eval(ks, vs, kts, qs)
    cross_bytes = sum(k.nbytes + v.nbytes for k, v in zip(ks, vs, strict=True))
    scale = depth**-0.5
    flat = (1, batch * heads)
    cross_cases = {
        "cross_sdpa": lambda q, k, kt, v: mx.fast.scaled_dot_product_attention(q, k, v, scale=scale),
        "cross_sdpa_flat_heads": lambda q, k, kt, v: mx.fast.scaled_dot_product_attention(
            q.reshape(*flat, 1, depth), k.reshape(*flat, keys_n, depth), v.reshape(*flat, keys_n, depth), scale=scale
        ),
        "cross_manual_fp16_softmax": lambda q, k, kt, v: mx.softmax((q * scale) @ k.transpose(0, 1, 3, 2), axis=-1) @ v,
        "cross_manual_pretransposed": lambda q, k, kt, v: mx.softmax((q * scale) @ kt, axis=-1, precise=True) @ v,
    }
    for name, fn in cross_cases.items():
        try:
            ms = _median_ms(lambda fn=fn: mx.eval([fn(q, k, kt, v) for q, k, kt, v in zip(qs, ks, kts, vs, strict=True)]))
            out[f"{name}_ms"], out[f"{name}_GBps"] = ms, cross_bytes / ms / 1e6
        except Exception as error:  # noqa: BLE001
            out[f"{name}_error"] = repr(error)
    compiled = mx.compile(lambda q, kt, v: mx.softmax((q * scale) @ kt, axis=-1, precise=True) @ v)
    ms = _median_ms(lambda: mx.eval([compiled(q, kt, v) for q, kt, v in zip(qs, kts, vs, strict=True)]))
    out["cross_manual_compiled_ms"], out["cross_manual_compiled_GBps"] = ms, cross_bytes / ms / 1e6
    return out


def gemm_sweep(dtype: mx.Dtype) -> dict:
    """Per-product time of (M x 1280) @ (1280 x N) over 64 distinct weights in one evaluation: fixed cost or
    bandwidth? Also bfloat16, and MLX's quantized products (the kernels it has for LLM decoding)."""
    out: dict[str, Any] = {}
    count = 64
    for n_out in (1280, 5120):
        weights = [mx.random.normal((n_out, 1280)).astype(dtype) for _ in range(count)]
        mx.eval(weights)
        for m in (1, 16, 64, 256, 1024):
            x = mx.random.normal((m, 1280)).astype(dtype)
            mx.eval(x)
            us = 1e3 * _median_ms(lambda x=x, weights=weights: mx.eval([x @ w.T for w in weights])) / count
            out[f"M{m}_N{n_out}_us"] = us
            out[f"M{m}_N{n_out}_GBps"] = weights[0].nbytes / us / 1e3
        x = mx.random.normal((64, 1280)).astype(mx.bfloat16)
        bf = [w.astype(mx.bfloat16) for w in weights]
        mx.eval(x, bf)
        out[f"M64_N{n_out}_bf16_us"] = 1e3 * _median_ms(lambda x=x, bf=bf: mx.eval([x @ w.T for w in bf])) / count
        x = mx.random.normal((64, 1280)).astype(dtype)
        mx.eval(x)
        for bits in (8, 4):
            try:
                packed = [mx.quantize(w, group_size=64, bits=bits) for w in weights]
                mx.eval(packed)
                us = (
                    1e3
                    * _median_ms(
                        lambda x=x, packed=packed, bits=bits: mx.eval(
                            [mx.quantized_matmul(x, q, sc, b, transpose=True, group_size=64, bits=bits) for q, sc, b in packed]
                        )
                    )
                    / count
                )
                out[f"M64_N{n_out}_q{bits}_us"] = us
            except Exception as error:  # noqa: BLE001
                out[f"M64_N{n_out}_q{bits}_error"] = repr(error)
        del weights
    small = [mx.random.normal((64, 1280)).astype(dtype) for _ in range(count)]
    mx.eval(small)
    out["elementwise_add_us"] = 1e3 * _median_ms(lambda: mx.eval([a + 1 for a in small])) / count
    return out


def _ceilings(dtype: mx.Dtype) -> dict:
    big = mx.random.normal((1 << 30,)).astype(dtype)
    a = mx.random.normal((8192, 8192)).astype(dtype)
    b = mx.random.normal((8192, 8192)).astype(dtype)
    mx.eval(big, a, b)
    copy_ms = _median_ms(lambda: mx.eval(big + 1))
    matmul_ms = _median_ms(lambda: mx.eval(a @ b))
    return {"copy_GBps": 2 * big.nbytes / copy_ms / 1e6, "matmul_8192_TFLOPs": 2 * 8192**3 / matmul_ms / 1e9}


# --- report ----------------------------------------------------------------------------------------------
def fmt_gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(rows: list[dict], tokens: int) -> None:
    head = (f"{'model':<15} {'batch':>5} {'path':<11} {'tok/win':>7} {'encode s':>15} {'decode s':>15} {'total s':>15} "
            f"{'x-RT best':>9} {'x-RT med':>9} {'vs mlxw-loop':>12} {'vs torch':>8} {'peak GiB':>8}")  # fmt: skip
    print(f"\nmin / median over runs; {tokens} tokens per 30 s window; x-RT = batch x 30 s / (encode + decode)")
    print(head)
    print("-" * len(head))

    def versus(path: str, r: dict) -> str:
        ref = next((b for b in rows if b["path"] == path and (b["model"], b["batch"]) == (r["model"], r["batch"])), None)
        return f"{r['x_realtime_median'] / ref['x_realtime_median']:.2f}x" if ref else "-"

    for r in rows:
        tok = str(tokens) if r["tokens_per_window_ok"] else "BAD:" + ",".join(map(str, r["tokens_per_window"]))
        print(
            f"{r['model']:<15} {r['batch']:>5} {r['path']:<11} {tok:>7} "
            f"{r['encode_s_min']:>7.3f}/{r['encode_s_median']:<7.3f} {r['decode_s_min']:>7.3f}/{r['decode_s_median']:<7.3f} "
            f"{r['total_s_min']:>7.3f}/{r['total_s_median']:<7.3f} {r['x_realtime_best']:>8.0f}x {r['x_realtime_median']:>8.0f}x "
            f"{versus('mlxw-loop', r):>12} {versus('torch-decode', r):>8} {fmt_gib(r['peak_memory_gib']):>8}"
        )


def machine_info() -> dict:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "mlx": getattr(mx, "__version__", "?"),
        "default_device": str(mx.default_device()),
        "stubbed_imports": STUBBED,
    }
    for owner in (mx, getattr(mx, "cuda", None), getattr(mx, "metal", None)):
        if owner is not None and hasattr(owner, "device_info"):
            try:
                info["device_info"] = {k: (v if isinstance(v, (int, float, str)) else str(v)) for k, v in owner.device_info().items()}
                break
            except Exception:  # noqa: BLE001
                pass
    try:
        import mlx_whisper

        info["mlx_whisper"] = mlx_whisper.__version__
    except Exception:  # noqa: BLE001
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["large-v3", "large-v3-turbo"], choices=[k for k in DIMS if k != "tiny"])
    parser.add_argument("--dims", choices=["real", "tiny"], default="real", help="tiny: tiny Whisper shapes (a CPU smoke test)")
    parser.add_argument("--batch", nargs="+", type=int, default=[64, 16])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--dtype", default="auto", help="float16 | bfloat16 | float32 | auto (float16 on a GPU, float32 on the CPU)")
    parser.add_argument("--profile", action="store_true", help="after the table: split the first model's largest batch into parts")
    parser.add_argument(
        "--micro",
        choices=["parts", "variants", "gemm"],
        help="only: the parts of one decoder step, or alternatives for them (first model, largest batch)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="default benchmarks/results/gpu-batched-<timestamp>.json")
    args = parser.parse_args()

    device = "cpu" if fwd.on_cpu() else "gpu"
    dtype_name = args.dtype if args.dtype != "auto" else ("float32" if device == "cpu" else "float16")
    dtype = getattr(mx, dtype_name)
    models = ["tiny"] if args.dims == "tiny" else args.models
    json_path = args.json or REPO / "benchmarks" / "results" / f"gpu-batched-{datetime.now():%Y%m%d-%H%M%S}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
        "settings": {
            "models": models,
            "batch": args.batch,
            "paths": args.paths,
            "runs": args.runs,
            "tokens": args.tokens,
            "dtype": dtype_name,
            "audio": "gaussian noise, 0.1 rms, fresh per run",
            "window_s": WINDOW_S,
        },  # fmt: skip
        "rows": [],
        "models": {},
    }
    print(json.dumps(report["machine"]), flush=True)
    tokenizer = get_tokenizer(True, num_languages=100, language="en", task="transcribe")

    def save() -> None:
        json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    if args.micro:
        args.current_model = models[0]
        model = build_model(models[0], dtype, args.seed)
        if args.micro == "gemm":
            result = gemm_sweep(dtype)
        elif args.micro == "parts":
            result = micro(model, tokenizer, max(args.batch), args, dtype)
        else:
            result = variants(model, max(args.batch), args, dtype)
        result["peak_memory_gib"] = peak_memory()
        report["micro"] = result
        save()
        print("micro:", json.dumps(result, indent=1))
        return

    for name in models:
        args.current_model = name
        t0 = time.perf_counter()
        model = build_model(name, dtype, args.seed)
        backend = MlxBackend(model, dtype_name, tokenizer)
        report["models"][name] = {
            "build_s": time.perf_counter() - t0,
            "params_m": param_count(model.parameters()) / 1e6,
            "weights_gib": active_memory(),
            "dims": DIMS[name],
        }
        print(f"{name}: {report['models'][name]}", flush=True)
        args.torch_model = None
        if "torch-decode" in args.paths:
            try:
                args.torch_model = build_torch_model(name, args.seed)
            except Exception as error:  # noqa: BLE001 - no CUDA torch / openai-whisper: the MLX rows still run
                print(f"torch-decode unavailable: {error!r}", flush=True)
        for batch in args.batch:
            for path in args.paths:
                try:
                    row = measure(path, model, backend, tokenizer, batch, args, dtype)
                except Exception as error:  # noqa: BLE001 - keep the other rows
                    row = {"model": name, "batch": batch, "path": path, "error": repr(error)}
                    print("FAILED", row, flush=True)
                    report["rows"].append(row)
                    save()
                    continue
                report["rows"].append(row)
                save()
                print(f"{name} b{batch} {path}: x-RT median {row['x_realtime_median']:.0f}x "
                      f"(encode {row['encode_s_median']:.3f} s, decode {row['decode_s_median']:.3f} s, "
                      f"tokens ok {row['tokens_per_window_ok']}, peak {fmt_gib(row['peak_memory_gib'])} GiB)", flush=True)  # fmt: skip
        del model, backend
        args.torch_model = None
        gc.collect()
        clear_cache()

    if args.profile:  # last, so that a slow profile cannot cost the table
        args.current_model = models[0]
        model = build_model(models[0], dtype, args.seed)
        backend = MlxBackend(model, dtype_name, tokenizer)
        reset_peak()
        try:
            prof = profile(model, backend, tokenizer, max(args.batch), args, dtype)
            prof["peak_memory_gib"] = peak_memory()
        except Exception as error:  # noqa: BLE001 - a profile failure must not cost the table
            prof = {"error": repr(error)}
        report["profile"] = prof
        print("profile:", json.dumps(prof), flush=True)
        save()

    print(f"\nmachine: {report['machine']}")
    print_table([r for r in report["rows"] if "error" not in r], args.tokens)
    for r in report["rows"]:
        if "error" in r:
            print(f"FAILED {r['model']} b{r['batch']} {r['path']}: {r['error']}")
    save()
    print(f"\nwrote {json_path}")


if __name__ == "__main__":
    main()
