"""Silero VAD: speech probabilities and speech spans (vad/chunking.py merges the spans into chunks for Whisper).

Silero VAD gives one speech probability per 32 ms frame; hysteresis turns them into speech spans (the
semantics of silero's `get_speech_timestamps`), and spans longer than a Whisper window are cut at their least
speech-like frame.

The weights are the ones the `silero-vad` package ships. Its Python API imports torch, which this env must not
have (7 GB), so we run its ONNX export with onnxruntime and numpy ourselves.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shared.errors import ExitCode, StageError
from stages.common.audio import SAMPLE_RATE

from .options import VadOptions

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["speech_probabilities", "speech_spans"]

# silero-vad's batched export of the 16 kHz model: the same network as `silero_vad.onnx` (bit-identical
# probabilities, checked in tests/test_vad.py) but one ONNX call per block of frames instead of per frame.
MODEL_NAME = "silero_vad_16k_sequence.onnx"
FRAME = 512  # samples per probability at 16 kHz (32 ms)
CONTEXT = 64  # the model sees the previous frame's last 64 samples before each frame
BLOCK = 512  # frames per ONNX call (~16 s): as fast as one call for everything, with bounded memory
STATE_SHAPE = (1, 1, 128)  # LSTM hidden and cell state, carried from block to block


# ---------------------------------------------------------------- probabilities


def _model_path() -> Path:
    # find_spec locates the package without running its __init__, which imports torch.
    spec = importlib.util.find_spec("silero_vad")
    folders = list(spec.submodule_search_locations or []) if spec else []
    path = Path(folders[0], "data", MODEL_NAME) if folders else None
    if path is None or not path.is_file():
        raise StageError(ExitCode.ENV_BROKEN, f"silero-vad's {MODEL_NAME} is missing from the stage-1 env: run `stagewhisper setup`")
    return path


@functools.cache
def _session() -> onnxruntime.InferenceSession:
    """One session per process: loading takes ~50 ms, running 300 s of audio ~0.3 s."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # The recurrent model is sequential and tiny: more threads only add synchronisation, and the cores are
    # better left to Whisper (stage 1) and the stage-2 jobs running beside it.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # the export has unused initializers; ORT warns about them on every load
    return onnxruntime.InferenceSession(str(_model_path()), sess_options=options, providers=["CPUExecutionProvider"])


def _framed(audio: np.ndarray, first: int, count: int) -> np.ndarray:
    """Frames first..first+count as (count, CONTEXT + FRAME) rows: each frame after its predecessor's tail."""
    lo = first * FRAME - CONTEXT  # zeros stand for the context before the file and the end of the last frame
    buffer = np.zeros(CONTEXT + count * FRAME, dtype=np.float32)
    piece = audio[max(lo, 0) : (first + count) * FRAME]
    buffer[max(lo, 0) - lo : max(lo, 0) - lo + piece.size] = piece
    return np.lib.stride_tricks.sliding_window_view(buffer, CONTEXT + FRAME)[::FRAME].copy()


def speech_probabilities(samples: np.ndarray) -> np.ndarray:
    """Silero's speech probability for each 512-sample frame of 16 kHz mono float32 audio (last frame zero-padded)."""
    audio = np.ascontiguousarray(samples, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected mono samples (1-D), got shape {audio.shape}")
    total = -(-audio.size // FRAME)
    hidden, cell = np.zeros(STATE_SHAPE, np.float32), np.zeros(STATE_SHAPE, np.float32)
    out = [np.zeros(0, np.float32)]
    for first in range(0, total, BLOCK):
        feeds = {"input": _framed(audio, first, min(BLOCK, total - first)), "h": hidden, "c": cell}
        probs, hidden, cell = _session().run(["speech_probs", "hn", "cn"], feeds)
        out.append(probs.reshape(-1))
    return np.concatenate(out)


# ---------------------------------------------------------------- spans (in samples, then seconds)


def _hysteresis(probs: np.ndarray, options: VadOptions, n_samples: int) -> list[tuple[int, int]]:
    """silero's state machine: speech from a frame >= onset until min_silence of frames < offset."""
    min_silence = SAMPLE_RATE * options.min_silence_duration_ms / 1000
    spans: list[tuple[int, int]] = []
    start: int | None = None
    silent_since: int | None = None
    for index, prob in enumerate(probs.tolist()):
        at = index * FRAME
        if prob >= options.onset:
            silent_since = None  # frames between offset and onset neither extend nor end a pause
            start = at if start is None else start
        elif start is not None and prob < options.resolved_offset:
            silent_since = at if silent_since is None else silent_since
            if at - silent_since >= min_silence:
                spans.append((start, silent_since))
                start = silent_since = None
    if start is not None:
        spans.append((start, n_samples))
    min_speech = SAMPLE_RATE * options.min_speech_duration_ms / 1000
    return [(a, b) for a, b in spans if b - a > min_speech]


def _split_long(span: tuple[int, int], probs: np.ndarray, max_len: int) -> list[tuple[int, int]]:
    """Cut a span longer than max_len at its least speech-like frame, searched in the second half of the
    allowed window so the pieces stay long (fewer, fuller chunks), as WhisperX's min-cut does."""
    start, end = span
    pieces = []
    while end - start > max_len:
        lo, hi = -(-(start + max_len // 2) // FRAME), (start + max_len) // FRAME + 1
        cut = (lo + int(np.argmin(probs[lo:hi]))) * FRAME
        pieces.append((start, cut))
        start = cut
    return [*pieces, (start, end)]


def _pad(spans: list[tuple[int, int]], pad: int, n_samples: int) -> list[tuple[int, int]]:
    """Grow each span by pad on both sides; neighbours closer than 2 * pad share the gap (silero's rule)."""
    if not spans:
        return []
    grow = [min(pad, (b_start - a_end) // 2) for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)]
    before, after = [pad, *grow], [*grow, pad]
    return [(max(0, a - g0), min(n_samples, b + g1)) for (a, b), g0, g1 in zip(spans, before, after, strict=True)]


def speech_spans(samples: np.ndarray, options: VadOptions) -> list[tuple[float, float]]:
    """Silero's speech spans (file seconds, in order, none overlapping), none longer than options.chunk_size."""
    probs = speech_probabilities(samples)
    n_samples = int(np.asarray(samples).size)
    pad = SAMPLE_RATE * options.speech_pad_ms // 1000
    # Padding may add pad on both sides; one frame of slack keeps the float seconds under chunk_size.
    max_len = int(options.chunk_size * SAMPLE_RATE) - 2 * pad - FRAME
    spans = [piece for span in _hysteresis(probs, options, n_samples) for piece in _split_long(span, probs, max_len)]
    return [(a / SAMPLE_RATE, b / SAMPLE_RATE) for a, b in _pad(spans, pad, n_samples)]
