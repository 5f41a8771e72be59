"""Stage 1's batched decoding: VAD chunks -> batched decoding with per-chunk fallback -> segments and word times.

The same for every backend (MLX, CTranslate2): a backend only encodes windows and generates tokens. The language
vote over chunks is language.py's; word times are words.py's; building the Transcript is batched_run.py's.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.contract import DecodingOptions
from stages.common.audio import SAMPLE_RATE

from ..backends.base import Backend, Encoded, Generated, GenerateOptions
from ..vad.chunking import fixed_chunks, vad_chunks
from ..vad.options import SpeechChunk, VadOptions
from .decoded import DecodedChunk, RawSegment
from .options import ProgressHook
from .words import Loudness, attach_words, fit_segments_to_words, start_words_after_gaps

SECONDS_PER_TIMESTAMP = 0.02
CHUNK_SIZE = 30.0


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / max(len(zlib.compress(data)), 1)


def speech_chunks(samples: np.ndarray, vad: VadOptions | None) -> list[SpeechChunk]:
    if vad is None:
        return fixed_chunks(len(samples) / SAMPLE_RATE, CHUNK_SIZE)
    return vad_chunks(samples, vad)


def window(samples: np.ndarray, chunk: SpeechChunk) -> np.ndarray:
    return samples[int(round(chunk.start * SAMPLE_RATE)) : int(round(chunk.end * SAMPLE_RATE))]


# --- prompts and suppression ----------------------------------------------------------------------------------
def suppressed_tokens(tokenizer: Any, spec: str, numerals: bool) -> tuple[int, ...]:
    """openai-whisper's suppress list ("-1" = non-speech symbols), plus the special tokens, plus digits on request."""
    ids = [int(t) for t in spec.split(",") if t.strip()] if spec else []
    tokens = set(ids)
    if -1 in tokens:
        tokens.discard(-1)
        tokens.update(tokenizer.non_speech_tokens)
    tokens.update([tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm])
    if tokenizer.no_speech is not None:
        tokens.add(tokenizer.no_speech)
    if numerals:
        tokens.update(numeral_tokens(tokenizer))
    return tuple(sorted(tokens))


def numeral_tokens(tokenizer: Any) -> list[int]:
    """Tokens that spell digits or currency/percent signs (WhisperX's --suppress_numerals), so numbers come out as words."""
    found = []
    for token in range(tokenizer.eot):
        text = tokenizer.decode([token]).strip()
        if text and any(c.isdigit() or c in "%$£€¥" for c in text):
            found.append(token)
    return found


def prompt_tokens(tokenizer: Any, previous: list[int], hotwords: str | None, without_timestamps: bool, n_text_ctx: int = 448) -> list[int]:
    """faster-whisper's prompt: [<|startofprev|> hotwords previous-text] <|startoftranscript|> lang task [notimestamps]."""
    half = n_text_ctx // 2 - 1
    context: list[int] = []
    if hotwords:
        context += tokenizer.encode(" " + hotwords.strip())[:half]
    if previous:
        context += previous[-half:]
    prompt = [tokenizer.sot_prev, *context[-half:]] if context else []
    prompt += list(tokenizer.sot_sequence)
    if without_timestamps:
        prompt.append(tokenizer.no_timestamps)
    return prompt


def batches(count: int, batch_size: int, interleaved: bool) -> list[list[int]]:
    """Chunk indices per batch. Interleaved: the file is cut into `batch_size` streams of consecutive chunks and
    a batch holds the next chunk of each stream, so every chunk can be prompted with its stream's previous text."""
    if not interleaved:
        return [list(range(start, min(start + batch_size, count))) for start in range(0, count, batch_size)]
    streams = np.array_split(np.arange(count), min(batch_size, count) or 1)
    longest = max((len(s) for s in streams), default=0)
    return [[int(s[step]) for s in streams if step < len(s)] for step in range(longest)]


# --- decoding ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FallbackRules:
    temperatures: tuple[float, ...]
    compression_ratio_threshold: float | None
    logprob_threshold: float | None
    no_speech_threshold: float | None

    def is_silence(self, generated: Generated) -> bool:
        if self.no_speech_threshold is None or generated.no_speech_prob <= self.no_speech_threshold:
            return False
        return self.logprob_threshold is None or generated.avg_logprob < self.logprob_threshold

    def loops(self, ratio: float) -> bool:
        return self.compression_ratio_threshold is not None and ratio > self.compression_ratio_threshold

    def needs_retry(self, generated: Generated, ratio: float) -> bool:
        if self.is_silence(generated):
            return False  # silence is not a failure: no point sampling it
        too_unsure = self.logprob_threshold is not None and generated.avg_logprob < self.logprob_threshold
        return self.loops(ratio) or too_unsure


