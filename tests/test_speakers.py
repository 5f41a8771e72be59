"""Speaker per word and segment (stage 2's pure-Python part; runs in the root env)."""

from __future__ import annotations

import random

from shared.contract import SpeakerTurn
from stages.align_diarize.speakers import TurnIndex, assign_speakers, speaker_summaries

from .factories import segment, word


def turns(*spans: tuple[float, float, str]) -> list[SpeakerTurn]:
    return [SpeakerTurn(start=start, end=end, speaker=speaker) for start, end, speaker in spans]


def test_every_word_gets_the_speaker_it_overlaps_most_else_the_nearest() -> None:
    diarization = turns((0.0, 2.0, "A"), (1.8, 4.0, "B"), (6.0, 8.0, "A"))
    words = [
        word(" one", 0.2, 0.6),  # inside A
        word(" two", 1.7, 2.0),  # 0.3 s of A, 0.2 s of B
        word(" three", 4.5, 4.9),  # in a gap: B ended 0.5 s before, A starts 1.1 s after
        word(" four", 5.6, 5.8),  # in the gap, nearer A
        word(" five", None, None),  # no times: the segment's speaker
    ]
    [result] = assign_speakers([segment(0, 0.0, 8.0, " one two three four five", words)], diarization)
    assert [w.speaker for w in result.words or []] == ["A", "A", "B", "A", "A"]
    assert result.speaker == "A"


def test_segment_takes_the_speaker_of_most_of_its_speech() -> None:
    diarization = turns((0.0, 1.0, "A"), (1.0, 5.0, "B"))
    words = [word(" hi", 0.1, 0.9), word(" a", 1.1, 1.2), word(" long", 1.3, 3.0), word(" answer", 3.1, 4.9)]
    [result] = assign_speakers([segment(0, 0.0, 5.0, " hi a long answer", words)], diarization)
    assert result.speaker == "B"
    assert [w.speaker for w in result.words or []] == ["A", "B", "B", "B"]


def test_wordless_segment_uses_its_own_span_and_no_turns_changes_nothing() -> None:
    diarization = turns((0.0, 1.0, "A"), (3.0, 9.0, "B"))
    [result] = assign_speakers([segment(0, 2.5, 6.0, " words unknown")], diarization)
    assert result.speaker == "B" and result.words is None
    original = [segment(0, 0.0, 1.0, " hi", [word(" hi", 0.0, 1.0)])]
    assert assign_speakers(original, []) == original


def test_turn_index_matches_brute_force_on_random_turns() -> None:
    rng = random.Random(7)
    diarization = []
    for _ in range(200):
        start = rng.uniform(0, 600)
        diarization.append(SpeakerTurn(start=start, end=start + rng.expovariate(1 / 4), speaker=rng.choice("ABCD")))
    index = TurnIndex(diarization)
    for _ in range(2000):
        start = rng.uniform(-5, 620)
        start = max(start, 0.0)
        end = start + rng.choice([0.0, rng.uniform(0, 1.5)])
        assert index.speaker_for(start, end) == brute_force(diarization, start, end), (start, end)


def brute_force(diarization: list[SpeakerTurn], start: float, end: float) -> str:
    totals: dict[str, float] = {}
    for turn in sorted(diarization, key=lambda t: (t.start, t.end)):
        overlap = min(turn.end, end) - max(turn.start, start)
        if overlap > 0 or (end == start and turn.start <= start <= turn.end):
            totals[turn.speaker] = totals.get(turn.speaker, 0.0) + max(overlap, 1e-9)
    if totals:
        best = max(totals.values())
        return next(speaker for speaker, total in totals.items() if total == best)
    # Nearest turn; on equal distance the one before wins.
    ranked = sorted(diarization, key=lambda t: (max(t.start - end, start - t.end), 0 if t.end <= start else 1))
    return ranked[0].speaker


def test_speaker_summaries_in_order_of_first_appearance() -> None:
    summary = speaker_summaries(turns((5.0, 6.0, "SPEAKER_00"), (0.5, 2.0, "SPEAKER_01"), (7.0, 9.5, "SPEAKER_01")), {"SPEAKER_00": [1.0]})
    assert [(s.id, s.speaking_time, s.embedding) for s in summary] == [("SPEAKER_01", 4.0, None), ("SPEAKER_00", 1.0, [1.0])]
