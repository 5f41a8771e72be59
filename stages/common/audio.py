"""Decoding any audio/video file PyAV (FFmpeg's libraries) can read into 16 kHz mono float32."""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.contract import AudioInfo
from shared.errors import ExitCode, StageError
from shared.flags import ALLOW_TRUNCATED_ENV
from shared.io import file_sha256

SAMPLE_RATE = 16_000
_BLOCK_FRAMES = 1 << 20  # 1 M samples (2 MB of PCM) per read
# A WAV data size that means "unknown length" (streamed writers), not a promise of 4 GB of audio.
_WAV_UNKNOWN_SIZES = (0xFFFFFFFF, 0x7FFFFFFF)


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32, mono, SAMPLE_RATE
    info: AudioInfo

    def take_samples(self) -> np.ndarray:
        """The samples, handed over: this object keeps none, so the taker alone decides when they are freed."""
        samples, self.samples = self.samples, np.empty(0, dtype=np.float32)
        return samples


@dataclass
class _Decoded:
    samples: np.ndarray
    source_rate: int | None = SAMPLE_RATE
    source_channels: int | None = 1
    declared_seconds: float | None = None  # what the header/container says it holds; None: it does not say


def check_readable(path: Path) -> None:
    """Fail early, with the reason, on what cannot be audio at all."""
    if not path.exists():
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: file not found; check the path")
    if not path.is_file():
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: not a regular file; pass an audio or video file")
    if path.stat().st_size == 0:
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: file is empty; pass a recording with audio in it")


def decode_audio(path: str | Path, allow_truncated: bool | None = None) -> DecodedAudio:
    """Decode, downmix and resample with PyAV (a 16 kHz mono PCM WAV is read directly); the hash is of the file's bytes.

    Audio shorter than its header or container says (a cut or damaged file) is refused with exit 3, unless
    `allow_truncated` (default: $STAGEWHISPER_ALLOW_TRUNCATED): then what is there is kept and the shortfall is
    recorded in `audio.warnings`. Never silently: a cut 11 s WAV was once transcribed as a 0.09 s file."""
    path = Path(path)
    check_readable(path)
    decoded = _read_pcm_wav(path) or _decode_with_pyav(path)
    samples = decoded.samples
    if samples.size == 0:
        raise StageError(ExitCode.BAD_AUDIO, f"{path}: decoded to no audio samples; is the file truncated?")
    if allow_truncated is None:
        allow_truncated = os.environ.get(ALLOW_TRUNCATED_ENV, "") in ("1", "true", "True")
    shortfall = truncation(decoded.declared_seconds, samples.size / SAMPLE_RATE)
    if shortfall and not allow_truncated:
        raise StageError(
            ExitCode.BAD_AUDIO, f"{path}: truncated or damaged: {shortfall}; check the file, or pass --allow_truncated to use what is there"
        )
    notes = [f"truncated or damaged: {shortfall}; transcribed what is there (--allow_truncated)"] if shortfall else []
    info = AudioInfo(
        path=str(path),
        resolved_path=str(path.resolve()),  # stage 2 and packs find it from any folder
        sha256=file_sha256(path),
        duration=round(samples.size / SAMPLE_RATE, 3),
        sample_rate=decoded.source_rate or SAMPLE_RATE,
        channels=decoded.source_channels or None,
        warnings=notes or None,
    )
    return DecodedAudio(samples=samples, info=info)


def truncation(declared: float | None, held: float) -> str | None:
    """The shortfall, "header says X s, file holds Y s", when the audio falls short of its declared length by more than resampling,
    codec priming and padding explain (a quarter second, or 0.5 % of long files); None when it does not, or when
    nothing was declared (streamed WAV, Ogg, MP3 without a duration header: their length is what they hold)."""
    if declared is None or held >= declared - max(0.25, 0.005 * declared):
        return None
    return f"header says {declared:.1f} s, file holds {held:.2f} s"


