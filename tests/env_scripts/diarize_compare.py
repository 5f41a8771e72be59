"""Diarize one audio file with stock pyannote and with our engine, interleaved, and print JSON (run inside envs/align_diarize).

usage: python diarize_compare.py PIPELINE AUDIO.wav [--repeat N] [--runs R] [--variants stock,exact,fast] [--threads T]
                                  [--reference REF.rttm] [--stock-runs S]
PIPELINE: a pyannote config.yaml (e.g. random_pyannote31.py's) or "bundled".
Prints {"audio_s", "runs": [{"variant", "seconds", "turns": [[start, end, speaker], ...], "der_vs_exact", "der"}]}:
turns are the Annotation's tracks, speaker labels as pyannote names them; DER (pyannote.metrics, 0.25 s collar,
overlap scored) against the first exact run and, with --reference, against the reference RTTM (the audio repeated
N times: the RTTM is shifted per copy), with its parts ("der_components": confusion, missed detection, false alarm,
total). --stock-runs caps the runs of the slow stock variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from stages.align_diarize.diarization.checkpoints import pyannote_checkpoints_allowed  # noqa: E402
from stages.align_diarize.diarization.engine import EngineSpeakerDiarization  # noqa: E402


def load_stock(pipeline: str):  # type: ignore[no-untyped-def]
    if pipeline == "bundled":
        from stages.align_diarize.diarization.bundled import load_bundled_pipeline

        return load_bundled_pipeline()
    from pyannote.audio import Pipeline

    with pyannote_checkpoints_allowed():
        return Pipeline.from_pretrained(pipeline)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pipeline")
    parser.add_argument("audio", type=Path)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--variants", default="stock,exact")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--stock-runs", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    samples, rate = sf.read(args.audio, dtype="float32")
    samples = np.tile(samples, args.repeat)
    with contextlib.redirect_stdout(sys.stderr):  # Lightning prints checkpoint upgrades on stdout
        stock = load_stock(args.pipeline)
    pipelines = {"stock": stock, "exact": EngineSpeakerDiarization.from_pipeline(stock, "exact")}
    if "fast" in args.variants:
        pipelines["fast"] = EngineSpeakerDiarization.from_pipeline(stock, "fast")
    runs, annotations = [], []
    for run in range(args.runs):
        for variant in args.variants.split(","):
            if variant == "stock" and args.stock_runs is not None and run >= args.stock_runs:
                continue
            started = time.perf_counter()
            with torch.inference_mode():
                annotation = pipelines[variant]({"waveform": torch.from_numpy(samples)[None], "sample_rate": rate})
            seconds = time.perf_counter() - started
            turns = [[round(s.start, 4), round(s.end, 4), label] for s, _, label in annotation.itertracks(yield_label=True)]
            runs.append({"variant": variant, "seconds": seconds, "turns": turns})
            annotations.append(annotation)
            print(f"{variant}: {seconds:.1f} s, {len(turns)} turns", file=sys.stderr)
    add_ders(runs, annotations, args.reference, args.repeat, len(samples) / rate / args.repeat)
    print(json.dumps({"audio_s": len(samples) / rate, "runs": runs}))


def add_ders(runs: list[dict], annotations: list, reference_rttm: Path | None, repeat: int, period: float) -> None:
    from pyannote.core import Annotation, Segment
    from pyannote.metrics.diarization import DiarizationErrorRate

    def der(reference: Annotation, hypothesis: Annotation) -> float:
        return float(DiarizationErrorRate(collar=0.25, skip_overlap=False)(reference, hypothesis))

    exact = next((a for r, a in zip(runs, annotations, strict=True) if r["variant"] == "exact"), None)
    reference = None
    if reference_rttm is not None:
        reference = Annotation()
        for copy in range(repeat):
            for line in reference_rttm.read_text().splitlines():
                fields = line.split()
                start = float(fields[3]) + copy * period
                reference[Segment(start, start + float(fields[4])), len(reference)] = fields[7]
    for run, annotation in zip(runs, annotations, strict=True):
        run["der_vs_exact"] = der(exact, annotation) if exact is not None else None
        run["der"] = der(reference, annotation) if reference is not None else None
        if reference is not None:  # the parts, so that DERs over several files can be pooled as a corpus's
            detail = DiarizationErrorRate(collar=0.25, skip_overlap=False)(reference, annotation, detailed=True)
            run["der_components"] = {name: float(value) for name, value in detail.items()}


if __name__ == "__main__":
    main()
