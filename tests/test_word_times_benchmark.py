"""benchmarks/word_times.py measures stage 1's word times against espeak-ng's exact word starts (issue 14, item 7)."""

from __future__ import annotations

import ctypes.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ctypes.util.find_library("espeak-ng"), reason="needs the espeak-ng library (apt-get install espeak-ng)"),
]


def test_espeak_reports_word_starts_and_the_waveform_their_ends() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import word_times
    finally:
        sys.path.pop(0)
    clip = word_times.synthesize(word_times.load_espeak(), "The quick brown fox jumps over the lazy dog.", "en-us")
    words = clip.words
    assert [w.word for w in words] == "The quick brown fox jumps over the lazy dog.".split()
    assert words[0].start == word_times.LEAD_S  # speech starts after the lead silence, at espeak's 0 ms
    assert all(a.start < a.end <= b.start + 1e-3 for a, b in zip(words, words[1:], strict=False))
    assert len(clip.samples) / clip.sample_rate > words[-1].end + word_times.LEAD_S - 0.1


def test_benchmark_reports_stage1_word_time_errors(stage_envs: dict[str, Path], tmp_path: Path) -> None:
    result = tmp_path / "word-times.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "word_times.py"), "--json", str(result)], capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "starts within 50 ms" in done.stdout
    rows = json.loads(result.read_text(encoding="utf-8"))["rows"]
    overall = rows["all"]
    assert overall["matched"] >= 0.6 * overall["words"], overall  # tiny.en hears most of espeak's words
    assert 0 < overall["mean_start_error_ms"] < 300 and 0 <= overall["starts_within_50ms"] <= 1, overall
