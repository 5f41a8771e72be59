"""Write a pyannote/speaker-diarization-3.1-shaped pipeline with random weights (run inside envs/align_diarize).

The hub's 3.1 pipeline is gated and no hub is reachable here, so tests and benchmarks build its exact
architectures locally: segmentation-3.0's PyanNet (SincNet, 4 BiLSTM, powerset over 3 speakers, 10 s windows)
and WeSpeaker ResNet34, saved as pyannote checkpoints, plus 3.1's config.yaml naming them. The compute is
3.1's; the speakers it finds are arbitrary but deterministic for a seed.

usage: python random_pyannote31.py OUT_DIR [--seed N] [--real-segmentation]   → OUT_DIR/config.yaml

--real-segmentation: whisperx's real segmentation model (pyannote/segmentation v2, 5 s windows) instead of a
random segmentation-3.0: random segmentation weights call every frame speech, so turns then only test plumbing;
with real speech activity, the random ResNet34's embeddings decide real clustering choices.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from pyannote.audio.core.task import Problem, Resolution, Specifications
from pyannote.audio.models.embedding import WeSpeakerResNet34
from pyannote.audio.models.segmentation import PyanNet

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

CONFIG = """\
version: 3.1.0
pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    clustering: AgglomerativeClustering
    embedding: {embedding}
    embedding_batch_size: 32
    embedding_exclude_overlap: true
    segmentation: {segmentation}
    segmentation_batch_size: 32
params:
  clustering:
    method: centroid
    min_cluster_size: 12
    threshold: 0.7045654963945799
  segmentation:
    min_duration_off: 0.0{threshold}
"""


def save_checkpoint(model: torch.nn.Module, path: Path) -> None:
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": "2.0.0"}
    model.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)


def segmentation_model() -> PyanNet:
    model = PyanNet(
        sincnet={"stride": 10},
        lstm={"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True},
        linear={"hidden_size": 128, "num_layers": 2},
        sample_rate=16000,
        num_channels=1,
    )
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=10.0,
        min_duration=10.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.build()
    return model


def embedding_model() -> WeSpeakerResNet34:
    model = WeSpeakerResNet34(sample_rate=16000, num_channels=1)
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-segmentation", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    segmentation = args.out / "segmentation-3.0.ckpt"
    if args.real_segmentation:
        from stages.align_diarize.diarization.bundled import whisperx_segmentation_path

        segmentation = whisperx_segmentation_path()
    # PretrainedSpeakerEmbedding takes pyannote's loader only for a path containing "pyannote"
    embedding = args.out / "pyannote-wespeaker-resnet34.ckpt"
    if not args.real_segmentation:
        save_checkpoint(segmentation_model(), segmentation)
    save_checkpoint(embedding_model(), embedding)
    threshold = "\n    threshold: 0.5" if args.real_segmentation else ""  # a multi-label (not powerset) model has one
    (args.out / "config.yaml").write_text(CONFIG.format(segmentation=segmentation, embedding=embedding, threshold=threshold))
    print(args.out / "config.yaml")


if __name__ == "__main__":
    main()
