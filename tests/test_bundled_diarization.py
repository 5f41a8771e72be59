"""The bundled offline diarization pipeline (stage 2): real audio, real bundled weights, run in the align_diarize env.

DER is pyannote.metrics' DiarizationErrorRate(collar=0.25, skip_overlap=False): a 0.25 s total collar, overlap scored.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "env_scripts"
MAX_SAMPLE_DER = 0.12


def run_env_script(python: Path, script: str, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([str(python), str(SCRIPTS / script), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def align_python(stage_envs: dict[str, Path]) -> Path:
    return stage_envs["align_diarize"]


@pytest.fixture(scope="module")
def sample_rttm(sample_wav: Path) -> Path:
    return sample_wav.with_suffix(".rttm")


@pytest.fixture(scope="module")
def sample_der(align_python: Path, sample_wav: Path, sample_rttm: Path) -> dict:
    return run_env_script(align_python, "diarization_der.py", str(sample_wav), str(sample_rttm))


@pytest.fixture(scope="module")
def ge2e(align_python: Path, sample_wav: Path, sample_rttm: Path) -> dict:
    return run_env_script(align_python, "diarization_ge2e.py", str(sample_wav), str(sample_rttm))


@pytest.mark.parametrize("speakers", ["auto", "two", "min2_max4"])
def test_sample_der(sample_der: dict, speakers: str) -> None:
    assert sample_der[speakers]["der"] <= MAX_SAMPLE_DER, sample_der
    assert sample_der[speakers]["num_speakers"] == 2


@pytest.mark.slow
def test_ten_times_the_sample_keeps_two_speakers_and_low_der(align_python: Path, sample_wav: Path, sample_rttm: Path) -> None:
    """300 s: the sample repeated 10x, reference shifted by 30 s each time (the same two speakers come back)."""
    result = run_env_script(align_python, "diarization_der.py", str(sample_wav), str(sample_rttm), "10")
    for speakers in ("auto", "two", "min2_max4"):
        assert result[speakers]["der"] <= MAX_SAMPLE_DER, result
        assert result[speakers]["num_speakers"] == 2, result


def test_ge2e_separates_the_two_speakers(ge2e: dict) -> None:
    assert min(ge2e["same_speaker"]) > max(ge2e["cross_speaker"]), ge2e


def test_ge2e_embeddings_are_256_d_unit_vectors(ge2e: dict) -> None:
    assert ge2e["dimension"] == 256
    assert all(abs(norm - 1.0) < 1e-5 for norm in ge2e["norms"])
    assert ge2e["finite"]


def test_ge2e_honours_frame_masks(ge2e: dict) -> None:
    """One chunk with both speakers: each speaker's mask gives an embedding closer to that speaker."""
    assert ge2e["masked_a"]["to_a"] > ge2e["masked_a"]["to_b"], ge2e
    assert ge2e["masked_b"]["to_b"] > ge2e["masked_b"]["to_a"], ge2e
    assert ge2e["empty_mask_is_nan"]  # pyannote's clustering drops NaN embeddings (inactive speakers)


def test_ge2e_as_pyannote_sees_it(ge2e: dict) -> None:
    view = ge2e["pipeline_view"]
    assert (view["dimension"], view["sample_rate"], view["metric"]) == (256, 16000, "cosine")
    # pyannote finds min_num_samples by calling forward on ever shorter noise, searching only up to 0.5 s
    assert view["min_num_samples"] == min(ge2e["model_min_num_samples"], 8000)
    assert ge2e["specifications"] == {"problem": "REPRESENTATION", "resolution": "CHUNK"}


def test_torch_mel_matches_librosa(ge2e: dict) -> None:
    """Resemblyzer's librosa mel (n_fft 400, hop 160, 40 bands) vs ours in torch, on the 30 s sample."""
    assert ge2e["mel"]["shape_equal"]
    assert ge2e["mel"]["max_rel_error"] < 2e-3
    assert ge2e["mel"]["rel_frobenius_error"] < 1e-3
