"""Write a random-init checkpoint of a torchaudio wav2vec2 ASR bundle where `--model_dir` finds it (run inside
envs/align_diarize).

No bundle's weights ship on PyPI: this one has the bundle's shapes (WAV2VEC2_ASR_BASE_960H, whisperx's English default:
95M parameters) and file name, so the bundle's own `get_model(dl_kwargs={"model_dir": ...})` loads it offline.

usage: python random_torchaudio_bundle.py OUT_DIR [BUNDLE]
"""

import os
import sys
from pathlib import Path

import torch
import torchaudio
from torchaudio.models import wav2vec2_model

out = Path(sys.argv[1])
bundle = getattr(torchaudio.pipelines, sys.argv[2] if len(sys.argv) > 2 else "WAV2VEC2_ASR_BASE_960H")
params = dict(bundle._params)  # noqa: SLF001 - the bundle's architecture
removed = getattr(bundle, "_remove_aux_axis", ())  # noqa: SLF001 - the published checkpoints have these extra labels
if params.get("aux_num_out"):
    params["aux_num_out"] += len(removed)
torch.manual_seed(0)
out.mkdir(parents=True, exist_ok=True)
torch.save(wav2vec2_model(**params).state_dict(), out / os.path.basename(bundle._path))  # noqa: SLF001
print(out / os.path.basename(bundle._path))
