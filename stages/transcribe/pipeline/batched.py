"""Stage 1's batched decoding: VAD chunks -> batched decoding with per-chunk fallback -> segments and word times.

The same for every backend (MLX, CTranslate2): a backend only encodes windows and generates tokens. The language
vote over chunks is language.py's; building the Transcript is batched_run.py's.
"""

from __future__ import annotations

import sys
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.contract import DecodingOptions
from stages.common.audio import SAMPLE_RATE

from ..backends.base import Backend, Encoded, Generated, GenerateOptions, WordTiming
from ..vad.chunking import fixed_chunks, vad_chunks
from ..vad.options import SpeechChunk, VadOptions
from .options import ProgressHook

SECONDS_PER_TIMESTAMP = 0.02
CHUNK_SIZE = 30.0


@dataclass
class DecodedChunk:
    chunk: SpeechChunk
    generated: Generated
    temperature: float
    compression_ratio: float
    median_word: float = 0.0  # seconds: the median word duration DTW found in the chunk (word times only)


@dataclass
class RawSegment:
    start: float
    end: float
    text: str
    tokens: list[int]
    decoded: DecodedChunk
    words: list[dict[str, Any]] = field(default_factory=list)


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


# Cross-attention DTW places words late: the alignment heads attend most to the audio just after a word's onset,
# so the DTW path enters a word's row, and leaves it, about 0.1 s after the word is said (starts and ends alike;
# faster-whisper's own add_word_timestamps and openai-whisper's find_alignment (--backend mlx_whisper) lag the same
# on the same clips). The lag is a property of the model: measured per model (benchmarks/word_times.py, median
# start/end lag; bundled tiny.en on espeak-ng's en-us and en voices: +110 / +102 ms), and validated on held-out
# voices and on real speech (the sample call against a forced aligner: +124 / +94 ms). Models not measured get 0.
WORD_TIME_SHIFTS = {"bundled-tiny.en": 0.10}


def word_time_shift(model: str, requested: float | None) -> float:
    """--word_time_shift: the seconds given, or (None) the model's measured lag."""
    return WORD_TIME_SHIFTS.get(model, 0.0) if requested is None else requested


# Between two words of a chunk DTW leaves a gap only where a punctuation mark was merged into the word before it
# (the mark's own span is dropped, as in openai-whisper). That span holds the pause the mark stands for when there
# is one, and otherwise the start of the next word (tiny.en on the sample call: "least, you know" gave "you" 0.43 s
# late, 40 ms long). So the audio decides: after a pause (quiet frames) the next word starts at the speech onset,
# and with none it starts where the word before it ends. Quiet: below the file's floor (10th percentile of 10 ms
# frame levels, at least -70 dB) plus a quarter of the way to its speech level (90th percentile).
FRAME_S = 0.01
QUIET_SHARE = 0.25
QUIET_FLOOR_DB = -70.0
MIN_PAUSE_S = 0.05  # stop closures inside words are shorter than the pauses at punctuation marks
MAX_GAP_S = 1.0  # a longer gap with no quiet in it (music, another voice) is left alone


@dataclass
class Loudness:
    """A file's level in dB per 10 ms frame, and the level below which a frame is quiet."""

    levels: np.ndarray
    quiet_below: float

    @classmethod
    def of(cls, samples: np.ndarray) -> Loudness:
        hop = int(round(FRAME_S * SAMPLE_RATE))
        count = len(samples) // hop
        block = 6000  # frames at a time (60 s): no float copy of a long file
        power = [
            np.square(samples[b * hop : min(b + block, count) * hop].reshape(-1, hop), dtype=np.float32).mean(axis=1)
            for b in range(0, count, block)
        ]
        levels = 10 * np.log10(np.concatenate(power) + 1e-12) if power else np.zeros(0, np.float32)
        if not len(levels):
            return cls(levels, -np.inf)
        floor = max(float(np.percentile(levels, 10)), QUIET_FLOOR_DB)
        return cls(levels, floor + QUIET_SHARE * (float(np.percentile(levels, 90)) - floor))

    def onset_after_pause(self, begin: float, end: float) -> float | None:
        """Where speech starts again after the last pause in [begin, end) (file seconds); None without a pause."""
        first, last = int(round(begin / FRAME_S)), min(int(round(end / FRAME_S)), len(self.levels))
        quiet = self.levels[first:last] < self.quiet_below
        onset, run = None, 0
        for index, is_quiet in enumerate(quiet):
            run = run + 1 if is_quiet else 0
            if run * FRAME_S >= MIN_PAUSE_S - 1e-9 and (index + 1 == len(quiet) or not quiet[index + 1]):
                onset = (first + index + 1) * FRAME_S
        return onset


def start_words_after_gaps(words: list[dict[str, Any]], loudness: Loudness) -> None:
    """One chunk's words in order (file seconds): a word after a gap starts at the speech onset after the gap's last
    pause, or, with no pause, where the word before it ends. Starts only move earlier: no word gets shorter."""
    for previous, word in zip(words, words[1:], strict=False):
        gap = word["start"] - previous["end"]
        if gap <= 0:
            continue
        onset = loudness.onset_after_pause(previous["end"], word["start"])
        if onset is not None:
            word["start"] = min(word["start"], onset)
        elif gap <= MAX_GAP_S:
            word["start"] = previous["end"]


