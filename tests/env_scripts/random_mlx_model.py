"""Write a small random-init *multilingual* MLX Whisper model folder (run inside envs/transcribe).

usage: python random_mlx_model.py OUT_DIR
"""

import json
import sys
from dataclasses import asdict
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten
from mlx_whisper.whisper import ModelDimensions, Whisper

DIMS = ModelDimensions(
    n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
    n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1,
)  # fmt: skip

mx.random.seed(0)
out = Path(sys.argv[1])
out.mkdir(parents=True)
model = Whisper(DIMS, mx.float32)
(out / "config.json").write_text(json.dumps({**asdict(DIMS), "model_type": "whisper"}))
mx.save_safetensors(str(out / "weights.safetensors"), dict(tree_flatten(model.parameters())))
