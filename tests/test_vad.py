"""Silero VAD and chunking (stages/transcribe/vad/) on real speech: spans match the sample's reference
turns, silence gives nothing, chunks never exceed chunk_size, and the thresholds move the result the right way.

The module needs numpy and onnxruntime, which only the stage-1 env has: one script runs everything there
once and prints JSON; the tests below check it.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-6  # float seconds of whole-sample positions

ENV_SCRIPT = r"""
import json, sys, time
import numpy as np
import onnxruntime
from shared.errors import StageError
from stages.common.audio import SAMPLE_RATE, decode_audio
from stages.transcribe.vad import chunking, silero
from stages.transcribe.vad.options import VadOptions

def chunks(items):
    return [[c.start, c.end, [list(s) for s in c.spans]] for c in items]

def error(**kwargs):
    try:
        chunking.speech_spans(audio[:SAMPLE_RATE], VadOptions(**kwargs))
    except StageError as exc:
        return [int(exc.exit_code), exc.message]
    return None

audio = decode_audio(sys.argv[1]).samples
options = VadOptions()
out = {"spans": chunking.speech_spans(audio, options), "chunks": chunks(chunking.vad_chunks(audio, options))}

# The batched model must give what silero's streaming silero_vad.onnx gives frame by frame.
streaming = onnxruntime.InferenceSession(str(silero._model_path().with_name("silero_vad.onnx")), providers=["CPUExecutionProvider"])
frames, state, stream_probs = silero._framed(audio, 0, -(-audio.size // silero.FRAME)), np.zeros((2, 1, 128), np.float32), []
for frame in frames:
    prob, state = streaming.run(None, {"input": frame[None], "state": state, "sr": np.array(SAMPLE_RATE, np.int64)})
    stream_probs.append(float(prob[0, 0]))
out["max_prob_difference"] = float(np.abs(silero.speech_probabilities(audio) - np.array(stream_probs)).max())

variants = {"onset_high": {"onset": 0.8}, "onset_low": {"onset": 0.3}, "offset_high": {"offset": 0.5}, "offset_low": {"offset": 0.1}}
out["variants"] = {name: chunking.speech_spans(audio, VadOptions(**kw)) for name, kw in variants.items()}

silence = np.zeros(10 * SAMPLE_RATE, np.float32)
out["silence"] = [
    chunking.speech_spans(silence, options),
    chunks(chunking.vad_chunks(silence, options)),
    chunking.speech_spans(silence[:0], options),
]

# ~70 s of speech without a real pause (the call from its first word, three times): a long pause threshold
# keeps it one span, which must be cut into pieces that fit the window.
speech = np.tile(audio[int(6.6 * SAMPLE_RATE):], 3)
out["continuous_seconds"] = speech.size / SAMPLE_RATE
out["continuous"] = {}
for size in (30.0, 10.0):
    long_options = VadOptions(min_silence_duration_ms=2000, chunk_size=size)
    out["continuous"][str(size)] = chunks(chunking.merge_chunks(chunking.speech_spans(speech, long_options), size))

out["merged"] = chunks(chunking.merge_chunks([(0.0, 10.0), (12.0, 25.0), (26.0, 31.0), (40.0, 41.0)], 30.0))
out["fixed"] = [chunks(chunking.fixed_chunks(duration, 30.0)) for duration in (95.5, 60.0, 0.0)]
import os, tempfile
os.environ["STAGEWHISPER_CACHE"] = tempfile.mkdtemp()  # no exported pyannote model in an empty cache
out["errors"] = {"pyannote": error(method="pyannote"), "chunk_size": error(chunk_size=45.0), "offset": error(offset=0.9)}

from stages.transcribe.pipeline.batched_run import refuse_sequential_only

def refusal(**decoding):
    try:
        refuse_sequential_only(decoding)
    except StageError as exc:
        return [int(exc.exit_code), exc.message]
    return None

out["sequential_only"] = [refusal(condition_on_previous_text=True), refusal(hallucination_silence_threshold=2.0),
                          refusal(condition_on_previous_text=False, hallucination_silence_threshold=None)]

ten = np.tile(audio, 10)  # 300 s
timings = []
for _ in range(3):
    start = time.perf_counter()
    silero.speech_probabilities(ten)
    timings.append(time.perf_counter() - start)
out["seconds_for_300s"] = min(timings)
out["chunks_300s"] = chunks(chunking.vad_chunks(ten, options))
out["torch_free"] = "torch" not in sys.modules and "silero_vad" not in sys.modules
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def vad_run(transcribe_python: Path, sample_wav: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [str(transcribe_python), "-c", ENV_SCRIPT, str(sample_wav)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    return sum(max(0.0, min(e1, e2) - max(s1, s2)) for s1, e1 in _union(a) for s2, e2 in _union(b))


def _total(spans: list[tuple[float, float]]) -> float:
    return sum(end - start for start, end in spans)


def _check_chunks(chunks: list, size: float) -> None:
    """Each chunk fits, holds its spans in order from its start to its end, and chunks follow each other."""
    for start, end, spans in chunks:
        assert end - start <= size + TOL
        assert spans[0][0] == start and spans[-1][1] == end
        assert all(a < b <= c for (a, b), (c, _) in zip(spans, spans[1:] + [[end, end]], strict=True))
    assert all(prev[1] <= nxt[0] for prev, nxt in zip(chunks, chunks[1:], strict=False))


def test_spans_cover_the_reference_speech(vad_run: dict, sample_rttm: Path) -> None:
    turns = []
    for line in sample_rttm.read_text().splitlines():
        fields = line.split()
        turns.append((float(fields[3]), float(fields[3]) + float(fields[4])))
    spans = vad_run["spans"]
    assert _overlap(turns, spans) >= 0.9 * _total(_union(turns))
    assert 6.3 <= spans[0][0] <= 6.9  # the first word ("Hello?") is at 6.69 s; the 6.7 s before it are silence
    assert _total(spans) <= 1.1 * _total(_union(turns)) + 1.0  # speech, not everything
    _check_chunks(vad_run["chunks"], 30.0)
    assert [span for chunk in vad_run["chunks"] for span in chunk[2]] == spans


def test_batched_model_matches_silero_streaming_onnx(vad_run: dict) -> None:
    assert vad_run["max_prob_difference"] < 1e-5
    assert vad_run["torch_free"]


def test_silence_gives_no_spans_or_chunks(vad_run: dict) -> None:
    assert vad_run["silence"] == [[], [], []]


@pytest.mark.parametrize("size", ["30.0", "10.0"])
def test_continuous_speech_is_cut_to_fit(vad_run: dict, size: str) -> None:
    chunks = vad_run["continuous"][size]
    _check_chunks(chunks, float(size))
    spans = [span for chunk in chunks for span in chunk[2]]
    assert len(spans) >= -(-vad_run["continuous_seconds"] // float(size))
    assert any(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # cut inside speech, no gap
    assert _total(spans) >= 0.95 * (vad_run["continuous_seconds"] - 0.5)


def test_thresholds_move_spans_the_expected_way(vad_run: dict) -> None:
    base, variants = _total(vad_run["spans"]), {name: _total(spans) for name, spans in vad_run["variants"].items()}
    assert variants["onset_high"] < base < variants["onset_low"]  # a higher onset needs more evidence of speech
    assert variants["offset_high"] < base < variants["offset_low"]  # a lower offset holds on through weak frames


def test_merge_chunks_fills_windows_greedily(vad_run: dict) -> None:
    assert vad_run["merged"] == [[0.0, 25.0, [[0.0, 10.0], [12.0, 25.0]]], [26.0, 41.0, [[26.0, 31.0], [40.0, 41.0]]]]


def test_fixed_chunks_cover_the_duration(vad_run: dict) -> None:
    uneven, even, empty = vad_run["fixed"]
    assert [chunk[:2] for chunk in uneven] == [[0.0, 30.0], [30.0, 60.0], [60.0, 90.0], [90.0, 95.5]]
    assert [chunk[:2] for chunk in even] == [[0.0, 30.0], [30.0, 60.0]]
    assert empty == []


def test_bad_options_are_usage_errors(vad_run: dict) -> None:
    errors = vad_run["errors"]
    assert errors["pyannote"][0] == 5 and "has not been exported for stage 1" in errors["pyannote"][1]
    assert errors["chunk_size"][0] == 2 and "--chunk_size" in errors["chunk_size"][1]
    assert errors["offset"][0] == 2 and "--vad_offset" in errors["offset"][1]
    # flags only the sequential mlx_whisper backend implements are refused by the batched one, not ignored
    previous_text, silence, neither = vad_run["sequential_only"]
    assert previous_text[0] == 2 and previous_text[1].startswith("--condition_on_previous_text needs --backend mlx_whisper")
    assert silence[0] == 2 and silence[1].startswith("--hallucination_silence_threshold needs --backend mlx_whisper")
    assert neither is None


def test_300_seconds_is_fast_and_chunks_fit(vad_run: dict) -> None:
    assert vad_run["seconds_for_300s"] < 2.0  # ~0.3 s on 2 cores; generous for a loaded machine
    chunks = vad_run["chunks_300s"]
    _check_chunks(chunks, 30.0)
    assert len(chunks) == 10  # one per copy of the call: the 6.7 s of silence at each start separates them