# openai-whisper's and faster-whisper's add_word_timestamps: word lengths are judged against the chunk's median
# word (at most 0.7 s), and a timestamp token is trusted over a word only when that word is implausibly long.
MAX_MEDIAN_WORD = 0.7
SENTENCE_END_MARKS = ".。!！?？"


def attach_words(segments: list[RawSegment], words: list[WordTiming], chunk_start: float, decoding: DecodingOptions) -> float:
    """Hand the chunk's word timings to its segments in token order, punctuation merged as openai-whisper, and
    return the chunk's median word duration. Words keep their own times: clamping them into segments bounded by
    timestamp tokens (whole seconds from tiny.en) squeezed a quarter of them to zero length; the segments follow
    the words instead (`fit_segments_to_words`)."""
    from mlx_whisper.timing import merge_punctuations

    median = median_word_duration(words)
    shorten_words_at_sentence_ends(words, 2 * median)
    merge_punctuations(words, decoding.prepend_punctuations, decoding.append_punctuations)
    queue = [w for w in words if w.word]
    shift = decoding.word_time_shift
    for segment in segments:
        budget = len(segment.tokens)
        while queue and budget > 0:
            word = queue.pop(0)
            budget -= len(word.tokens)
            # moved earlier by the model's lag (WORD_TIME_SHIFTS), never before the chunk's audio; a word the
            # chunk's start cuts keeps what it had of length (zero only where DTW gave it none)
            start = max(word.start - shift, 0.0)
            end = max(word.end - shift, start + min(max(word.end - word.start, 0.0), shift))
            start, end = chunk_start + start, chunk_start + end
            segment.words.append({"word": word.word, "start": start, "end": end, "probability": word.probability})
    return median


def median_word_duration(words: list[WordTiming]) -> float:
    durations = [w.end - w.start for w in words if w.end > w.start]
    return min(MAX_MEDIAN_WORD, float(np.median(durations))) if durations else 0.0


def shorten_words_at_sentence_ends(words: list[WordTiming], longest: float) -> None:
    """A sentence-end mark, or the word after one, that DTW stretched over a pause keeps at most `longest` s."""
    if longest <= 0:
        return
    for previous, word in zip(words, words[1:], strict=False):
        if word.end - word.start > longest:
            if word.word in SENTENCE_END_MARKS:
                word.end = word.start + longest
            elif previous.word in SENTENCE_END_MARKS:
                word.start = word.end - longest


def fit_segments_to_words(segments: list[RawSegment], vad_chunks: bool) -> None:
    """Segment bounds follow their words, in time order, as openai-whisper's and faster-whisper's add_word_timestamps;
    a segment then covers all its words (the contract's rule) and every time is rounded to the millisecond."""
    last_speech, previous = 0.0, None
    for segment in segments:
        if not segment.words:
            continue
        median, chunk = segment.decoded.median_word, segment.decoded.chunk
        if not (vad_chunks and segment.decoded is not previous and _shorten_first_word_at_onset(segment.words, median, chunk.start)):
            _shorten_first_words_after_pause(segment.words, last_speech, median, chunk.start)
        _follow_words(segment, median)
        previous = segment.decoded
        last_speech = segment.end
        for word in segment.words:
            word["start"], word["end"] = round(word["start"], 3), round(word["end"], 3)
        segment.start, segment.end = round(segment.start, 3), round(segment.end, 3)


def _shorten_first_words_after_pause(words: list[dict[str, Any]], last_speech: float, median: float, chunk_start: float) -> None:
    """DTW tends to start the first word after a pause too early: keep it (and the next) at most twice the median."""
    longest = 2 * median
    first = words[0]
    if longest <= 0 or first["end"] - last_speech <= 4 * median:
        return
    if first["end"] - first["start"] <= longest and (len(words) < 2 or words[1]["end"] - first["start"] <= 2 * longest):
        return
    if len(words) > 1 and words[1]["end"] - words[1]["start"] > longest:
        # upstream's max(end / 2, ...) in window time; the window is the chunk here
        boundary = max(chunk_start + (words[1]["end"] - chunk_start) / 2, words[1]["end"] - longest)
        first["end"] = words[1]["start"] = boundary
    first["start"] = max(chunk_start, first["end"] - longest)


def _shorten_first_word_at_onset(words: list[dict[str, Any]], median: float, chunk_start: float) -> bool:
    """A VAD chunk starts where speech does: a chunk's first word that DTW starts there has the right start, and
    when it is too long it ran over what follows (tiny.en: the call's two "Hello"s as one 1.1 s word, which the
    pause rule below would move onto the other speaker). Cut its end instead; False when the rule does not apply."""
    first, longest = words[0], 2 * median
    if longest <= 0 or first["start"] - chunk_start > median or first["end"] - first["start"] <= longest:
        return False
    first["end"] = first["start"] + longest
    return True


def _follow_words(segment: RawSegment, median: float) -> None:
    """The segment starts with its first word and ends with its last, unless that word is over 0.5 s longer than
    the timestamp token says: then the word is cut back toward the token (never below the median word)."""
    first, last = segment.words[0], segment.words[-1]
    if segment.start < first["end"] and segment.start - 0.5 > first["start"]:
        first["start"] = max(0.0, min(first["end"] - median, segment.start))
    segment.start = first["start"]
    if segment.end > last["start"] and segment.end + 0.5 < last["end"]:
        last["end"] = max(last["start"] + median, segment.end)
    segment.end = max(last["end"], segment.start)


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
