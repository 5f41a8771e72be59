"""Export whisperx's pyannote segmentation model to ONNX, for stage 1's `--vad_method pyannote`.

Stage 1's env has no torch (numpy 2 + MLX), so this env (which has whisperx, pyannote and torch) writes the model
once into the cache, with a JSON sidecar of how pyannote slides it over audio, and stage 1 runs it with
onnxruntime (stages/transcribe/vad/pyannote.py). The orchestrator runs this before stage 1 when asked for that VAD;
when both files are there it returns at once, without importing torch.

    python -m stages.align_diarize.export_vad [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from shared.errors import ExitCode, StageError
from stages.common.vad_model import PYANNOTE_SOURCE_SHA256, pyannote_vad_files

CHECK_TOLERANCE = 1e-4  # ONNX against torch on random audio: largest difference in a speech probability


def _whisperx_asset() -> Path:
    import whisperx

    path = Path(whisperx.__file__).parent / "assets" / "pytorch_model.bin"
    if not path.is_file():
        raise StageError(ExitCode.ENV_BROKEN, f"whisperx's VAD weights are missing ({path}): run `stagewhisper setup`")
    return path


def _load(asset: Path):  # type: ignore[no-untyped-def]
    from pyannote.audio import Model

    from shared.io import file_sha256
    from stages.align_diarize.diarization.checkpoints import pyannote_checkpoints_allowed

    if file_sha256(asset) != PYANNOTE_SOURCE_SHA256:
        raise StageError(ExitCode.ENV_BROKEN, f"{asset} is not the VAD model whisperx 3.3 ships (sha256 differs): run `stagewhisper setup`")
    with pyannote_checkpoints_allowed():
        model = Model.from_pretrained(str(asset))
    return model.eval()


def _write_atomically(folder: Path, suffix: str, write) -> Path:  # type: ignore[no-untyped-def]
    """A temporary file in `folder` written by `write`; removed again if writing fails."""
    handle, name = tempfile.mkstemp(dir=folder, prefix=".export-", suffix=suffix)
    os.close(handle)
    try:
        write(Path(name))
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def export(force: bool = False) -> Path:
    """Write the ONNX model and its sidecar (both or neither); returns the model's path."""
    model_path, sidecar_path = pyannote_vad_files()
    if model_path.is_file() and sidecar_path.is_file() and not force:
        return model_path
    import numpy as np
    import onnxruntime
    import torch

    model = _load(_whisperx_asset())
    window = model.audio.get_num_samples(model.specifications.duration)
    frames = model.receptive_field
    model_path.parent.mkdir(parents=True, exist_ok=True)

    def write_model(path: Path) -> None:
        example = torch.zeros(1, 1, window)
        torch.onnx.export(
            model, example, str(path), input_names=["waveform"], output_names=["scores"],
            dynamic_axes={"waveform": {0: "batch"}, "scores": {0: "batch"}}, opset_version=17, dynamo=False,
        )  # fmt: skip

    onnx_tmp = _write_atomically(model_path.parent, ".onnx", write_model)
    try:
        audio = torch.randn(2, 1, window) * 0.1
        with torch.no_grad():
            expected = model(audio).numpy()
        got = onnxruntime.InferenceSession(str(onnx_tmp), providers=["CPUExecutionProvider"]).run(None, {"waveform": audio.numpy()})[0]
        if got.shape != expected.shape or float(np.abs(got - expected).max()) > CHECK_TOLERANCE:
            raise StageError(ExitCode.FAILED, "the exported pyannote VAD disagrees with torch; please report this")
        sidecar = {
            "source_sha256": PYANNOTE_SOURCE_SHA256,
            "sample_rate": model.audio.sample_rate,
            "window_samples": window,
            "step_seconds": 0.1 * model.specifications.duration,  # pyannote Inference's default step
            "frame_start": frames.start,
            "frame_duration": frames.duration,
            "frame_step": frames.step,
            "classes": list(model.specifications.classes),
        }
        sidecar_tmp = _write_atomically(model_path.parent, ".json", lambda p: p.write_text(json.dumps(sidecar, indent=1)))
    except BaseException:
        onnx_tmp.unlink(missing_ok=True)
        raise
    sidecar_tmp.replace(sidecar_path)  # the sidecar first: a model without it is never taken for complete
    onnx_tmp.replace(model_path)
    return model_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stages.align_diarize.export_vad", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="export again even when the cache has it")
    args = parser.parse_args(argv)
    try:
        print(export(force=args.force))
    except StageError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return int(error.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