def decode_with_fallback(
    backend: Backend,
    encoded: Encoded,
    prompts: list[list[int]],
    base: GenerateOptions,
    rules: FallbackRules,
    tokenizer: Any,
    best_of: int = 1,
) -> list[tuple[Generated, float, float]]:
    """Decode all rows at the first temperature; retry only the rows that failed, at the next one. Above 0, each
    row is sampled `best_of` times (repeated rows, a batch's worth at a time) and its most likely candidate kept,
    as openai-whisper and faster-whisper do (WhisperX's --best_of 5): a single sample is often worse than greedy."""
    results: list[tuple[Generated, float, float] | None] = [None] * len(prompts)
    pending = list(range(len(prompts)))
    for attempt, temperature in enumerate(rules.temperatures):
        options = base if temperature == 0 else _sampling(base, temperature)
        copies = 1 if temperature == 0 else best_of
        generated = _generate_rows(backend, encoded, prompts, [row for row in pending for _ in range(copies)], options)
        retry = []
        for index, row in enumerate(pending):
            item = max(generated[index * copies : (index + 1) * copies], key=lambda g: likelihood(g, base.length_penalty))
            ratio = compression_ratio(tokenizer.decode([t for t in item.tokens if t < tokenizer.eot]))
            results[row] = (item, temperature, ratio)
            if attempt + 1 < len(rules.temperatures) and rules.needs_retry(item, ratio):
                retry.append(row)
        pending = retry
        if not pending:
            break
    return [r for r in results if r is not None]


# Text-only decoding of a window full of speech sometimes ends after its first sentence (tiny.en on 30 s windows:
# 8 words of ~85, a third of a file's words lost); timestamp tokens restart the text at every segment and do not.
# Speech holds 3-4 tokens a second: a window with fewer than 1 per second of speech is decoded again with them.
MIN_TOKENS_PER_SPEECH_SECOND = 1.0


def speech_seconds(chunk: SpeechChunk) -> float:
    return sum(end - start for start, end in chunk.spans)


def stopped_early(generated: Generated, chunk: SpeechChunk, tokenizer: Any) -> bool:
    text_tokens = sum(1 for t in generated.tokens if t < tokenizer.eot)
    return text_tokens < MIN_TOKENS_PER_SPEECH_SECOND * speech_seconds(chunk)


def redecode_with_timestamps(
    backend: Backend,
    encoded: Encoded,
    rows: list[int],
    prompts: list[list[int]],
    outcomes: list[tuple[Generated, float, float]],
    base: GenerateOptions,
    rules: FallbackRules,
    tokenizer: Any,
    best_of: int,
) -> None:
    """Decode these rows again with timestamps (`prompts`: theirs, without <|notimestamps|>) and keep only the text
    tokens, so each chunk is still one segment, as --without_timestamps promises."""
    from dataclasses import replace

    subset = encoded if rows == list(range(len(outcomes))) else backend.select(encoded, rows)
    again = decode_with_fallback(backend, subset, prompts, replace(base, without_timestamps=False), rules, tokenizer, best_of)
    for row, (generated, temperature, ratio) in zip(rows, again, strict=True):
        text_only = replace(generated, tokens=[t for t in generated.tokens if t < tokenizer.eot])
        outcomes[row] = (text_only, temperature, ratio)


def _generate_rows(
    backend: Backend, encoded: Encoded, prompts: list[list[int]], rows: list[int], options: GenerateOptions
) -> list[Generated]:
    """Generate for these rows (repeats allowed), at most a batch's worth at a time: best_of copies must not
    multiply the memory --batch_size was chosen for."""
    generated: list[Generated] = []
    for begin in range(0, len(rows), len(prompts)):
        part = rows[begin : begin + len(prompts)]
        subset = encoded if part == list(range(len(prompts))) else backend.select(encoded, part)
        generated += backend.generate(subset, [prompts[i] for i in part], options)
    return generated


