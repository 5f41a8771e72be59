"""Convert a CTranslate2 Whisper model (faster-whisper format) into an MLX Whisper folder.

The output folder is what `mlx_whisper.load_models.load_model` expects: `config.json`
(ModelDimensions + "model_type") and `weights.safetensors`. Conversions are cached by the
content of the CT2 model, so only the first use pays for it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from stages.common.cache import cache_root as stage_cache_root
from stages.common.cache import memoized_sha256

if TYPE_CHECKING:  # numpy/mlx live in the stage env only; keep the module importable anywhere
    import numpy as np

__all__ = [
    "CONVERTER_VERSION",
    "convert_ct2_to_mlx",
    "cached_conversion",
    "default_cache_root",
    "is_ct2_model_dir",
    "mlx_dims",
    "read_ct2_model",
]

# Bump when the output changes, so stale cache entries are never reused.
CONVERTER_VERSION = 1

_SUPPORTED_BINARY_VERSIONS = (5, 6)  # v5 and v6 share the variable layout we read
# CT2 type ids, in the order of `_dtype_to_type_id` in ctranslate2/specs/model_spec.py.
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_OUT_DTYPES = ("float32", "float16")


# ---------------------------------------------------------------- CT2 model.bin reader


def _unpack(f: BinaryIO, fmt: str) -> int:
    size = struct.calcsize("<" + fmt)
    data = f.read(size)
    if len(data) != size:
        raise ValueError("truncated CTranslate2 model.bin")
    return struct.unpack("<" + fmt, data)[0]


def _read_string(f: BinaryIO) -> str:
    length = _unpack(f, "H")  # includes the trailing NUL
    return f.read(length)[:-1].decode("utf-8")


def _decode_array(raw: bytes, type_id: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    import numpy as np

    if type_id >= len(_CT2_DTYPES):
        raise ValueError(f"{name}: unknown CTranslate2 dtype id {type_id}")
    dtype = _CT2_DTYPES[type_id]
    if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 bits into float32
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)


def read_ct2_model(model_bin: Path) -> dict[str, np.ndarray]:
    """All variables of a CT2 `model.bin` (binary v5/v6), with aliases resolved to their targets."""
    variables: dict[str, np.ndarray] = {}
    with open(model_bin, "rb") as f:
        version = _unpack(f, "I")
        if version not in _SUPPORTED_BINARY_VERSIONS:
            raise ValueError(f"{model_bin}: unsupported CTranslate2 binary version {version}")
        _read_string(f)  # spec name, e.g. "WhisperSpec"
        _unpack(f, "I")  # spec revision
        for _ in range(_unpack(f, "I")):
            name = _read_string(f)
            shape = tuple(_unpack(f, "I") for _ in range(_unpack(f, "B")))
            type_id = _unpack(f, "B")
            raw = f.read(_unpack(f, "I"))
            variables[name] = _decode_array(raw, type_id, shape, name)
        for _ in range(_unpack(f, "I")):
            alias, target = _read_string(f), _read_string(f)
            variables[alias] = variables[target]
    return variables


# ---------------------------------------------------------------- CT2 -> MLX mapping


def is_ct2_model_dir(path: Path) -> bool:
    """True for a folder holding a CTranslate2 model (a model.bin starting with a known version)."""
    model_bin = Path(path) / "model.bin"
    try:
        with open(model_bin, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return len(head) == 4 and struct.unpack("<I", head)[0] in _SUPPORTED_BINARY_VERSIONS


def _dequantized(ct2: dict[str, np.ndarray], name: str) -> np.ndarray:
    """A float32 tensor; int8/int16 weights are divided by their `<name>_scale` (CT2 quantization)."""
    import numpy as np

    value = ct2[name]
    if value.dtype.kind == "f":
        return value.astype(np.float32)
    scale = ct2.get(name + "_scale")
    if scale is None or value.dtype not in (np.int8, np.int16):
        raise ValueError(f"{name}: unsupported dtype {value.dtype} without a quantization scale")
    scale = scale.astype(np.float32)
    # int8 scales are per output row (conv weights flattened to 2D); int16 uses one scalar.
    rows = value.reshape(value.shape[0], -1) if scale.ndim == 1 else value
    per_row = scale[:, None] if scale.ndim == 1 else scale
    return (rows.astype(np.float32) / per_row).reshape(value.shape)


def _layer_count(ct2: dict[str, np.ndarray], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    return len({m.group(1) for m in map(pattern.match, ct2) if m})


def mlx_dims(ct2: dict[str, np.ndarray]) -> dict[str, int]:
    """mlx_whisper ModelDimensions, all taken from tensor shapes and the stored head counts."""
    if "encoder/conv1/weight" not in ct2 or "decoder/embeddings/weight" not in ct2:
        raise ValueError("not a CTranslate2 Whisper model (no encoder conv / decoder embeddings)")
    conv1 = ct2["encoder/conv1/weight"].shape  # (n_audio_state, n_mels, kernel)
    return {
        "n_mels": int(conv1[1]),
        "n_audio_ctx": int(ct2["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1[0]),
        "n_audio_head": int(ct2["encoder/num_heads"]),
        "n_audio_layer": _layer_count(ct2, "encoder"),
        "n_vocab": int(ct2["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(ct2["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(ct2["decoder/embeddings/weight"].shape[1]),
        "n_text_head": int(ct2["decoder/num_heads"]),
        "n_text_layer": _layer_count(ct2, "decoder"),
    }


def _linear(ct2: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = _dequantized(ct2, f"{src}/weight")
    out[f"{dst}.bias"] = _dequantized(ct2, f"{src}/bias")


def _layer_norm(ct2: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    out[f"{dst}.weight"] = _dequantized(ct2, f"{src}/gamma")
    out[f"{dst}.bias"] = _dequantized(ct2, f"{src}/beta")


def _fused_qkv(ct2: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    """Self-attention: CT2 fuses q/k/v into one (3d, d) linear; Whisper's key has no bias."""
    import numpy as np

    (wq, wk, wv), (bq, _, bv) = (np.split(_dequantized(ct2, f"{src}/{k}"), 3) for k in ("weight", "bias"))
    out[f"{dst}.query.weight"], out[f"{dst}.query.bias"] = wq, bq
    out[f"{dst}.key.weight"] = wk  # CT2 stores a zero key bias; MLX's key Linear has none
    out[f"{dst}.value.weight"], out[f"{dst}.value.bias"] = wv, bv


