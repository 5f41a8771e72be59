"""The CTranslate2 backend on the bundled tiny.en and the real sample call: the same tokens as faster-whisper,
batching that changes nothing, silence, word times, beam search, the decode-length bound, model resolution.

The backend needs numpy and ctranslate2 (stage-1 env only), so one probe runs there and reports JSON.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import jiwer
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, tempfile
from pathlib import Path
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
from mlx_whisper.tokenizer import get_tokenizer
from shared.errors import StageError
from stages.transcribe.backends.base import GenerateOptions
from stages.transcribe.backends.ct2_backend import CTranslate2Backend
from stages.transcribe.models.resolve import resolve_ct2_model

audio = decode_audio(sys.argv[1], sampling_rate=16000)
model_dir = resolve_ct2_model("bundled-tiny.en", None)
backend = CTranslate2Backend(model_dir, "default", threads=2)
tok = get_tokenizer(multilingual=False)
# What faster-whisper's suppress_tokens=[-1] expands to (the pipeline does the same before calling us).
suppress = tuple(sorted(set(tok.non_speech_tokens) | {tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech}))
text_only = GenerateOptions(suppress_tokens=suppress, without_timestamps=True)
prompt = list(tok.sot_sequence_including_notimestamps)
out = {"prompt": prompt, "device": backend.device, "compute_type": backend.compute_type, "n_mels": backend.n_mels,
       "is_multilingual": backend.is_multilingual, "languages": backend.detect_language(backend.encode([audio[:16000]]))}

def decoded(g):
    return {"tokens": g.tokens, "text": tok.decode(g.tokens), "sum_logprob": g.sum_logprob, "avg_logprob": g.avg_logprob,
            "no_speech_prob": g.no_speech_prob}

full = backend.encode([audio])
out["num_frames"] = full.num_frames
out["greedy"] = decoded(backend.generate(full, [prompt], text_only)[0])
def decode_full(prompt, **options):
    return decoded(backend.generate(full, [prompt], GenerateOptions(suppress_tokens=suppress, **options))[0])

out["beam5"] = decode_full(prompt, without_timestamps=True, beam_size=5)
out["timestamps"] = decode_full(list(tok.sot_sequence))
out["max20"] = decode_full(prompt, without_timestamps=True, max_new_tokens=20)
only_eot = GenerateOptions(suppress_tokens=tuple(t for t in range(tok.timestamp_begin + 1501) if t != tok.eot), suppress_blank=False,
                           without_timestamps=True)
out["only_eot"] = decoded(backend.generate(full, [prompt], only_eot)[0])

reference = WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=2)
for name, beam in (("fw_greedy", 1), ("fw_beam5", 5)):
    segments, _ = reference.transcribe(audio, language="en", beam_size=beam, without_timestamps=True, vad_filter=False,
                                       condition_on_previous_text=False, temperature=0)
    segments = list(segments)
    out[name] = {"tokens": [t for s in segments for t in s.tokens], "avg_logprob": segments[0].avg_logprob,
                 "no_speech_prob": segments[0].no_speech_prob}

windows = [audio[i * 160000 : (i + 1) * 160000] for i in range(3)]
thirds = backend.encode(windows)
out["thirds_num_frames"] = thirds.num_frames
batch = backend.generate(thirds, [prompt] * 3, text_only)
out["batched"] = [decoded(g) for g in batch]
out["alone"] = [decoded(backend.generate(backend.encode([w]), [prompt], text_only)[0]) for w in windows]
previous = [tok.sot_prev, *tok.encode(" Hello? Hello?")] + prompt  # <|startoftranscript|> elsewhere: decoded apart
out["mixed"] = [decoded(g) for g in backend.generate(thirds, [prompt, previous, prompt], text_only)]
out["previous_alone"] = decoded(backend.generate(backend.encode([windows[1]]), [previous], text_only)[0])
words = backend.align_words(thirds, [prompt] * 3, [g.tokens for g in batch], tok)
out["words"] = [[[w.word, w.start, w.end, w.probability, w.tokens] for w in ws] for ws in words]
out["words_empty"] = backend.align_words(thirds, [prompt] * 3, [[], [], []], tok)

out["silence"] = decoded(backend.generate(backend.encode([np.zeros(160000, np.float32)]), [prompt], text_only)[0])

errors = {}
with tempfile.TemporaryDirectory() as tmp:
    mlx = Path(tmp) / "mlx-model"
    mlx.mkdir()
    (mlx / "config.json").write_text("{}")
    (mlx / "weights.safetensors").write_bytes(b"")
    for name, requested in (("mlx", str(mlx)), ("offline", "nobody-xyz/not-a-model")):
        try:
            errors[name] = str(resolve_ct2_model(requested, tmp))
        except StageError as error:
            errors[name] = [int(error.exit_code), error.message]
out["resolve"] = {"bundled": str(model_dir), "folder": str(resolve_ct2_model(str(model_dir), None)), **errors}
print(json.dumps(out))
"""


