"""Stage 1's segment and word times on the sample call against its references (issue 14, item 6).

tiny.en's timestamp tokens fall on whole seconds here, so segments bounded by them start up to a second off and
words clamped into them lose their length. With word times, segments must follow the words (as openai-whisper
and faster-whisper do): measured on the same model, faster-whisper's segment starts are 0.25 s off sample.stm on
average and 6 of 73 words have zero length (DTW's own). Before: 0.60 s, 20 of 73 words, and 2 of 13 segments
overlapping the other speaker's reference turns most; after: 0.23 s, 7 of 73, 1 of 13 (the second "Hello.", which
DTW itself places in the wrong turn).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared import Segment, Transcript, load_document

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float
    text: str = ""


def reference_lines() -> list[Turn]:
    """sample.stm: `file channel speaker start end text`, one timed line per utterance."""
    lines = (DATA / "sample.stm").read_text(encoding="utf-8").splitlines()
    fields = [line.split(maxsplit=5) for line in lines if line.strip()]
    return [Turn(f[2], float(f[3]), float(f[4]), f[5]) for f in fields]


def rttm_turns(path: Path) -> list[Turn]:
    fields = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("SPEAKER")]
    return [Turn(f[7], float(f[3]), float(f[3]) + float(f[4])) for f in fields]


def words_of(text: str) -> set[str]:
    return set(re.sub(r"[^\w\s']", " ", text.lower()).split())


def similarity(a: str, b: str) -> float:
    mine, theirs = words_of(a), words_of(b)
    return len(mine & theirs) / max(len(mine | theirs), 1)


def pair_with_references(texts: list[str], references: list[Turn]) -> dict[int, Turn]:
    """Segment index -> its reference line: the in-order one-to-one pairing with the most shared words (a weighted
    LCS), so the sample's two "Hello." pair with the two "Hello?" lines in turn."""
    n, m = len(texts), len(references)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            best[i][j] = max(best[i + 1][j], best[i][j + 1], similarity(texts[i], references[j].text) + best[i + 1][j + 1])
    pairs, i, j = {}, 0, 0
    while i < n and j < m:
        if best[i][j] == best[i + 1][j]:
            i += 1
        elif best[i][j] == best[i][j + 1]:
            j += 1
        else:
            pairs[i] = references[j]
            i, j = i + 1, j + 1
    return pairs


def overlap(start: float, end: float, turn: Turn) -> float:
    return max(0.0, min(end, turn.end) - max(start, turn.start))


def speaker_by_overlap(segment: Segment, turns: list[Turn]) -> str:
    """What stage 2 does with --no_align: the speaker whose turns overlap the segment most."""
    totals: dict[str, float] = {}
    for turn in turns:
        totals[turn.speaker] = totals.get(turn.speaker, 0.0) + overlap(segment.start, segment.end, turn)
    return max(totals, key=totals.__getitem__)


def first_seen(speakers: Iterable[str]) -> list[str]:
    """Speakers in order of first appearance: sample.stm names them, sample.rttm numbers them, both in time order."""
    return list(dict.fromkeys(speakers))


@pytest.fixture(scope="module")
def transcript(transcript_path: Path) -> Transcript:
    return load_document(transcript_path, Transcript)


def test_no_word_is_squeezed_to_zero_length(transcript: Transcript) -> None:
    words = [w for s in transcript.segments for w in s.words or []]
    empty = [w.word for w in words if w.end - w.start < 1e-3]
    print(f"{len(empty)} of {len(words)} words have zero length: {empty}")
    assert len(words) >= 60
    assert len(empty) <= 0.12 * len(words), empty  # was 20 of 73; DTW alone leaves ~6 (two tokens in one frame)


def test_segments_start_where_their_words_are_said(transcript: Transcript) -> None:
    segments = transcript.segments
    pairs = pair_with_references([s.text for s in segments], reference_lines())
    assert len(pairs) >= 12, pairs
    errors = [abs(segments[i].start - line.start) for i, line in pairs.items()]
    mean = sum(errors) / len(errors)
    print(f"mean |segment start - reference| = {mean:.3f} s over {len(errors)} segments")
    assert mean <= 0.35  # was 0.60 (whole-second timestamp tokens); faster-whisper 0.25
    for segment in transcript.segments:
        words = segment.words or []
        assert words and segment.start == words[0].start and segment.end >= words[-1].end, segment


def test_segments_overlap_their_own_speaker_most(transcript: Transcript, sample_rttm: Path) -> None:
    references, turns, segments = reference_lines(), rttm_turns(sample_rttm), transcript.segments
    names = dict(zip(first_seen(t.speaker for t in references), first_seen(t.speaker for t in turns), strict=True))
    pairs = pair_with_references([s.text for s in segments], references)
    wrong = [segments[i].text for i, line in pairs.items() if speaker_by_overlap(segments[i], turns) != names[line.speaker]]
    print(f"{len(wrong)} of {len(transcript.segments)} segments overlap another speaker most: {wrong}")
    assert len(wrong) <= 1, wrong  # was 2 of 13 here (3 of 13 with stage 2's diarization)


GAP_SCRIPT = r"""
import json
import numpy as np
from stages.transcribe.pipeline.words import Loudness, start_words_after_gaps

rate = 16000
rng = np.random.default_rng(0)
samples = (0.1 * rng.standard_normal(5 * rate)).astype(np.float32)  # "speech" everywhere but the pause
samples[int(0.5 * rate) : int(0.8 * rate)] = 0.0  # a 0.3 s pause after "one,"
loudness = Loudness.of(samples)
words = [
    {"word": "one,", "start": 0.0, "end": 0.4},
    {"word": "two", "start": 0.95, "end": 1.3},  # the comma's span (0.4-0.95) holds the pause
    {"word": "three,", "start": 1.3, "end": 1.4},
    {"word": "four", "start": 1.6, "end": 1.9},  # the comma's span (1.4-1.6) holds no pause
    {"word": "five.", "start": 1.9, "end": 2.0},
    {"word": "six", "start": 3.5, "end": 3.8},  # 1.5 s with no pause: left alone
]
start_words_after_gaps(words, loudness)
print(json.dumps([w["start"] for w in words]))
"""


def test_a_word_after_a_punctuation_gap_starts_at_the_onset_or_where_the_last_word_ends(transcribe_python: Path) -> None:
    """DTW's span of a merged punctuation mark goes to the next word unless it holds a pause (issue 14, item 7):
    on the sample call this took the mean start error against the forced aligner from 105 to 80 ms."""
    import json
    import subprocess

    done = subprocess.run([str(transcribe_python), "-c", GAP_SCRIPT], capture_output=True, text=True, cwd=DATA.parents[1], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    starts = json.loads(done.stdout.strip().splitlines()[-1])
    assert starts == [0.0, 0.8, 1.3, 1.4, 1.9, 3.5]
