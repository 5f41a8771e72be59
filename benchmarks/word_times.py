"""How close stage 1's word times (`--word_timestamps True`: cross-attention + DTW) are to the truth.

Synthetic: espeak-ng reports each word's start while it synthesizes (a WORD event with its audio position in ms),
and each word's end is the last sound before the next word starts; calibration voices (stage 1's per-model shift
was estimated on them) and held-out voices and rates. Real: pyannote's sample call, every word against a forced
aligner's times (tests/data/sample.words.tsv, made by word_reference.py with PocketSphinx), and utterance-initial
starts / utterance-final ends against sample.stm's human utterance bounds.

Run from the repo root in the root env:  uv run python benchmarks/word_times.py [--model bundled-tiny.en] [--json PATH]

Needs the espeak-ng library (Debian: apt-get install espeak-ng). Reports, over the words stage 1 heard right (its
word text equal to the true word, in order), the mean absolute start and end error and the share of starts within
50 ms; prints a table and writes JSON (default benchmarks/results/word-times-<timestamp>.json).
"""

from __future__ import annotations

import argparse
import array
import ctypes
import ctypes.util
import difflib
import json
import os
import re
import subprocess
import sys
import tempfile
import wave
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "We will meet at the station at seven in the morning.",
    "She sells fresh bread and cheese at the market every Saturday.",
    "The weather was cold, so they stayed inside and read books all afternoon.",
    "My brother plays the guitar in a small band near the river.",
]
# (voice, words per minute; espeak-ng's default is 175). Stage 1's per-model word-time shift was estimated on the
# calibration voices only; the held-out voices, rates and the real call check it.
CALIBRATION = [("en-us", 175), ("en", 175)]
HELD_OUT = [("en-gb-x-rp", 175), ("en+f3", 175), ("en-us+m3", 175), ("en-gb-scotland", 175), ("en-us", 140), ("en", 220)]
WITHIN_S = 0.05  # the measure: share of word starts within 50 ms of the truth
LEAD_S = 1.0  # silence before and after the speech: Whisper's DTW places a word at a window's first frame poorly
SILENCE_LEVEL = 0.01  # |sample| below this (of full scale) counts as silence when finding a word's end

# espeak-ng's speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_RATE = 1  # espeak_SetParameter's words-per-minute parameter
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
EVENT_LIST_TERMINATED, EVENT_WORD = 0, 1


class EspeakEvent(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # characters from 1
        ("length", ctypes.c_int),  # the word's length in characters
        ("audio_position", ctypes.c_int),  # ms from the start of this synthesis
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),  # a union of int / const char* / char[8]
    ]


SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(EspeakEvent))


@dataclass
class TrueWord:
    word: str
    start: float
    end: float


@dataclass
class Clip:
    samples: array.array  # int16 ("h") at sample_rate
    sample_rate: int
    words: list[TrueWord]


@dataclass
class Pair:
    word: str
    true_start: float
    true_end: float
    start: float
    end: float


def load_espeak() -> ctypes.CDLL:
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError:
        raise SystemExit("error: the espeak-ng library was not found (Debian: apt-get install espeak-ng)") from None


def voice_name(voice: str, rate: int) -> str:
    return voice if rate == 175 else f"{voice} -s{rate}"


def synthesize(espeak: ctypes.CDLL, text: str, voice: str, rate: int = 175) -> Clip:
    """One synthesis: the waveform and every word's start (espeak's WORD events), ends found in the waveform."""
    sample_rate = espeak.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 500, None, 0)
    if sample_rate <= 0 or espeak.espeak_SetVoiceByName(voice.encode()) != 0 or espeak.espeak_SetParameter(ESPEAK_RATE, rate, 0) != 0:
        raise SystemExit(f"error: espeak-ng could not start with voice {voice} at {rate} words per minute")
    samples = array.array("h", bytes(2 * int(LEAD_S * sample_rate)))
    starts: list[tuple[int, float]] = []  # (character position, seconds)

    def collect(wav: ctypes.POINTER(ctypes.c_short), count: int, events: ctypes.POINTER(EspeakEvent)) -> int:
        if count > 0:
            samples.frombytes(ctypes.string_at(wav, count * 2))
        index = 0
        while events[index].type != EVENT_LIST_TERMINATED:
            if events[index].type == EVENT_WORD and events[index].length > 0:  # 0: a clause's end, no word
                starts.append((events[index].text_position, LEAD_S + events[index].audio_position / 1000))
            index += 1
        return 0  # 0: go on

    callback = SYNTH_CALLBACK(collect)  # kept alive until synthesis ends
    espeak.espeak_SetSynthCallback(callback)
    data = text.encode()
    espeak.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
    espeak.espeak_Synchronize()
    samples.frombytes(bytes(2 * int(LEAD_S * sample_rate)))
    return Clip(samples, sample_rate, true_words(text, starts, samples, sample_rate))


