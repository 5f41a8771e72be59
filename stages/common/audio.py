"""Decoding any audio/video file PyAV (FFmpeg's libraries) can read into 16 kHz mono float32."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.contract import AudioInfo
from shared.errors import ExitCode, StageError
from shared.io import file_sha256

SAMPLE_RATE = 16_000
_BLOCK_FRAMES = 1 << 20  # 1 M samples (2 MB of PCM) per read


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
            return _pcm_blocks(reader)
    except (wave.Error, EOFError, OSError):
        return None  # not a plain PCM WAV (or a damaged one): PyAV decides, and explains


def _pcm_blocks(reader) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The samples as float32, read block by block into one array: peak memory is the result plus a block (reading
    all bytes first held the file's bytes, a copy and two float arrays: 2.8 GB for 4 hours)."""
    samples = np.empty(reader.getnframes(), dtype=np.float32)
    filled = 0
    while block := reader.readframes(_BLOCK_FRAMES):
        pcm = np.frombuffer(block, dtype="<i2", count=len(block) // 2)[: samples.size - filled]
        np.divide(pcm, np.float32(32768.0), out=samples[filled : filled + pcm.size], dtype=np.float32)
        filled += pcm.size
    return samples[:filled]  # a header promising more frames than the file holds: what is there


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
    buffer = _SampleBuffer(_expected_samples(container, stream))
    for frame in container.decode(stream):
        buffer.extend(resampler.resample(frame))
    buffer.extend(resampler.resample(None))  # flush the resampler's buffered tail
    return buffer.samples()


def _expected_samples(container, stream) -> int:  # type: ignore[no-untyped-def]
    """Samples at 16 kHz the container says it holds (a little over), or one minute's worth when it does not say."""
    seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
    if seconds is None and container.duration:
        seconds = container.duration / 1_000_000  # av.time_base: microseconds
    return int((seconds or 60.0) * SAMPLE_RATE * 1.01) + SAMPLE_RATE


class _SampleBuffer:
    """Decoded frames written into one preallocated float32 array (grown by half when the container's duration was
    short), instead of a list of frames concatenated at the end: that held every sample twice."""

    def __init__(self, capacity: int) -> None:
        self._array = np.empty(capacity, dtype=np.float32)
        self._size = 0

    def extend(self, frames) -> None:  # type: ignore[no-untyped-def]
        for frame in frames:
            data = frame.to_ndarray().reshape(-1)
            if self._size + data.size > self._array.size:
                grown = np.empty(max(self._size + data.size, int(self._array.size * 1.5)), dtype=np.float32)
                grown[: self._size] = self._array[: self._size]
                self._array = grown
            self._array[self._size : self._size + data.size] = data
            self._size += data.size

    def samples(self) -> np.ndarray:
        return self._array[: self._size]


def _reason(error: Exception) -> str:
    if getattr(error, "strerror", None):  # FFmpeg's own words, without errno and path
        return str(error.strerror)
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
