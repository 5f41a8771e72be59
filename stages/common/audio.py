"""Decoding any audio/video file PyAV (FFmpeg's libraries) can read into 16 kHz mono float32."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.contract import AudioInfo
from shared.errors import ExitCode, StageError
from shared.io import file_sha256

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    info: AudioInfo


def check_readable(path: Path) -> None:
    """Fail early, with the reason, on what cannot be audio at all."""
    if not path.exists():
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: file not found; check the path")
    if not path.is_file():
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: not a regular file; pass an audio or video file")
    if path.stat().st_size == 0:
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: file is empty; pass a recording with audio in it")


def decode_audio(path: str | Path) -> DecodedAudio:
    """Decode, downmix and resample with PyAV (a 16 kHz mono PCM WAV is read directly); the hash is of the file's bytes."""
    path = Path(path)
    check_readable(path)
    samples = read_pcm_wav(path)
    source_rate, source_channels = SAMPLE_RATE, 1
    if samples is None:
        samples, source_rate, source_channels = _decode_with_pyav(path)
    if samples.size == 0:
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: decoded to no audio samples; is the file truncated?")
    info = AudioInfo(
        path=str(path),
        resolved_path=str(path.resolve()),  # stage 2 and packs find it from any folder
        sha256=file_sha256(path),
        duration=round(samples.size / SAMPLE_RATE, 3),
        sample_rate=source_rate or SAMPLE_RATE,
        channels=source_channels or None,
    )
    return DecodedAudio(samples=samples, info=info)


def read_pcm_wav(path: Path) -> np.ndarray | None:
    """The samples of a 16 kHz mono 16-bit PCM WAV, read with the stdlib, else None: the same numbers PyAV gives
    (x / 32768) in ~0.01 s instead of 0.2-0.4 s per 5 minutes (its resampler runs per 1024-sample frame)."""
    import wave

    try:
        with wave.open(str(path), "rb") as reader:
            if (reader.getframerate(), reader.getnchannels(), reader.getsampwidth(), reader.getcomptype()) != (SAMPLE_RATE, 1, 2, "NONE"):
                return None
            data = reader.readframes(reader.getnframes())
    except (wave.Error, EOFError, OSError):
        return None  # not a plain PCM WAV (or a damaged one): PyAV decides, and explains
    pcm = np.frombuffer(data[: len(data) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / np.float32(32768.0)


def _decode_with_pyav(path: Path) -> tuple[np.ndarray, int | None, int | None]:
    import av  # deferred: only the stage envs have it

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise StageError(ExitCode.BAD_AUDIO, f"{path}: has no audio stream; pass a file with sound")
            stream = container.streams.audio[0]
            source_rate, source_channels = stream.codec_context.sample_rate, stream.codec_context.channels
            return _resample_stream(container, stream), source_rate, source_channels
    except StageError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise StageError(
            ExitCode.BAD_AUDIO, f"{path}: cannot decode audio ({_reason(error)}); is it a complete audio/video file?"
        ) from None


def _resample_stream(container, stream) -> np.ndarray:  # type: ignore[no-untyped-def]
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []

    def collect(frames) -> None:  # type: ignore[no-untyped-def]
        for frame in frames:
            chunks.append(frame.to_ndarray().reshape(-1))

    for frame in container.decode(stream):
        collect(resampler.resample(frame))
    collect(resampler.resample(None))  # flush the resampler's buffered tail
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks).astype(np.float32, copy=False)


def _reason(error: Exception) -> str:
    if getattr(error, "strerror", None):  # FFmpeg's own words, without errno and path
        return str(error.strerror)
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
