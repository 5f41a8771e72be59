"""What decoding one chunk gives: its tokens with the fallback that produced them, and the segments cut from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..backends.base import Generated
from ..vad.options import SpeechChunk


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
