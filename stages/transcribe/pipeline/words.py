"""Word times from cross-attention DTW, made to follow the speech: the model's lag taken off, punctuation merged as
openai-whisper does, gaps decided by the audio, and segment bounds that follow their words."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from shared.contract import DecodingOptions
from stages.common.audio import SAMPLE_RATE

from ..backends.base import WordTiming
from .decoded import RawSegment

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
