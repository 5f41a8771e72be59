"""The contract's `Segment`s and `Word`s, from mlx_whisper's output (sequential) or from decoded chunks (batched)."""

from __future__ import annotations

import sys

from shared.contract import Segment, Word

from .decoded import RawSegment


def well_formed(raw_segments: list[dict]) -> list[dict]:
    """Whisper emits empty timestamp-only segments, and on garbage audio can emit reversed timestamps: skip both."""
    kept = []
    for item in raw_segments:
        if not item["text"].strip():
            continue
        if item["end"] < item["start"]:
            print(f"warning: skipped a segment with reversed times ({item['start']} > {item['end']}): {item['text']!r}", file=sys.stderr)
            continue
        kept.append(item)
    return kept


def mlx_whisper_segment(index: int, raw: dict) -> Segment:
    start, end = round(raw["start"], 3), round(raw["end"], 3)
    words = None
    if "words" in raw:
        words = [_word(w) for w in raw["words"]]
        # mlx_whisper moves segments onto their words but may keep a timestamp token past a word that is too
        # long: the segment then covers the word (never the word squeezed into the segment, to zero length)
        start, end = min([start, *(w.start for w in words)]), max([end, *(w.end for w in words)])
    return Segment(
        id=index,
        start=start,
        end=end,
        text=raw["text"],
        avg_logprob=raw.get("avg_logprob"),
        no_speech_prob=_clamp(raw.get("no_speech_prob")),
        compression_ratio=raw.get("compression_ratio"),
        temperature=raw.get("temperature"),
        tokens=[int(token) for token in raw.get("tokens", [])],
        words=words,
    )


def _word(raw: dict) -> Word:
    start = round(raw["start"], 3)
    return whisperx_word(raw["word"], start, max(round(raw["end"], 3), start), raw.get("probability"))


def whisperx_word(text: str, start: float, end: float, probability: float | None) -> Word:
    """A word as WhisperX writes one: no leading space (Whisper's tokens carry it; writers join words with one, or
    none for ja/zh, as WhisperX does). `score` is the word's probability until stage 2's CTC alignment replaces it,
    so `--no_align` results have a confidence per word where WhisperX has a score."""
    probability = _clamp(probability)
    return Word(word=text.strip(), start=start, end=end, probability=probability, score=probability)


def _clamp(probability: float | None) -> float | None:
    return None if probability is None else min(1.0, max(0.0, float(probability)))


def chunk_segment(index: int, raw: RawSegment, with_words: bool) -> Segment:
    decoded = raw.decoded
    start, end = round(raw.start, 3), round(raw.end, 3)
    words = [whisperx_word(w["word"], w["start"], w["end"], w["probability"]) for w in raw.words]  # inside: fit_segments_to_words
    return Segment(
        id=index,
        start=start,
        end=end,
        text=raw.text,
        avg_logprob=round(decoded.generated.avg_logprob, 4),
        no_speech_prob=round(min(max(decoded.generated.no_speech_prob, 0.0), 1.0), 4),
        compression_ratio=round(decoded.compression_ratio, 4),
        temperature=decoded.temperature,
        tokens=raw.tokens,
        words=words if with_words else None,
    )