def likelihood(generated: Generated, length_penalty: float | None) -> float:
    """openai-whisper's MaximumLikelihoodRanker: the sum of log-probabilities over the length, or over
    ((5 + length) / 6) ** length_penalty (Google NMT's penalty) when one is given."""
    length = len(generated.tokens) + 1  # the end-of-text token counts, as in avg_logprob
    return generated.sum_logprob / (length if length_penalty is None else ((5 + length) / 6) ** length_penalty)


def _sampling(base: GenerateOptions, temperature: float) -> GenerateOptions:
    from dataclasses import replace

    return replace(base, temperature=temperature, beam_size=1)  # beams at 0 only; best_of samples above it


# --- segments ------------------------------------------------------------------------------------------------------
def split_segments(decoded: DecodedChunk, tokenizer: Any) -> list[RawSegment]:
    """Timestamp pairs cut the chunk's tokens into segments; without timestamps the chunk is one segment."""
    chunk, tokens = decoded.chunk, decoded.generated.tokens
    begin = tokenizer.timestamp_begin
    segments: list[RawSegment] = []
    current: list[int] = []
    opened: float | None = None
    for token in tokens:
        if token >= begin:
            time = chunk.start + (token - begin) * SECONDS_PER_TIMESTAMP
            if current:
                segments.append(_raw(opened if opened is not None else chunk.start, time, current, decoded, tokenizer))
                current, opened = [], None
            else:
                opened = time
        elif token < tokenizer.eot:
            current.append(token)
    if current:  # text after the last timestamp (or no timestamps at all) runs to the chunk's end
        segments.append(_raw(opened if opened is not None else chunk.start, chunk.end, current, decoded, tokenizer))
    return [s for s in segments if s.text.strip()]


def _raw(start: float, end: float, tokens: list[int], decoded: DecodedChunk, tokenizer: Any) -> RawSegment:
    end = min(max(end, start), decoded.chunk.end)
    return RawSegment(start=min(start, end), end=end, text=tokenizer.decode(tokens), tokens=tokens, decoded=decoded)


@dataclass
class ChunkStream:
    """One file's speech chunks to decode: its samples, its tokenizer (language and task) and its progress hook."""

    samples: np.ndarray
    chunks: list[SpeechChunk]
    tokenizer: Any
    on_progress: ProgressHook | None = None
    _loudness: Loudness | None = field(default=None, repr=False)

    @property
    def loudness(self) -> Loudness:
        if self._loudness is None:
            self._loudness = Loudness.of(self.samples)
        return self._loudness


def transcribe_chunks(
    backend: Backend,
    tokenizer: Any,
    samples: np.ndarray,
    chunks: list[SpeechChunk],
    decoding: DecodingOptions,
    on_progress: ProgressHook | None = None,
) -> list[RawSegment]:
    return transcribe_streams(backend, [ChunkStream(samples, chunks, tokenizer, on_progress)], decoding)[0]


