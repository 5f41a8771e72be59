"""The batched stage-1 pipeline (stages/transcribe/pipeline/batched.py) with the real bundled tiny.en on real speech, MLX backend:
batch 8 and batch 1 give the same text, batch padding (prompts of other lengths beside a chunk) never changes a
chunk's tokens, silence gives no text, a chunk that keeps failing the loop check is re-decoded and then dropped,
and beam search and word timings work.

The code needs MLX, which only the stage-1 env has: one script runs everything there once and prints JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from orchestrator import runtime

REPO = Path(__file__).resolve().parents[1]

ENV_SCRIPT = r"""
import json, sys
import numpy as np
from mlx_whisper.tokenizer import get_tokenizer
from shared.contract import DecodingOptions
from stages.common.audio import SAMPLE_RATE, decode_audio
from stages.transcribe.backends.base import GenerateOptions
from stages.transcribe.pipeline.batched import (
    FallbackRules,
    decode_with_fallback,
    prompt_tokens,
    speech_chunks,
    suppressed_tokens,
    transcribe_chunks,
    window,
)
from stages.transcribe.backends.loading import load_backend
from stages.transcribe.pipeline.options import TranscribeOptions
from stages.transcribe.vad.options import VadOptions

backend = load_backend(sys.argv[2], TranscribeOptions(model="bundled-tiny.en"), 0).backend
tokenizer = get_tokenizer(False, num_languages=backend.num_languages, language="en", task="transcribe")
audio = decode_audio(sys.argv[1]).samples
chunks = speech_chunks(audio, VadOptions(chunk_size=10))  # several chunks from 30 s, so batches matter

def options(**changes):
    base = dict(task="transcribe", language="en", temperature=[0.0, 0.2], word_timestamps=False, condition_on_previous_text=False,
                compression_ratio_threshold=2.4, logprob_threshold=-1.0, no_speech_threshold=0.6, compute_type=backend.compute_type,
                backend=backend.name, beam_size=1, batch_size=8)
    return DecodingOptions(**{**base, **changes})

def run(samples=audio, pieces=chunks, **changes):
    segments = transcribe_chunks(backend, tokenizer, samples, pieces, options(**changes))
    return [{"start": s.start, "end": s.end, "text": s.text, "temperature": s.decoded.temperature, "words": s.words} for s in segments]

out = {"chunks": len(chunks), "batch8": run(), "batch1": run(batch_size=1), "beam5": run(beam_size=5)}
out["words"] = run(word_timestamps=True)
if backend.name == "mlx":  # the GPU's loop (step t+1 queued before step t's tokens are read), here on the CPU
    backend.step_ahead = True
    out["step_ahead"] = run()
    backend.step_ahead = False
out["interleaved"] = run(interleaved_context=True, batch_size=2)
silence = np.zeros(20 * SAMPLE_RATE, np.float32)
out["silence"] = run(samples=silence, pieces=speech_chunks(silence, VadOptions()))  # the stage's path: VAD finds nothing

# A loop check every chunk fails: each is decoded again at the next temperature, then dropped.
encoded = backend.encode([window(audio, c) for c in chunks])
prompts = [prompt_tokens(tokenizer, [], None, False)] * len(chunks)
rules = FallbackRules((0.0, 0.2), compression_ratio_threshold=0.0, logprob_threshold=None, no_speech_threshold=None)
out["loop_temperatures"] = [t for _, t, _ in decode_with_fallback(backend, encoded, prompts, GenerateOptions(), rules, tokenizer)]
out["loop_kept"] = run(compression_ratio_threshold=0.0)

