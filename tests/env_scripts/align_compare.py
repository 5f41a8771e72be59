"""Align a transcript with stock `whisperx.align` and with ours, interleaved, and print JSON (run inside envs/align_diarize).

usage: python align_compare.py TRANSCRIPT.json AUDIO.wav CTC_MODEL_DIR [--runs R] [--threads T]
Prints {"audio_s", "runs": [{"variant", "seconds"}], "words": {"stock", "ours", "equal_times", "compared"}}: word
times compared for the words both give times to, in order (ours keeps every word; stock drops some).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from shared.contract import Transcript  # noqa: E402
from shared.io import load_document  # noqa: E402
from stages.align_diarize.alignment.align import ALIGN_MARGIN_S, align_segments, alignment_window  # noqa: E402
from stages.align_diarize.alignment.model import load_align_model, whisperx_alignment  # noqa: E402
from stages.common.audio import decode_audio  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("transcript", type=Path)
    parser.add_argument("audio", type=Path)
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transcript = load_document(args.transcript, Transcript)
    audio = decode_audio(args.audio).samples
    with contextlib.redirect_stdout(sys.stderr):
        model = load_align_model(transcript.language, str(args.model))
    whisperx = whisperx_alignment()
    metadata = {"language": model.language, "dictionary": model.dictionary, "type": model.kind}
    # the same audio windows for both (ours widens each segment's by ALIGN_MARGIN_S): equal windows, equal word times
    windows = [alignment_window(s, ALIGN_MARGIN_S, len(audio) / 16000) for s in transcript.segments]
    stock_segments = [{"start": start, "end": end, "text": s.text} for (start, end), s in zip(windows, transcript.segments, strict=True)]
    runs, stock_words, our_words = [], [], []
    for _ in range(args.runs):
        started = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            stock = whisperx.align(stock_segments, model.network, metadata, audio, "cpu")
        runs.append({"variant": "whisperx.align", "seconds": time.perf_counter() - started})
        started = time.perf_counter()
        ours = align_segments(transcript.segments, audio, model)
        runs.append({"variant": "ours", "seconds": time.perf_counter() - started})
        print(f"whisperx {runs[-2]['seconds']:.1f} s, ours {runs[-1]['seconds']:.1f} s", file=sys.stderr)
        stock_words = [(w["word"], round(w["start"], 3), round(w["end"], 3)) for w in stock["word_segments"] if "start" in w]
        our_words = [(w.word, w.start, w.end) for s in ours.segments for w in s.words or [] if w.start is not None]
    equal = sum(1 for a, b in zip(stock_words, our_words, strict=False) if a == b)
    print(
        json.dumps(
            {
                "audio_s": len(audio) / 16000,
                "runs": runs,
                "words": {
                    "stock": len(stock_words),
                    "ours": len(our_words),
                    "equal_times": equal,
                    "compared": min(len(stock_words), len(our_words)),
                },
            }
        )
    )


if __name__ == "__main__":
    main()