def _cross_attention(ct2: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray]) -> None:
    """Cross-attention: linear_0 is the query, linear_1 fuses key and value (encoder side)."""
    _linear(ct2, f"{src}/linear_0", f"{dst}.query", out)
    w, b = _dequantized(ct2, f"{src}/linear_1/weight"), _dequantized(ct2, f"{src}/linear_1/bias")
    d = w.shape[0] // 2
    out[f"{dst}.key.weight"], out[f"{dst}.value.weight"] = w[:d], w[d:]
    out[f"{dst}.value.bias"] = b[d:]  # key bias is zero in CT2 and absent in MLX
    _linear(ct2, f"{src}/linear_2", f"{dst}.out", out)


def _block(ct2: dict[str, np.ndarray], src: str, dst: str, out: dict[str, np.ndarray], cross: bool) -> None:
    _layer_norm(ct2, f"{src}/self_attention/layer_norm", f"{dst}.attn_ln", out)
    _fused_qkv(ct2, f"{src}/self_attention/linear_0", f"{dst}.attn", out)
    _linear(ct2, f"{src}/self_attention/linear_1", f"{dst}.attn.out", out)
    if cross:
        _layer_norm(ct2, f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln", out)
        _cross_attention(ct2, f"{src}/attention", f"{dst}.cross_attn", out)
    _layer_norm(ct2, f"{src}/ffn/layer_norm", f"{dst}.mlp_ln", out)
    _linear(ct2, f"{src}/ffn/linear_0", f"{dst}.mlp1", out)
    _linear(ct2, f"{src}/ffn/linear_1", f"{dst}.mlp2", out)


def mlx_weights(ct2: dict[str, np.ndarray], dims: dict[str, int]) -> dict[str, np.ndarray]:
    """float32 MLX parameters keyed like mlx_whisper.whisper.Whisper's parameter tree."""
    out: dict[str, np.ndarray] = {}
    for conv in ("conv1", "conv2"):  # CT2/PyTorch (out, in, kernel) -> MLX (out, kernel, in)
        out[f"encoder.{conv}.weight"] = _dequantized(ct2, f"encoder/{conv}/weight").transpose(0, 2, 1)
        out[f"encoder.{conv}.bias"] = _dequantized(ct2, f"encoder/{conv}/bias")
    # The encoder positional embedding is dropped: MLX recomputes the same sinusoids.
    for i in range(dims["n_audio_layer"]):
        _block(ct2, f"encoder/layer_{i}", f"encoder.blocks.{i}", out, cross=False)
    _layer_norm(ct2, "encoder/layer_norm", "encoder.ln_post", out)
    out["decoder.token_embedding.weight"] = _dequantized(ct2, "decoder/embeddings/weight")
    out["decoder.positional_embedding"] = _dequantized(ct2, "decoder/position_encodings/encodings")
    for i in range(dims["n_text_layer"]):
        _block(ct2, f"decoder/layer_{i}", f"decoder.blocks.{i}", out, cross=True)
    _layer_norm(ct2, "decoder/layer_norm", "decoder.ln", out)
    return out


def _alignment_heads(ct2_dir: Path) -> np.ndarray | None:
    """(layer, head) pairs from faster-whisper's config.json; None lets MLX use its default."""
    import numpy as np

    config = ct2_dir / "config.json"
    heads = json.loads(config.read_text(encoding="utf-8")).get("alignment_heads") if config.is_file() else None
    return np.asarray(heads, dtype=np.int64).reshape(-1, 2) if heads else None


# ---------------------------------------------------------------- writing


def _save_safetensors(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import mlx.core as mx

    mx.save_safetensors(str(path), {k: mx.array(v) for k, v in arrays.items()}, metadata={"format": "mlx"})


def _write_model(ct2_dir: Path, folder: Path, dtype: str) -> None:
    ct2 = read_ct2_model(ct2_dir / "model.bin")
    dims = mlx_dims(ct2)
    weights = {k: v.astype(dtype) for k, v in mlx_weights(ct2, dims).items()}
    heads = _alignment_heads(ct2_dir)
    if heads is not None:  # an mx.array attribute of Whisper, so model.update() restores it
        weights["alignment_heads"] = heads
    _save_safetensors(folder / "weights.safetensors", weights)
    config = {**dims, "model_type": "whisper"}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Atomically put `tmp` at `out_dir`, replacing an old folder there."""
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        out_dir.rename(old / "x")
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _check_inputs(ct2_dir: Path, dtype: str) -> None:
    if dtype not in _OUT_DTYPES:
        raise ValueError(f"dtype must be one of {_OUT_DTYPES}, not {dtype!r}")
    if not is_ct2_model_dir(ct2_dir):
        raise ValueError(f"{ct2_dir} is not a CTranslate2 model folder (no valid model.bin)")


def convert_ct2_to_mlx(ct2_dir: Path, out_dir: Path, dtype: str = "float32") -> Path:
    """Write an MLX Whisper folder (config.json + weights.safetensors) at `out_dir`; returns it."""
    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    _check_inputs(ct2_dir, dtype)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary shared folder
    try:
        _write_model(ct2_dir, tmp, dtype)
        _swap_in(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # no-op after a successful rename
    return out_dir


# ---------------------------------------------------------------- cache


def default_cache_root() -> Path:
    return stage_cache_root() / "mlx-models"


def _content_digest(ct2_dir: Path, cache_root: Path) -> str:
    """sha256 of model.bin (+ config.json, which holds alignment_heads)."""
    files = [p for p in (ct2_dir / "model.bin", ct2_dir / "config.json") if p.is_file()]
    return hashlib.sha256("|".join(memoized_sha256(p, cache_root / ".digests") for p in files).encode()).hexdigest()


def _is_converted(folder: Path) -> bool:
    try:
        json.loads((folder / "config.json").read_text(encoding="utf-8"))
        return (folder / "weights.safetensors").stat().st_size > 0
    except (OSError, ValueError):
        return False


def cached_conversion(ct2_dir: Path, dtype: str = "float32", cache_root: Path | None = None) -> Path:
    """The MLX folder for `ct2_dir`, converting on first use; later calls return it as is."""
    ct2_dir = Path(ct2_dir)
    _check_inputs(ct2_dir, dtype)
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    digest = _content_digest(ct2_dir, root)
    folder = root / f"whisper-{digest[:24]}-{dtype}-v{CONVERTER_VERSION}"
    if _is_converted(folder):
        return folder
    try:
        return convert_ct2_to_mlx(ct2_dir, folder, dtype)
    except OSError:
        if _is_converted(folder):  # another process won the race to rename into place
            return folder
        raise