def read_pcm_wav(path: Path) -> np.ndarray | None:
    """The samples of a 16 kHz mono 16-bit PCM WAV, read with the stdlib, else None: the same numbers PyAV gives
    (x / 32768) in ~0.01 s instead of 0.2-0.4 s per 5 minutes (its resampler runs per 1024-sample frame)."""
    decoded = _read_pcm_wav(path)
    return None if decoded is None else decoded.samples


def _read_pcm_wav(path: Path) -> _Decoded | None:
    try:
        with wave.open(str(path), "rb") as reader:
            declared = _wav_declared_seconds(reader)
            if (reader.getframerate(), reader.getnchannels(), reader.getsampwidth(), reader.getcomptype()) != (SAMPLE_RATE, 1, 2, "NONE"):
                return None
            if reader.getnframes() == 0:
                return None  # a data size of 0 (some streamed writers): the stdlib reads nothing past it, FFmpeg reads on
            return _Decoded(_pcm_blocks(reader, _frames_present(path, reader)), declared_seconds=declared)
    except (wave.Error, EOFError, OSError, RuntimeError):  # RuntimeError: the stdlib seeking past a damaged chunk
        return None  # not a plain PCM WAV (or a damaged one): PyAV decides, and explains


def _wav_declared_seconds(reader: wave.Wave_read) -> float | None:
    """The duration the WAV header's data size promises; None for streamed WAVs (size 0 or all ones: unknown)."""
    data_bytes = reader.getnframes() * reader.getnchannels() * reader.getsampwidth()
    if data_bytes == 0 or any(abs(data_bytes - unknown) < 8 for unknown in _WAV_UNKNOWN_SIZES):
        return None
    return reader.getnframes() / reader.getframerate()


def _frames_present(path: Path, reader: wave.Wave_read) -> int:
    """Frames the header promises, but no more than the file can hold: a header saying 4 GB (streamed) or more
    than was written must not size the array."""
    frame_bytes = reader.getnchannels() * reader.getsampwidth()
    return min(reader.getnframes(), path.stat().st_size // max(frame_bytes, 1))


def _pcm_blocks(reader, capacity: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The samples as float32, read block by block into one array: peak memory is the result plus a block (reading
    all bytes first held the file's bytes, a copy and two float arrays: 2.8 GB for 4 hours)."""
    samples = np.empty(capacity, dtype=np.float32)
    filled = 0
    while filled < samples.size and (block := reader.readframes(min(_BLOCK_FRAMES, samples.size - filled))):
        pcm = np.frombuffer(block, dtype="<i2", count=len(block) // 2)[: samples.size - filled]
        np.divide(pcm, np.float32(32768.0), out=samples[filled : filled + pcm.size], dtype=np.float32)
        filled += pcm.size
    return samples[:filled]  # a header promising more frames than the file holds: what is there (decode_audio judges)


def _decode_with_pyav(path: Path) -> _Decoded:
    import av  # deferred: only the stage envs have it

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise StageError(ExitCode.BAD_AUDIO, f"{path}: has no audio stream; pass a file with sound")
            stream = container.streams.audio[0]
            source_rate, source_channels = stream.codec_context.sample_rate, stream.codec_context.channels
            declared = _declared_seconds(path, container, stream)
            return _Decoded(_resample_stream(container, stream), source_rate, source_channels, declared)
    except StageError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise StageError(
            ExitCode.BAD_AUDIO, f"{path}: cannot decode audio ({_reason(error)}); is it a complete audio/video file?"
        ) from None


def _declared_seconds(path: Path, container, stream) -> float | None:  # type: ignore[no-untyped-def]
    """The length the file declares. FFmpeg clamps a WAV's data size to the bytes present, so a WAV's own header is
    read; other containers: the stream's duration, else the container's (Ogg's comes from its last page, so a cut
    Ogg declares what it holds and cannot be told from a short one)."""
    if container.format.name == "wav":
        try:
            with wave.open(str(path), "rb") as reader:
                return _wav_declared_seconds(reader)
        except (wave.Error, EOFError, OSError, RuntimeError):  # RuntimeError: the stdlib seeking past a damaged chunk
            return None  # a WAV the stdlib cannot parse (float, extensible): FFmpeg's word is all there is
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None  # av.time_base: microseconds


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
