"""`--vad_method pyannote`: stage 2's env exports WhisperX's VAD model to ONNX once, stage 1 runs it without torch
and finds the speech regions whisperx's own pipeline finds on the sample; the CLI does the export by itself."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

# In the align_diarize env: whisperx's VAD exactly as whisperx.asr runs it (scores, its Binarize, its merge_chunks).
WHISPERX = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch
import whisperx.vad as wv
from stages.align_diarize.diarization.checkpoints import pyannote_checkpoints_allowed
from stages.align_diarize.export_vad import export
from stages.common.audio import decode_audio

first = export()
torch_loaded_before = "torch" in sys.modules
audio = decode_audio(sys.argv[1]).samples  # the samples stage 1 decodes, so that only the VAD differs
with pyannote_checkpoints_allowed():
    pipeline = wv.load_vad_model("cpu")
scores = pipeline({"waveform": torch.from_numpy(audio).unsqueeze(0), "sample_rate": 16000})
regions = wv.Binarize(max_duration=30.0, onset=0.5, offset=0.363)(scores).get_timeline()
chunks = wv.merge_chunks(scores, 30.0, onset=0.5, offset=0.363)
print(json.dumps({"model": str(first), "scores": scores.data[:, 0].tolist(), "regions": [[r.start, r.end] for r in regions],
                  "chunks": [[c["start"], c["end"]] for c in chunks]}))
"""

# A second export with the files in place: returns without importing torch.
AGAIN = r"""
import json, sys
from stages.align_diarize.export_vad import export
path = export()
print(json.dumps({"model": str(path), "torch_imported": "torch" in sys.modules}))
"""

# In stage 1's env: our run of the exported model.
OURS = r"""
import json, sys
from stages.common.audio import decode_audio
from stages.transcribe.vad import chunking
from stages.transcribe.vad import pyannote as pyannote_vad
from stages.transcribe.vad.options import VadOptions
audio = decode_audio(sys.argv[1]).samples
scores, middles = pyannote_vad.speech_scores(audio)
options = VadOptions(method="pyannote")
print(json.dumps({"scores": scores.tolist(), "spans": chunking.speech_spans(audio, options),
                  "chunks": [[c.start, c.end] for c in chunking.vad_chunks(audio, options)],
                  "short_chunks": [[c.start, c.end] for c in chunking.vad_chunks(audio, VadOptions(method="pyannote", chunk_size=5.0))],
                  "silence": chunking.speech_spans(audio[:16000] * 0, options)}))
"""


def _json(python: Path, script: str, *args: str, env: dict[str, str]) -> dict:
    done = subprocess.run([str(python), "-c", script, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "STAGEWHISPER_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def runs(align_python: Path, transcribe_python: Path, sample_wav: Path, cache: dict[str, str]) -> dict:
    whisperx = _json(align_python, WHISPERX, str(sample_wav), env=cache)
    again = _json(align_python, AGAIN, env=cache)
    ours = _json(transcribe_python, OURS, str(sample_wav), env=cache)
    return {"whisperx": whisperx, "again": again, "ours": ours}


def test_the_export_lands_in_the_cache_once(runs: dict, cache: dict[str, str]) -> None:
    model = Path(runs["whisperx"]["model"])
    assert model.parent.parent == Path(cache["STAGEWHISPER_CACHE"]) and model.suffix == ".onnx"
    assert model.is_file() and model.with_suffix(".json").is_file()
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".export-")], "no temporary file may stay behind"
    assert runs["again"] == {"model": str(model), "torch_imported": False}


def test_stage1_finds_the_regions_whisperx_finds(runs: dict) -> None:
    theirs, ours = runs["whisperx"], runs["ours"]
    assert len(theirs["regions"]) >= 2, "the sample has pauses: several regions"
    assert len(ours["spans"]) == len(theirs["regions"])
    for (start, end), (their_start, their_end) in zip(ours["spans"], theirs["regions"], strict=True):
        assert abs(start - their_start) < 0.02 and abs(end - their_end) < 0.02  # about one 17 ms frame
    assert len(ours["chunks"]) == len(theirs["chunks"])
    for (start, end), (their_start, their_end) in zip(ours["chunks"], theirs["chunks"], strict=True):
        assert abs(start - their_start) < 0.02 and abs(end - their_end) < 0.02
    scores = min(len(ours["scores"]), len(theirs["scores"]))
    assert abs(len(ours["scores"]) - len(theirs["scores"])) <= 1
    assert max(abs(a - b) for a, b in zip(ours["scores"][:scores], theirs["scores"][:scores], strict=True)) < 1e-3


def test_chunks_respect_chunk_size_and_silence_has_no_speech(runs: dict) -> None:
    short = runs["ours"]["short_chunks"]
    assert len(short) > len(runs["ours"]["chunks"]) and all(end - start <= 5.0 + 1e-6 for start, end in short)
    assert runs["ours"]["silence"] == []


def test_the_cli_exports_the_model_itself(sample_wav: Path, tmp_path: Path, cache: dict[str, str]) -> None:
    env = {**cache, "STAGEWHISPER_CACHE": str(tmp_path / "fresh-cache")}
    command = ["stagewhisper", "transcribe", str(sample_wav), "--model", "bundled-tiny.en", "--vad_method", "pyannote"]
    done = subprocess.run([*command, "--output_dir", str(tmp_path)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    transcript = json.loads((tmp_path / f"{sample_wav.stem}.transcript.json").read_text())
    vad = transcript["decoding"]["vad"]
    assert vad["method"] == "pyannote" and vad["offset"] == pytest.approx(0.363)
    assert "new jersey" in transcript["text"].lower()
    assert list((tmp_path / "fresh-cache" / "vad").glob("*.onnx"))
