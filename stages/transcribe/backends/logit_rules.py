"""openai-whisper's logit filters (suppress blank/tokens, timestamp rules), vectorised over a batch.

Written against the array API numpy and mlx.core share (`xp`), so the same rules run on the host for MLX's
CPU device (numpy's exp is ~25x faster than MLX's there) and on the GPU for Metal/CUDA, where moving
(batch, vocab) logits to the host every step would cost more than the step. The per-row state the
rules need (what was sampled last) is small and lives on the host.

Vendored logic, not code: mlx_whisper's ApplyTimestampRules compares timestamps by their index in the
sequence instead of their value, so it cannot be reused as is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

NEG_INF = -np.inf


@dataclass(frozen=True)
class Vocabulary:
    size: int  # rows of the logits (may exceed the tokenizer's tokens)
    eot: int
    timestamp_begin: int
    no_timestamps: int
    blank: tuple[int, ...]  # " " and <|endoftext|>: never the first token


@dataclass
class RowHistory:
    """What the timestamp rules need to know of one row's sampled tokens."""

    sampled: list[int] = field(default_factory=list)
    last_timestamp: int = -1  # the value of the last timestamp token, -1 before any


def log_softmax(xp: Any, logits: Any) -> Any:
    top = xp.max(logits, axis=-1, keepdims=True)
    shifted = logits - top
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=-1, keepdims=True))


def _row_vectors(histories: list[RowHistory], vocab: Vocabulary, max_initial_index: int | None) -> dict[str, np.ndarray]:
    """Per row: which token ranges the timestamp rules forbid at this step."""
    rows = len(histories)
    ban_text, ban_timestamps = np.zeros(rows, bool), np.zeros(rows, bool)
    lowest_timestamp = np.full(rows, vocab.timestamp_begin, np.int32)
    highest_timestamp = np.full(rows, vocab.size, np.int32)  # exclusive
    for row, history in enumerate(histories):
        seq = history.sampled
        last_was_ts = len(seq) >= 1 and seq[-1] >= vocab.timestamp_begin
        penultimate_was_ts = len(seq) < 2 or seq[-2] >= vocab.timestamp_begin
        if last_was_ts:
            ban_timestamps[row] = penultimate_was_ts  # a pair is complete: text must follow
            ban_text[row] = not penultimate_was_ts  # a segment just ended: its closing timestamp (or eot) follows
        if history.last_timestamp >= 0:
            # timestamps never decrease, and a segment has a nonzero length
            closing = last_was_ts and not penultimate_was_ts
            lowest_timestamp[row] = history.last_timestamp if closing else history.last_timestamp + 1
        if not seq:
            ban_text[row] = True  # a timestamp opens the transcript
            if max_initial_index is not None:
                highest_timestamp[row] = vocab.timestamp_begin + max_initial_index + 1
    return {"ban_text": ban_text, "ban_ts": ban_timestamps, "low": lowest_timestamp, "high": highest_timestamp}


def filtered_logprobs(
    xp: Any,
    logits: Any,
    histories: list[RowHistory],
    vocab: Vocabulary,
    static_mask: Any,
    *,
    timestamps: bool,
    max_initial_index: int | None,
) -> Any:
    """Log-probabilities after every rule; `static_mask` (vocab,) holds the always-suppressed tokens (0 / -inf)."""
    if xp is np:
        return _filtered_numpy(logits, histories, vocab, static_mask, timestamps, max_initial_index)
    logits = logits + static_mask
    ids = xp.arange(vocab.size)[None, :]
    first = np.array([not h.sampled for h in histories])
    if first.any():
        blank = np.zeros(vocab.size, bool)
        blank[list(vocab.blank)] = True
        logits = xp.where(xp.array(first[:, None] & blank[None, :]), NEG_INF, logits)
    if not timestamps:
        return log_softmax(xp, logits)
    vectors = {name: xp.array(value[:, None]) for name, value in _row_vectors(histories, vocab, max_initial_index).items()}
    is_ts = ids >= vocab.timestamp_begin
    banned = (
        (vectors["ban_text"] & (ids < vocab.eot))
        | (vectors["ban_ts"] & is_ts)
        | (is_ts & (ids < vectors["low"]))
        | (is_ts & (ids >= vectors["high"]))
        | (ids == vocab.no_timestamps)
    )
    if first.any():
        banned = banned | (xp.array(first[:, None]) & (ids < vocab.timestamp_begin))
    logits = xp.where(banned, NEG_INF, logits)
    # When the timestamps together outweigh the likeliest text token, a timestamp must come next.
    logprobs = log_softmax(xp, logits)
    timestamp_mass = _logsumexp(xp, xp.where(is_ts, logprobs, NEG_INF))
    best_text = xp.max(xp.where(is_ts, NEG_INF, logprobs), axis=-1, keepdims=True)
    logits = xp.where((timestamp_mass > best_text) & ~is_ts, NEG_INF, logits)
    return log_softmax(xp, logits)


def _filtered_numpy(
    logits: np.ndarray,
    histories: list[RowHistory],
    vocab: Vocabulary,
    static_mask: np.ndarray,
    timestamps: bool,
    max_initial_index: int | None,
) -> np.ndarray:
    """filtered_logprobs on the CPU, the same numbers: the rules write -inf into each row's banned slices instead of
    building whole-vocabulary masks (~20 passes over batch x 51k values each step: 4.5 ms of a 28 ms step at batch 8),
    and the second log-softmax is redone only for rows a timestamp is forced on."""
    logits = logits + static_mask
    first = [row for row, history in enumerate(histories) if not history.sampled]
    for row in first:
        logits[row, list(vocab.blank)] = NEG_INF
    if not timestamps:
        return log_softmax(np, logits)
    begin = vocab.timestamp_begin
    vectors = _row_vectors(histories, vocab, max_initial_index)
    logits[:, vocab.no_timestamps] = NEG_INF
    for row in range(len(histories)):
        if vectors["ban_text"][row]:
            logits[row, : vocab.eot] = NEG_INF
        if vectors["ban_ts"][row]:
            logits[row, begin:] = NEG_INF
        logits[row, begin : vectors["low"][row]] = NEG_INF
        logits[row, vectors["high"][row] :] = NEG_INF
    logits[first, :begin] = NEG_INF
    # When the timestamps together outweigh the likeliest text token, a timestamp must come next.
    logprobs = log_softmax(np, logits)
    forced = np.flatnonzero(_logsumexp(np, logprobs[:, begin:])[:, 0] > logprobs[:, :begin].max(axis=-1))
    if len(forced):
        logits[forced, :begin] = NEG_INF
        logprobs[forced] = log_softmax(np, logits[forced])
    return logprobs


def _logsumexp(xp: Any, values: Any) -> Any:
    top = xp.max(values, axis=-1, keepdims=True)
    safe_top = xp.where(top == NEG_INF, 0.0, top)
    return safe_top + xp.log(xp.maximum(xp.sum(xp.exp(values - safe_top), axis=-1, keepdims=True), 1e-30))


def record(histories: list[RowHistory], tokens: list[int], vocab: Vocabulary) -> None:
    for history, token in zip(histories, tokens, strict=True):
        history.sampled.append(token)
        if token >= vocab.timestamp_begin:
            history.last_timestamp = token