def transcribe_streams(backend: Backend, streams: list[ChunkStream], decoding: DecodingOptions) -> list[list[RawSegment]]:
    """Segments of each file, its chunks decoded in batches shared with the other files' (a 5 s memo does not fill a
    batch of 8 alone). A chunk's tokens do not depend on what else is in its batch (tests/test_batched.py), so each
    file gets what decoding it alone gives. DECODING holds the files' common settings (not their languages, which
    their tokenizers carry). Interleaved context links a file's chunks to each other: then each file runs alone."""
    if decoding.interleaved_context and len(streams) > 1:
        return [transcribe_streams(backend, [stream], decoding)[0] for stream in streams]
    first = streams[0].tokenizer  # text, end-of-text and suppressed tokens: the same for every language of one model
    temperatures = tuple(decoding.temperature) or (0.0,)
    rules = FallbackRules(temperatures, decoding.compression_ratio_threshold, decoding.logprob_threshold, decoding.no_speech_threshold)
    base = GenerateOptions(
        beam_size=decoding.beam_size,
        patience=decoding.patience,
        length_penalty=decoding.length_penalty,
        suppress_tokens=suppressed_tokens(first, decoding.suppress_tokens, decoding.suppress_numerals),
        without_timestamps=decoding.without_timestamps,
    )
    items = [(s, i) for s, stream in enumerate(streams) for i in range(len(stream.chunks))]  # (file, chunk)
    initial = [stream.tokenizer.encode(" " + decoding.initial_prompt.strip()) if decoding.initial_prompt else [] for stream in streams]
    previous = {item: initial[item[0]] for item in items}
    next_in_stream: dict[tuple[int, int], tuple[int, int]] = {}
    plan = [[items[k] for k in batch] for batch in batches(len(items), decoding.batch_size, decoding.interleaved_context)]
    if decoding.interleaved_context:
        for step, following in zip(plan, plan[1:], strict=False):
            next_in_stream.update(zip(step, following, strict=False))
    totals = [sum(c.duration for c in stream.chunks) for stream in streams]
    done = [0.0] * len(streams)
    by_chunk: list[dict[int, list[RawSegment]]] = [{} for _ in streams]
    for batch in plan:
        chunks = [streams[s].chunks[i] for s, i in batch]
        tokenizers = [streams[s].tokenizer for s, _ in batch]
        encoded = backend.encode([window(streams[s].samples, chunk) for (s, _), chunk in zip(batch, chunks, strict=True)])
        prompts = [
            prompt_tokens(tokenizer, previous[item], decoding.hotwords, decoding.without_timestamps)
            for tokenizer, item in zip(tokenizers, batch, strict=True)
        ]
        outcomes = decode_with_fallback(backend, encoded, prompts, base, rules, first, decoding.best_of)
        early = [row for row, (g, _, _) in enumerate(outcomes) if stopped_early(g, chunks[row], first)]
        if decoding.without_timestamps and early:
            timed = [prompt_tokens(tokenizers[row], previous[batch[row]], decoding.hotwords, False) for row in early]
            redecode_with_timestamps(backend, encoded, early, timed, outcomes, base, rules, first, decoding.best_of)
        decoded = [DecodedChunk(chunk, g, t, r) for chunk, (g, t, r) in zip(chunks, outcomes, strict=True)]
        kept = [row for row, d in enumerate(decoded) if _keep(d, rules)]
        per_row = {row: split_segments(decoded[row], tokenizers[row]) for row in kept}
        for s in sorted({s for s, _ in batch}):
            rows = [row for row in kept if batch[row][0] == s]
            if decoding.word_timestamps and rows:
                _add_words(backend, encoded, rows, decoded, per_row, streams[s], decoding)
            for row in rows:
                by_chunk[s][batch[row][1]] = per_row[row]
        for row, item in enumerate(batch):
            if item in next_in_stream:  # the next chunk of this stream is prompted with this one's text
                text = [t for t in decoded[row].generated.tokens if t < first.eot]
                previous[next_in_stream[item]] = text if row in per_row else initial[item[0]]
            done[item[0]] += chunks[row].duration
        for s in sorted({s for s, _ in batch}):
            if streams[s].on_progress:
                streams[s].on_progress(done[s], totals[s])  # type: ignore[misc]
    results = []
    for chunks_segments in by_chunk:
        segments = [segment for index in sorted(chunks_segments) for segment in chunks_segments[index]]  # interleaved: out of order
        if decoding.word_timestamps:
            fit_segments_to_words(segments, vad_chunks=decoding.vad is not None)
        results.append(segments)
    return results


def _keep(decoded: DecodedChunk, rules: FallbackRules) -> bool:
    """Drop silence (no-speech) and chunks that still loop after every temperature (hallucinated repetition)."""
    if rules.is_silence(decoded.generated):
        return False
    if rules.loops(decoded.compression_ratio):
        print(
            f"warning: dropped {decoded.chunk.start:.1f}-{decoded.chunk.end:.1f} s: its text still repeats itself "
            f"(compression ratio {decoded.compression_ratio:.2f}) after every temperature",
            file=sys.stderr,
        )
        return False
    return True


def _add_words(
    backend: Backend,
    encoded: Encoded,
    rows: list[int],
    decoded: list[DecodedChunk],
    per_row: dict[int, list[RawSegment]],
    stream: ChunkStream,
    decoding: DecodingOptions,
) -> None:
    tokenizer = stream.tokenizer
    subset = encoded if rows == list(range(len(decoded))) else backend.select(encoded, rows)
    prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    texts = [[t for t in decoded[row].generated.tokens if t < tokenizer.eot] for row in rows]
    for row, words in zip(rows, backend.align_words(subset, [prompt] * len(rows), texts, tokenizer), strict=True):
        decoded[row].median_word = attach_words(per_row[row], words, decoded[row].chunk.start, decoding)
        start_words_after_gaps([w for segment in per_row[row] for w in segment.words], stream.loudness)
