"""Stage 2's process start (issue 11): the stage imports only what the requested work needs, with the same results.

- Alignment loads its model as whisperx's `load_align_model` does and runs whisperx's CTC path (`alignment/ctc.py`)
  without importing `whisperx.alignment` (transformers, pandas, nltk): checked against whisperx's own functions.
- The stage process, as `python -m stages.align_diarize` (sys.modules as it exits: what it imported): a torchaudio
  bundle (whisperx's English default) imports no transformers nor pandas; no alignment nltk; diarization imports
  pyannote.audio with transformers hidden from torchmetrics (`diarization/pyannote_import.py`), and a hub-style
  config.yaml pipeline still loads and runs. With torchmetrics imported first (nothing hidden) the results are equal.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shared.contract import Result
from shared.io import load_document

ENV_SCRIPTS = Path(__file__).parent / "env_scripts"
REPO = Path(__file__).resolve().parent.parent
# what no alignment imports (an HF model's transformers imports pandas itself, through scikit-learn)
NOT_FOR_ALIGNMENT = {"whisperx", "whisperx.alignment", "nltk", "pyannote.audio", "pytorch_lightning"}


@pytest.fixture(scope="module")
def torchaudio_bundle(tmp_path_factory: pytest.TempPathFactory, align_python: Path) -> Path:
    """A folder for --model_dir holding WAV2VEC2_ASR_BASE_960H's checkpoint with random weights (its real shapes)."""
    folder = tmp_path_factory.mktemp("torchaudio-models")
    subprocess.run([str(align_python), str(ENV_SCRIPTS / "random_torchaudio_bundle.py"), str(folder)], check=True, capture_output=True)
    return folder


@pytest.fixture(scope="module")
def pipeline31(tmp_path_factory: pytest.TempPathFactory, align_python: Path) -> Path:
    """pyannote/speaker-diarization-3.1's config.yaml and architectures, random weights (the hub's model is gated)."""
    folder = tmp_path_factory.mktemp("p31")
    done = subprocess.run([str(align_python), str(ENV_SCRIPTS / "random_pyannote31.py"), str(folder)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "config.yaml"


def run_stage(align_python: Path, transcript: Path, out: Path, flags: list[str], prelude: str = "") -> tuple[Result, set[str]]:
    """The one-file stage process (its __main__, so its fast exit too) and the modules it imported, which an atexit
    callback writes (so callbacks still run). PRELUDE runs first in the same process."""
    from orchestrator import runtime

    modules = out.with_name(out.name + ".modules.json")
    dump = f"import atexit, json, sys\natexit.register(lambda: open({str(modules)!r}, 'w').write(json.dumps(sorted(sys.modules))))"
    code = f"{dump}\n{prelude}\nimport runpy\nrunpy.run_module('stages.align_diarize', run_name='__main__')"
    done = subprocess.run(
        [str(align_python), "-P", "-c", code, str(transcript), "--output_dir", str(out), *flags],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**runtime.stage_environment("align_diarize", threads=2), "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"kind": "output"' in done.stdout  # progress events reach stdout before the fast exit
    return load_document(out / "call.json", Result), set(json.loads(modules.read_text()))


def test_alignment_matches_whisperx(align_python: Path, torchaudio_bundle: Path, random_ctc_model: Path) -> None:
    done = subprocess.run(
        [str(align_python), str(ENV_SCRIPTS / "align_checks.py"), str(torchaudio_bundle), str(random_ctc_model)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["ctc"]["paths"] >= 50 and report["ctc"]["failed"] >= 10  # both outcomes compared
    assert report["defaults_equal"] and report["torchaudio_equal"] and report["huggingface_equal"], report


def test_torchaudio_bundle_alignment_imports_no_transformers(
    tmp_path: Path, align_python: Path, transcript_path: Path, torchaudio_bundle: Path
) -> None:
    result, modules = run_stage(align_python, transcript_path, tmp_path, ["--model_dir", str(torchaudio_bundle)])
    assert result.alignment is not None and (result.alignment.model, result.alignment.source) == ("WAV2VEC2_ASR_BASE_960H", "torchaudio")
    assert all(word.start is not None for word in result.word_segments)
    assert "torchaudio" in modules
    assert not {"transformers", "pandas", *NOT_FOR_ALIGNMENT} & modules, sorted({"transformers", "pandas", *NOT_FOR_ALIGNMENT} & modules)


def test_hf_model_alignment_imports_no_nltk(tmp_path: Path, align_python: Path, transcript_path: Path, random_ctc_model: Path) -> None:
    result, modules = run_stage(align_python, transcript_path, tmp_path, ["--align_model", str(random_ctc_model)])
    assert result.alignment is not None and result.alignment.source == "local"
    assert "transformers" in modules
    assert not NOT_FOR_ALIGNMENT & modules, sorted(NOT_FOR_ALIGNMENT & modules)


@pytest.mark.parametrize("pipeline", ["bundled", "3.1 config.yaml"])
def test_diarization_imports_no_transformers_and_keeps_its_results(
    tmp_path: Path, align_python: Path, transcript_path: Path, pipeline31: Path, pipeline: str
) -> None:
    flags = ["--no_align", "--diarize", "--diarize_model", "bundled" if pipeline == "bundled" else str(pipeline31)]
    result, modules = run_stage(align_python, transcript_path, tmp_path / "hidden", flags)
    assert "pyannote.audio" in modules and "torchmetrics" in modules
    assert not {"transformers", "whisperx.alignment"} & modules
    assert result.speaker_turns and all(word.speaker for word in result.word_segments)
    # nothing hidden: torchmetrics imported first, as without pyannote_import (and transformers then works as ever)
    prelude = "import torchmetrics, transformers; from transformers import Wav2Vec2ForCTC"
    stock, stock_modules = run_stage(align_python, transcript_path, tmp_path / "stock", flags, prelude)
    assert "transformers.models.auto.modeling_auto" in stock_modules
    assert result.speaker_turns == stock.speaker_turns and result.segments == stock.segments and result.speakers == stock.speakers


def test_transformers_works_after_pyannote_is_imported_without_it(align_python: Path, random_ctc_model: Path) -> None:
    """The window hides transformers from torchmetrics' checks only while pyannote.audio is imported."""
    probe = (
        "import json, sys; import stages.align_diarize.diarization.pipelines;"
        "hidden = 'transformers' not in sys.modules;"
        "from lightning_utilities.core.imports import RequirementCache;"
        "from transformers import Wav2Vec2ForCTC;"
        f"model = Wav2Vec2ForCTC.from_pretrained({str(random_ctc_model)!r});"
        "print(json.dumps({'hidden': hidden, 'available_now': bool(RequirementCache('transformers>=4.4.0')),"
        "'model': type(model).__name__}))"
    )
    done = subprocess.run([str(align_python), "-P", "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"hidden": True, "available_now": True, "model": "Wav2Vec2ForCTC"}