# Batch padding: chunk 0 alone, then beside a chunk whose prompt (previous text) is 12 tokens longer.
greedy = GenerateOptions(without_timestamps=True, suppress_tokens=suppressed_tokens(tokenizer, "-1", False))
short = prompt_tokens(tokenizer, [], None, True)
long = prompt_tokens(tokenizer, tokenizer.encode(" This is Diane in New Jersey and Sheila in Texas, originally from Chicago."), None, True)
alone = backend.generate(backend.select(encoded, [0]), [short], greedy)[0].tokens
beside = backend.generate(backend.select(encoded, [0, 1]), [short, long], greedy)[0].tokens
out["padding"] = {"alone": alone, "beside": beside, "long_prompt": len(long) - len(short)}
print(json.dumps(out))
"""


def _env() -> dict[str, str]:
    """What the CLI gives stage 1 (threads, OpenBLAS preloaded with its kernels named), offline."""
    return runtime.stage_environment("transcribe", threads=2) | {"HF_HUB_OFFLINE": "1"}


def _run_in_env(python: Path, script: str, *args: str) -> dict:
    """Run `script` (python -c) in the stage-1 env and return the JSON of its last stdout line."""
    done = subprocess.run([str(python), "-c", script, *args], capture_output=True, text=True, cwd=REPO, env=_env(), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=["mlx", "ctranslate2"])
def results(request: pytest.FixtureRequest, transcribe_python: Path, sample_wav: Path) -> dict:
    return _run_in_env(transcribe_python, ENV_SCRIPT, str(sample_wav), request.param)


def _text(segments: list[dict]) -> str:
    return "".join(s["text"] for s in segments).strip()


def test_batch_size_does_not_change_the_text(results: dict) -> None:
    assert results["chunks"] >= 3
    assert _text(results["batch8"]) == _text(results["batch1"])
    assert "New Jersey" in _text(results["batch8"])


def test_queueing_the_next_step_changes_nothing(results: dict) -> None:
    if "step_ahead" not in results:
        pytest.skip("an MLX decoding loop")
    assert results["step_ahead"] == results["batch8"]


def test_batch_padding_never_changes_a_chunks_tokens(results: dict) -> None:
    padding = results["padding"]
    assert padding["long_prompt"] >= 10
    assert padding["alone"] and padding["alone"] == padding["beside"]


def test_silence_gives_no_text(results: dict) -> None:
    assert results["silence"] == []


def test_a_chunk_that_keeps_looping_is_redecoded_then_dropped(results: dict) -> None:
    assert results["loop_temperatures"] == [0.2] * results["chunks"]
    assert results["loop_kept"] == []


def test_segments_are_ordered_inside_the_audio(results: dict) -> None:
    for name in ("batch8", "beam5", "interleaved", "words"):
        segments = results[name]
        assert segments, name
        assert all(0 <= s["start"] <= s["end"] <= 30.0 for s in segments), name
        assert [s["start"] for s in segments] == sorted(s["start"] for s in segments), name


def test_beam_search_and_interleaved_context_transcribe(results: dict) -> None:
    for name in ("beam5", "interleaved"):
        assert "Jersey" in _text(results[name]), name


def test_cross_attention_word_times(results: dict) -> None:
    segments = results["words"]
    words = [w for s in segments for w in s["words"]]
    assert "".join(w["word"] for w in words).strip() == _text(segments)
    for segment in segments:
        for word in segment["words"]:
            assert segment["start"] - 1e-3 <= word["start"] <= word["end"] <= segment["end"] + 1e-3  # words are rounded to ms
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    diane = next(w for w in words if "Diane" in w["word"])
    assert 12.0 <= diane["start"] <= 17.0  # "This is Diane in New Jersey." is said at 13.9-15.9 s (sample.stm)


BEST_OF_SCRIPT = r"""
import json, sys
from mlx_whisper.tokenizer import get_tokenizer
from stages.common.audio import decode_audio
from stages.transcribe.backends.base import GenerateOptions
from stages.transcribe.pipeline.batched import FallbackRules, decode_with_fallback, likelihood, prompt_tokens, speech_chunks, window
from stages.transcribe.backends.loading import load_backend
from stages.transcribe.pipeline.options import TranscribeOptions
from stages.transcribe.vad.options import VadOptions

backend = load_backend(sys.argv[2], TranscribeOptions(model="bundled-tiny.en"), 0).backend
tokenizer = get_tokenizer(False, num_languages=backend.num_languages, language="en", task="transcribe")
audio = decode_audio(sys.argv[1]).samples
chunks = speech_chunks(audio, VadOptions(chunk_size=10))[:2]
encoded = backend.encode([window(audio, c) for c in chunks])
prompts = [prompt_tokens(tokenizer, [], None, False)] * len(chunks)
calls, candidates = [], []
generate = backend.generate

def counting(encoded, prompts, options):  # every candidate the fallback samples, per call
    out = generate(encoded, prompts, options)
    calls.append({"rows": len(prompts), "temperature": options.temperature})
    candidates.extend(out if options.temperature > 0 else [])
    return out

backend.generate = counting
rules = FallbackRules((0.0, 0.8), compression_ratio_threshold=0.0, logprob_threshold=None, no_speech_threshold=None)  # all retry
kept = decode_with_fallback(backend, encoded, prompts, GenerateOptions(), rules, tokenizer, best_of=3)
best = [max(likelihood(g, None) for g in candidates[3 * i : 3 * i + 3]) for i in range(len(chunks))]
print(json.dumps({"calls": calls, "kept": [likelihood(g, None) for g, _, _ in kept], "best": best,
                  "distinct": len({tuple(g.tokens) for g in candidates})}))
"""


@pytest.mark.parametrize("backend", ["mlx", "ctranslate2"])
def test_best_of_samples_n_candidates_and_keeps_the_likeliest(backend: str, transcribe_python: Path, sample_wav: Path) -> None:
    out = _run_in_env(transcribe_python, BEST_OF_SCRIPT, str(sample_wav), backend)
    # 2 chunks: once greedy, then 3 samples each at 0.8, generated a batch's worth (2 rows) at a time
    assert out["calls"] == [{"rows": 2, "temperature": 0.0}] + [{"rows": 2, "temperature": 0.8}] * 3, out
    assert out["kept"] == out["best"], out
    assert out["distinct"] > 1, out  # the samples differ: each row draws its own noise
