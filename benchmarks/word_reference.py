"""Real-speech word times for benchmarks/word_times.py: every word of the sample call, forced-aligned by PocketSphinx.

sample.stm has human utterance bounds only. A forced aligner independent of Whisper gives each word's start and
end: PocketSphinx (CMU's HMM recognizer, its en-us acoustic model and dictionary ship in the PyPI wheel) aligns
sample.stm's words to the audio, all 13 utterances in one pass. `--check` first aligns espeak-ng clips, whose word
starts are exact (word_times.py), to show how far the aligner itself can be trusted.

Run from the repo root (pocketsphinx and scipy come for this run only, the project does not depend on them):
    uv run --with pocketsphinx --with scipy python benchmarks/word_reference.py [--check]
Writes tests/data/sample.words.tsv: utterance index (sample.stm line, from 0), word, start, end (seconds).
"""

from __future__ import annotations

import argparse
import re
import sys
import wave
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import word_times  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STM = REPO / "tests" / "data" / "sample.stm"
OUT = REPO / "tests" / "data" / "sample.words.tsv"
RATE = 16000  # PocketSphinx's en-us model
FRAME_S = 0.01  # its frames
# Wide beams: with PocketSphinx's defaults the search loses the forced path on 30 s of speech ("final result does
# not match the grammar") and returns nothing.
BEAMS = {"beam": 1e-100, "wbeam": 1e-80, "pbeam": 1e-100, "lpbeam": 1e-80, "lponlybeam": 1e-80}


def align(samples: np.ndarray, words: list[str]) -> list[tuple[str, float, float]] | None:
    """(word, start, end) of each word in order, PocketSphinx's silences and fillers left out; None when the
    search lost the forced path."""
    from pocketsphinx import Decoder

    decoder = Decoder(samprate=RATE, bestpath=False, loglevel="FATAL", **BEAMS)
    missing = [w for w in words if not decoder.lookup_word(w)]
    if missing:
        raise SystemExit(f"error: not in PocketSphinx's dictionary: {missing}")
    decoder.set_align_text(" ".join(words))
    decoder.start_utt()
    decoder.process_raw(samples.astype(np.int16).tobytes(), full_utt=True)
    decoder.end_utt()
    found = [
        (re.sub(r"\(\d+\)$", "", s.word), s.start_frame * FRAME_S, (s.end_frame + 1) * FRAME_S)
        for s in decoder.seg() or []
        if not s.word.startswith(("<", "["))
    ]
    return found if [w for w, _, _ in found] == words else None


def stm_words() -> list[tuple[int, str]]:
    lines = [line.split(maxsplit=5) for line in STM.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(index, word_times.normalized(w)) for index, fields in enumerate(lines) for w in fields[5].split()]


def read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as reader:
        if reader.getframerate() != RATE or reader.getnchannels() != 1 or reader.getsampwidth() != 2:
            raise SystemExit(f"error: {path} is not 16 kHz mono 16-bit")
        return np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)


def check_on_espeak() -> None:
    """The aligner against espeak-ng's exact starts, one sentence at a time (a whole clip can lose the path)."""
    from scipy.signal import resample_poly

    espeak = word_times.load_espeak()
    for voice, rate in word_times.CALIBRATION + word_times.HELD_OUT:
        pairs, total, lost = [], 0, 0
        for sentence in word_times.SENTENCES:
            clip = word_times.synthesize(espeak, sentence, voice, rate)
            samples = resample_poly(np.frombuffer(clip.samples.tobytes(), dtype=np.int16).astype(float), RATE, clip.sample_rate)
            found = align(samples, [word_times.normalized(w) for w in sentence.split()])
            if found is None:
                lost += 1
                continue
            heard = [{"word": w, "start": start, "end": end} for w, start, end in found]
            pairs += word_times.pair_words(clip.words, heard)
            total += len(clip.words)
        print(word_times.voice_name(voice, rate), word_times.summary(pairs, total), f"sentences not aligned: {lost}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="first measure the aligner on espeak-ng clips")
    args = parser.parse_args()
    if args.check:
        check_on_espeak()
    sys.path.insert(0, str(REPO))
    from orchestrator.assets import sample_audio

    words = stm_words()
    found = align(read_wav(sample_audio()), [w for _, w in words])
    if found is None:
        raise SystemExit("error: PocketSphinx did not align every word of the call")
    rows = [f"{utterance}\t{word}\t{start:.2f}\t{end:.2f}" for (utterance, word), (_, start, end) in zip(words, found, strict=True)]
    OUT.write_text("utterance\tword\tstart\tend\n" + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({len(rows)} words)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
