"""A speaker for every word and segment, from diarization turns. Pure Python: no torch needed.

WhisperX 3.3.x gives a word a speaker only when some turn overlaps it, so words in gaps between
turns get none (WhisperX #1072). Here a word takes the speaker it overlaps most, else the nearest
turn's; a word without times takes its segment's; a segment takes the speaker of most of its words.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable

from shared.contract import Segment, SpeakerInfo, SpeakerTurn, Word


class TurnIndex:
    """Turns sorted for fast 'who overlaps [start, end] most, else who is nearest' queries."""

    def __init__(self, turns: Iterable[SpeakerTurn]) -> None:
        self.by_start = sorted(turns, key=lambda turn: (turn.start, turn.end))
        if not self.by_start:
            raise ValueError("no speaker turns to assign from")
        self.starts = [turn.start for turn in self.by_start]
        self.by_end = sorted(self.by_start, key=lambda turn: turn.end)
        self.ends = [turn.end for turn in self.by_end]
        self.longest = max(turn.end - turn.start for turn in self.by_start)

    def speaker_for(self, start: float, end: float) -> str:
        overlaps = self.overlaps(start, end)
        if overlaps:
            # Most overlap wins; max() keeps the first of equals, the speaker whose turn started first.
            return max(overlaps, key=overlaps.__getitem__)
        return self.nearest(start, end)

    def overlaps(self, start: float, end: float) -> dict[str, float]:
        """Seconds of [start, end] each speaker covers (a zero-length span counts the turns containing it)."""
        totals: dict[str, float] = defaultdict(float)
        # Only turns that start within `longest` before `start` can reach it.
        low = bisect.bisect_left(self.starts, start - self.longest)
        high = bisect.bisect_right(self.starts, end)
        for turn in self.by_start[low:high]:
            overlap = min(turn.end, end) - max(turn.start, start)
            if overlap > 0 or (overlap == 0 and end == start and turn.start <= start <= turn.end):
                totals[turn.speaker] += max(overlap, 1e-9)
        return dict(totals)

    def nearest(self, start: float, end: float) -> str:
        """The turn closest in time; on a tie, the one before (its speaker is likely still talking)."""
        before_index = bisect.bisect_right(self.ends, start) - 1
        after_index = bisect.bisect_left(self.starts, end)
        before = self.by_end[before_index] if before_index >= 0 else None
        after = self.by_start[after_index] if after_index < len(self.by_start) else None
        if before is None or (after is not None and after.start - end < start - before.end):
            assert after is not None
            return after.speaker
        return before.speaker


def assign_speakers(segments: list[Segment], turns: list[SpeakerTurn]) -> list[Segment]:
    """New segments whose every word, and the segment itself, carry a speaker (unchanged if there are no turns)."""
    if not turns:
        return [segment.model_copy(deep=True) for segment in segments]
    index = TurnIndex(turns)
    return [_assign_segment(segment, index) for segment in segments]


def _assign_segment(segment: Segment, index: TurnIndex) -> Segment:
    words = [word.model_copy() for word in segment.words or []]
    for word in words:
        if word.start is not None and word.end is not None:
            word.speaker = index.speaker_for(word.start, word.end)
    speaker = _majority_speaker(words) or index.speaker_for(segment.start, segment.end)
    for word in words:
        if word.speaker is None:
            word.speaker = speaker
    return segment.model_copy(update={"words": words if segment.words is not None else None, "speaker": speaker})


def _majority_speaker(words: list[Word]) -> str | None:
    """The speaker of most of the segment's speech (word durations; word counts break ties and zero lengths)."""
    durations: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for word in words:
        if word.speaker is None:
            continue
        counts[word.speaker] += 1
        if word.start is not None and word.end is not None:
            durations[word.speaker] += word.end - word.start
    if not counts:
        return None
    return max(counts, key=lambda speaker: (durations[speaker], counts[speaker]))


def speaker_summaries(turns: list[SpeakerTurn], embeddings: dict[str, list[float]] | None = None) -> list[SpeakerInfo]:
    """One entry per speaker in order of first appearance, with total speaking time."""
    speaking: dict[str, float] = {}
    for turn in sorted(turns, key=lambda turn: turn.start):
        speaking[turn.speaker] = speaking.get(turn.speaker, 0.0) + (turn.end - turn.start)
    return [
        SpeakerInfo(id=speaker, speaking_time=round(seconds, 3), embedding=(embeddings or {}).get(speaker))
        for speaker, seconds in speaking.items()
    ]
