"""How the bundled diarization pipeline's parameters were chosen: DER and speed, measured.

Run from the repo root with the stage-2 env (2 torch threads, as the stage runs):

    HF_HUB_OFFLINE=1 envs/align_diarize/.venv/bin/python benchmarks/diarization_tuning.py            # sweep
    HF_HUB_OFFLINE=1 envs/align_diarize/.venv/bin/python benchmarks/diarization_tuning.py --speed    # chosen params only

Audio: pyannote's sample.wav (30 s, real two-speaker call); "x10", the sample repeated 10 times (300 s) with
the reference shifted by 30 s per repeat (same two speakers), to catch settings that only fit one short file; and
"x10v", 10 repeats each with its own gain (-6..+6 dB), silent lead-in (0.1-1.5 s) and faint noise, so that no two
repeats give the same embeddings (exact repeats flatter clustering).
DER: pyannote.metrics DiarizationErrorRate(collar=0.25, skip_overlap=False): 0.25 s *total* collar, overlap scored.
Each DER is given for num_speakers unset ("auto"), num_speakers=2 ("n=2") and min_speakers=2, max_speakers=4 ("2-4").

Front-end settings (segmentation step, segmentation threshold, min speech per embedding, exclude_overlap) run
the pipeline once per file, timed; pyannote's training mode caches segmentations and embeddings, so the
clustering sweep on top of them is cheap. `--speed` times the chosen `BUNDLED_PARAMS` (training mode off) on x10
and reports peak RSS.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import resource
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from pyannote.audio.pipelines import SpeakerDiarization
from pyannote.core import Annotation, Segment
from pyannote.database.util import load_rttm
from pyannote.metrics.diarization import DiarizationErrorRate

from stages.align_diarize.diarization.bundled import BUNDLED_PARAMS, load_bundled_pipeline

SPEAKERS = {"auto": {}, "n=2": {"num_speakers": 2}, "2-4": {"min_speakers": 2, "max_speakers": 4}}
REPEAT = 10


@dataclass
class Case:
    name: str
    file: dict[str, Any]
    reference: Annotation
    seconds: float


def sample_paths() -> tuple[Path, Path]:
    import pyannote.audio

    folder = Path(pyannote.audio.__file__).parent / "sample"
    return folder / "sample.wav", folder / "sample.rttm"


def repeated(reference: Annotation, period: float, repeat: int) -> Annotation:
    shifted = Annotation(uri=reference.uri)
    for k in range(repeat):
        for segment, track, label in reference.itertracks(yield_label=True):
            shifted[Segment(segment.start + k * period, segment.end + k * period), (k, track)] = label
    return shifted


def varied_repeats(samples: np.ndarray, rate: int, reference: Annotation, repeat: int) -> tuple[np.ndarray, Annotation]:
    """The sample `repeat` times, each with its own gain (-6..+6 dB), a 0.1-1.5 s silent lead-in (so the 5 s
    segmentation chunks fall differently) and faint noise: same speakers, but no two embeddings identical."""
    rng = np.random.default_rng(0)
    pieces, shifted, offset = [], Annotation(uri="x10v"), 0.0
    for k in range(repeat):
        lead = rng.uniform(0.1, 1.5)
        gain = 10 ** (rng.uniform(-6.0, 6.0) / 20)
        pieces += [np.zeros(round(lead * rate), np.float32), (samples * gain).astype(np.float32)]
        offset += lead
        for segment, track, label in reference.itertracks(yield_label=True):
            shifted[Segment(segment.start + offset, segment.end + offset), (k, track)] = label
        offset += len(samples) / rate
    audio = np.concatenate(pieces)
    return (audio + rng.normal(0.0, 10 ** (-60 / 20), audio.shape)).astype(np.float32), shifted


def cases() -> list[Case]:
    wav, rttm = sample_paths()
    samples, rate = sf.read(wav, dtype="float32")
    reference = next(iter(load_rttm(rttm).values()))
    varied, varied_reference = varied_repeats(samples, rate, reference, REPEAT)
    audio = {
        "x1": (samples, reference),
        "x10": (np.tile(samples, REPEAT), repeated(reference, len(samples) / rate, REPEAT)),
        "x10v": (varied, varied_reference),
    }
    return [
        Case(name, {"uri": name, "waveform": torch.from_numpy(wave)[None], "sample_rate": rate}, ref, len(wave) / rate)
        for name, (wave, ref) in audio.items()
    ]


def der(reference: Annotation, hypothesis: Annotation) -> float:
    return DiarizationErrorRate(collar=0.25, skip_overlap=False)(reference, hypothesis)


def all_ders(pipeline: SpeakerDiarization, files: list[Case]) -> dict[str, float]:
    return {f"{case.name} {name}": der(case.reference, pipeline(dict(case.file), **kw)) for case in files for name, kw in SPEAKERS.items()}


def with_front_end(step: float, seg_threshold: float, min_speech: float, exclude_overlap: bool) -> dict[str, Any]:
    params = copy.deepcopy(BUNDLED_PARAMS)
    params.update(segmentation_step=step, min_speech_seconds=min_speech, embedding_exclude_overlap=exclude_overlap)
    params["hyper_parameters"]["segmentation"]["threshold"] = seg_threshold
    return params


def sweep_front_end(params: dict[str, Any], files: list[Case], grid: dict[str, list]) -> list[tuple[dict, dict[str, float]]]:
    """One timed pass per file (fills pyannote's training cache), then every clustering setting on the cache."""
    pipeline = load_bundled_pipeline(params)
    pipeline.training = True
    for case in files:
        case.file = {k: v for k, v in case.file.items() if not k.startswith("training_cache")}
        start = time.perf_counter()
        pipeline(case.file)
        elapsed = time.perf_counter() - start
        print(f"  {case.name}: {elapsed:.2f} s, {case.seconds / elapsed:.1f}x realtime (segmentation + embeddings + clustering)")
    rows = []
    for method, threshold, min_cluster_size, min_duration_off in itertools.product(*grid.values()):
        hyper = copy.deepcopy(params["hyper_parameters"])
        hyper["clustering"] = {"method": method, "threshold": threshold, "min_cluster_size": min_cluster_size}
        hyper["segmentation"]["min_duration_off"] = min_duration_off
        pipeline.instantiate(hyper)
        rows.append((hyper, all_ders(pipeline, files)))
    return rows


def print_rows(rows: list[tuple[dict, dict[str, float]]], top: int) -> None:
    rows = sorted(rows, key=lambda row: max(row[1].values()))[:top]
    header = list(rows[0][1]) if rows else []
    print(f"  {'method':9s} {'thresh':>6s} {'mcs':>3s} {'mdo':>4s} | " + " | ".join(f"{h:>9s}" for h in header) + " |  worst")
    for hyper, ders in rows:
        c, s = hyper["clustering"], hyper["segmentation"]
        values = " | ".join(f"{100 * ders[h]:8.1f}%" for h in header)
        worst = 100 * max(ders.values())
        print(f"  {c['method']:9s} {c['threshold']:6.2f} {c['min_cluster_size']:3d} {s['min_duration_off']:4.2f} | {values} |", end="")
        print(f" {worst:5.1f}%")


def speed(files: list[Case], runs: int) -> None:
    """The chosen parameters, training mode off: DERs, then the 300 s file timed `runs` times."""
    pipeline = load_bundled_pipeline()
    print("chosen:", BUNDLED_PARAMS)
    for name, value in all_ders(pipeline, files).items():
        print(f"  DER {name}: {100 * value:.1f}%")
    long = files[-1]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        pipeline(dict(long.file))
        times.append(time.perf_counter() - start)
    best = min(times)
    all_runs = [round(t, 2) for t in times]
    print(f"  {long.name} ({long.seconds:.0f} s): best {best:.2f} s = {long.seconds / best:.1f}x realtime; all runs {all_runs}")
    print(f"  peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed", action="store_true", help="only DER + speed + peak RSS of BUNDLED_PARAMS")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=float, nargs="+", default=[0.1, 0.2])
    parser.add_argument("--seg-thresholds", type=float, nargs="+", default=[0.5])
    parser.add_argument("--min-speech", type=float, nargs="+", default=[0.5, 0.8, 1.0, 1.2, 1.6])
    parser.add_argument("--exclude-overlap", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=["average", "centroid", "complete"])
    parser.add_argument("--thresholds", type=float, nargs=3, default=[0.1, 0.7, 0.02], metavar=("FROM", "TO", "STEP"))
    parser.add_argument("--min-cluster-sizes", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--min-duration-off", type=float, nargs="+", default=[0.0])
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()

    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")  # checkpoint version notices, torchaudio deprecations
    files = cases()
    if args.speed:
        speed(files, args.runs)
        return
    grid = {
        "method": args.methods,
        "threshold": [round(float(t), 3) for t in np.arange(*args.thresholds)],
        "min_cluster_size": args.min_cluster_sizes,
        "min_duration_off": args.min_duration_off,
    }
    front_ends = itertools.product(args.steps, args.seg_thresholds, args.min_speech, args.exclude_overlap)
    for step, seg_threshold, min_speech, exclude in front_ends:
        print(f"\nsegmentation_step={step} segmentation.threshold={seg_threshold}", end=" ")
        print(f"min_speech_seconds={min_speech} exclude_overlap={bool(exclude)}")
        rows = sweep_front_end(with_front_end(step, seg_threshold, min_speech, bool(exclude)), files, grid)
        print_rows(rows, args.top)


if __name__ == "__main__":
    main()