def true_words(text: str, starts: list[tuple[int, float]], samples: array.array, sample_rate: int) -> list[TrueWord]:
    """Each word from its WORD event's character position to the next one's (espeak gives one event to "from the":
    such a pair stays one true word, which no heard word matches); its end is the last sound before the next word."""
    words = []
    positions = [p for p, _ in starts] + [len(text) + 1]
    bounds = [s for _, s in starts] + [len(samples) / sample_rate]
    for index, (position, start) in enumerate(starts):
        word = text[position - 1 : positions[index + 1] - 1].strip()
        words.append(TrueWord(word, start, last_sound(samples, sample_rate, start, bounds[index + 1])))
    return words


def last_sound(samples: array.array, sample_rate: int, start: float, limit: float) -> float:
    first, last = int(start * sample_rate), min(int(limit * sample_rate), len(samples))
    level = SILENCE_LEVEL * 32768
    for index in range(last - 1, first - 1, -1):
        if abs(samples[index]) > level:
            return (index + 1) / sample_rate
    return limit


def write_wav(clip: Clip, path: Path) -> None:
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(clip.sample_rate)
        writer.writeframes(clip.samples.tobytes())  # little-endian int16 on the x86/arm64 hosts we run on


def stage1_words(audio: Path, work: Path, model: str, extra: list[str]) -> list[dict]:
    command = ["stagewhisper", "transcribe", str(audio), "--model", model, "--language", "en", "--word_timestamps", "True"]
    done = subprocess.run(
        [*command, *extra, "--output_dir", str(work), "--force"], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    if done.returncode != 0:
        raise SystemExit(f"stage 1 failed on {audio.name}:\n{done.stderr[-2000:]}")
    transcript = json.loads((work / f"{audio.stem}.transcript.json").read_text(encoding="utf-8"))
    return [w for s in transcript["segments"] for w in s["words"] or []]


def normalized(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def matches(truth: list[TrueWord], heard: list[dict]) -> list[tuple[int, int]]:
    """(truth index, heard index) of the words stage 1 heard right, in order (difflib's matching blocks)."""
    matcher = difflib.SequenceMatcher(a=[normalized(t.word) for t in truth], b=[normalized(h["word"]) for h in heard], autojunk=False)
    return [(block.a + k, block.b + k) for block in matcher.get_matching_blocks() for k in range(block.size)]


def pair_words(truth: list[TrueWord], heard: list[dict]) -> list[Pair]:
    """Words stage 1 heard right, paired in order with the true ones."""
    return [Pair(truth[t].word, truth[t].start, truth[t].end, heard[h]["start"], heard[h]["end"]) for t, h in matches(truth, heard)]


def summary(pairs: list[Pair], words: int) -> dict[str, float]:
    starts = [abs(p.start - p.true_start) for p in pairs]
    ends = [abs(p.end - p.true_end) for p in pairs]
    count = max(len(pairs), 1)
    return {
        "words": words,
        "matched": len(pairs),
        "mean_start_error_ms": round(1000 * sum(starts) / count, 1),
        "mean_end_error_ms": round(1000 * sum(ends) / count, 1),
        "mean_start_lag_ms": round(1000 * sum(p.start - p.true_start for p in pairs) / count, 1),  # > 0: stage 1 late
        "starts_within_50ms": round(sum(e <= WITHIN_S for e in starts) / count, 3),
    }


def bound_summary(starts: list[Pair], ends: list[Pair], bounds: int) -> dict[str, float]:
    """Utterance bounds: start errors (and lag, share within 50 ms) of utterance-initial words, end errors of final ones."""
    row = summary(starts, bounds)
    row["matched"] = len(starts) + len(ends)
    row["mean_end_error_ms"] = summary(ends, 0)["mean_end_error_ms"]
    return row


def print_table(rows: dict[str, dict[str, float]]) -> None:
    table = Table(title="stage 1 word times vs espeak-ng's word starts (synthetic) and the sample call's references (real)")
    for column in ("clip", "words", "matched", "mean |start| ms", "mean |end| ms", "starts within 50 ms", "mean start lag ms"):
        table.add_column(column, justify="left" if column == "clip" else "right")
    for name, row in rows.items():
        table.add_row(
            name,
            str(row["words"]),
            str(row["matched"]),
            f"{row['mean_start_error_ms']:.0f}",
            f"{row['mean_end_error_ms']:.0f}",
            f"{100 * row['starts_within_50ms']:.0f} %",
            f"{row['mean_start_lag_ms']:+.0f}",
        )
    Console(width=None if sys.stdout.isatty() else 160).print(table)  # a pipe gets 80 columns: headers would wrap


def measure_synthetic(model: str, extra: list[str], work: Path) -> tuple[dict[str, dict[str, float]], list[dict]]:
    espeak = load_espeak()
    rows, details, groups = {}, [], {}
    for group, voices in (("calibration voices", CALIBRATION), ("held-out voices", HELD_OUT)):
        everything, words = [], 0
        for voice, rate in voices:
            name = voice_name(voice, rate)
            clip = synthesize(espeak, " ".join(SENTENCES), voice, rate)
            audio = work / f"espeak-{name.replace(' ', '')}.wav"
            write_wav(clip, audio)
            pairs = pair_words(clip.words, stage1_words(audio, work, model, extra))
            rows[name] = summary(pairs, len(clip.words))
            everything += pairs
            words += len(clip.words)
            details += [{"clip": name, **asdict(p)} for p in pairs]
        groups[group] = summary(everything, words)
    return rows | groups, details


# sample.stm's utterance bounds are where its annotator cut the call: a bound this close to another utterance's is a
# cut inside continuous speech or a change of speaker (with possible overlap), not a word's edge at a pause.
TURN_GAP_S = 0.1


def real_reference() -> tuple[list[TrueWord], list[int], list[tuple[float, float]]]:
    """The sample call's words as a forced aligner placed them (sample.words.tsv, from word_reference.py), each
    word's utterance, and each utterance's human bounds (sample.stm)."""
    lines = (DATA / "sample.words.tsv").read_text(encoding="utf-8").splitlines()[1:]
    fields = [line.split("\t") for line in lines if line.strip()]
    stm = [line.split(maxsplit=5) for line in (DATA / "sample.stm").read_text(encoding="utf-8").splitlines() if line.strip()]
    words = [TrueWord(f[1], float(f[2]), float(f[3])) for f in fields]
    return words, [int(f[0]) for f in fields], [(float(f[3]), float(f[4])) for f in stm]


def at_pause(index: int, time: float, bounds: list[tuple[float, float]]) -> bool:
    return all(abs(time - other) > TURN_GAP_S for j, pair in enumerate(bounds) if j != index for other in pair)


def measure_real(model: str, extra: list[str], work: Path) -> tuple[dict[str, dict[str, float]], list[dict]]:
    sys.path.insert(0, str(REPO))
    from orchestrator.assets import sample_audio

    truth, utterance, bounds = real_reference()
    heard = stage1_words(sample_audio(), work, model, extra)
    found = matches(truth, heard)
    pairs = [Pair(truth[t].word, truth[t].start, truth[t].end, heard[h]["start"], heard[h]["end"]) for t, h in found]
    first = {u: min(i for i, v in enumerate(utterance) if v == u) for u in set(utterance)}
    last = {u: max(i for i, v in enumerate(utterance) if v == u) for u in set(utterance)}
    rows = {"real: every word (aligner)": summary(pairs, len(truth))}
    for name, keep in (("real: utterance bounds (stm)", lambda index, time, bounds: True), ("real: bounds at pauses (stm)", at_pause)):
        starts = [
            Pair(truth[t].word, bounds[u][0], truth[t].end, heard[h]["start"], heard[h]["end"])
            for t, h in found
            for u in [utterance[t]]
            if first[u] == t and keep(u, bounds[u][0], bounds)
        ]
        ends = [
            Pair(truth[t].word, truth[t].start, bounds[u][1], heard[h]["start"], heard[h]["end"])
            for t, h in found
            for u in [utterance[t]]
            if last[u] == t and keep(u, bounds[u][1], bounds)
        ]
        considered = sum(keep(u, s, bounds) + keep(u, e, bounds) for u, (s, e) in enumerate(bounds))
        rows[name] = bound_summary(starts, ends, considered)
    return rows, [{"clip": "sample", **asdict(p)} for p in pairs]


def measure(model: str, extra: list[str]) -> tuple[dict[str, dict[str, float]], list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        rows, details = measure_synthetic(model, extra, Path(tmp))
        real_rows, real_details = measure_real(model, extra, Path(tmp))
    return rows | real_rows, details + real_details


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="bundled-tiny.en")
    parser.add_argument("--json", type=Path, help="results file (default benchmarks/results/word-times-<timestamp>.json)")
    parser.add_argument("stage1_flags", nargs="*", help="more stage-1 flags, after --, e.g. -- --backend mlx")
    args = parser.parse_args()
    rows, details = measure(args.model, args.stage1_flags)
    print_table(rows)
    path = args.json or REPO / "benchmarks" / "results" / f"word-times-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"model": args.model, "flags": args.stage1_flags, "sentences": SENTENCES, "rows": rows, "words": details}
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