def normalized(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s']", " ", text.lower())).strip()


@pytest.fixture(scope="module")
def probe(transcribe_python: Path, sample_wav: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run(
        [str(transcribe_python), "-c", PROBE, str(sample_wav)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_loads_the_bundled_model_on_cpu_as_float32(probe: dict) -> None:
    assert (probe["device"], probe["compute_type"], probe["n_mels"], probe["is_multilingual"]) == ("cpu", "float32", 80, False)
    assert probe["languages"] == [{"en": 1.0}]  # English-only: no detection to run
    assert probe["num_frames"] == [3000] and probe["thirds_num_frames"] == [1000, 1000, 1000]


def test_greedy_matches_faster_whisper_and_the_reference(probe: dict, sample_reference_text: str) -> None:
    greedy, fw = probe["greedy"], probe["fw_greedy"]
    assert len(greedy["tokens"]) > 50 and "New Jersey" in greedy["text"]
    assert greedy["tokens"] == fw["tokens"]
    assert greedy["avg_logprob"] == pytest.approx(fw["avg_logprob"], abs=1e-6)
    assert greedy["no_speech_prob"] == pytest.approx(fw["no_speech_prob"], abs=1e-6)
    # openai-whisper's definition: the end-of-text token counts in the average.
    assert greedy["avg_logprob"] == pytest.approx(greedy["sum_logprob"] / (len(greedy["tokens"]) + 1))
    assert jiwer.wer(normalized(sample_reference_text), normalized(greedy["text"])) <= 0.3


def test_beam_search_matches_faster_whisper(probe: dict) -> None:
    assert probe["beam5"]["tokens"] == probe["fw_beam5"]["tokens"]
    assert probe["beam5"]["avg_logprob"] == pytest.approx(probe["fw_beam5"]["avg_logprob"], abs=1e-6)


def test_a_window_decodes_the_same_in_a_batch_and_alone(probe: dict) -> None:
    for batched, alone in zip(probe["batched"], probe["alone"], strict=True):
        assert batched["tokens"] == alone["tokens"] and batched["tokens"]
        assert batched["avg_logprob"] == pytest.approx(alone["avg_logprob"], abs=1e-3)
        assert batched["no_speech_prob"] == pytest.approx(alone["no_speech_prob"], abs=1e-3)


def test_prompts_with_previous_text_batch_with_plain_ones(probe: dict) -> None:
    mixed = probe["mixed"]
    assert [mixed[0]["tokens"], mixed[2]["tokens"]] == [probe["alone"][0]["tokens"], probe["alone"][2]["tokens"]]
    assert mixed[1]["tokens"] == probe["previous_alone"]["tokens"]


def test_silence_is_no_speech(probe: dict) -> None:
    silence = probe["silence"]
    assert silence["no_speech_prob"] > 0.6
    assert len(normalized(silence["text"]).split()) <= 1


def test_max_new_tokens_bounds_the_decode_exactly(probe: dict) -> None:
    # CT2's max_length is not "prompt + new tokens" (it also caps at half of it): the backend must translate.
    assert len(probe["max20"]["tokens"]) == 20
    assert probe["max20"]["tokens"] == probe["greedy"]["tokens"][:20]


def test_an_immediate_end_of_text_has_a_finite_logprob(probe: dict) -> None:
    only_eot = probe["only_eot"]  # every token but end-of-text suppressed: CT2's score alone would be x / 0
    assert only_eot["tokens"] == []
    assert only_eot["sum_logprob"] == pytest.approx(0.0, abs=1e-4) and only_eot["avg_logprob"] == pytest.approx(0.0, abs=1e-4)


def test_timestamp_mode_starts_with_an_early_timestamp(probe: dict) -> None:
    tokens, timestamp_begin = probe["timestamps"]["tokens"], probe["prompt"][-1] + 1
    assert tokens[0] >= timestamp_begin and tokens[0] - timestamp_begin <= 50  # max_initial_timestamp 1.0 s
    stamps = [t for t in tokens if t >= timestamp_begin]
    assert len(stamps) >= 2 and stamps == sorted(stamps)
    assert "New Jersey" in probe["timestamps"]["text"]


def test_word_times_are_monotonic_and_spell_the_text(probe: dict) -> None:
    for words, batched in zip(probe["words"], probe["batched"], strict=True):
        assert "".join(w[0] for w in words) == batched["text"]
        assert [t for w in words for t in w[4]] == batched["tokens"]
        times = [t for w in words for t in (w[1], w[2])]
        assert times == sorted(times)
        assert 0.0 <= times[0] and times[-1] <= 10.0
        assert all(0.0 <= w[3] <= 1.0 for w in words)
    assert probe["words_empty"] == [[], [], []]


def test_model_resolution(probe: dict) -> None:
    resolved = probe["resolve"]
    assert Path(resolved["bundled"], "model.bin").is_file()
    assert resolved["folder"] == resolved["bundled"]
    code, message = resolved["mlx"]
    assert code == 5 and "CTranslate2 (faster-whisper) model" in message and "--backend mlx" in message
    code, message = resolved["offline"]
    assert code == 5 and "HF_HUB_OFFLINE" in message
