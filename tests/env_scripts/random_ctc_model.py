"""Write a small random-init wav2vec2 CTC model folder, loadable like an HF repo (run inside envs/align_diarize).

No CTC model ships on PyPI, so tests exercise alignment's plumbing with this one: its times are
monotonic and inside segments, not accurate.

usage: python random_ctc_model.py OUT_DIR [--base]
  --base: the size of wav2vec2-base-960h (WhisperX's English default; 95M parameters), for benchmarks
"""

import json
import sys
from pathlib import Path

import torch
from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2ForCTC, Wav2Vec2Processor

LABELS = ["<pad>", "<s>", "</s>", "<unk>", "|", *"ETAONIHSRDLUMWCFGYPBVK'XJQZ"]  # wav2vec2-base-960h's alphabet

torch.manual_seed(0)
out = Path(sys.argv[1])
out.mkdir(parents=True)
(out / "vocab.json").write_text(json.dumps({label: index for index, label in enumerate(LABELS)}))
tokenizer = Wav2Vec2CTCTokenizer(str(out / "vocab.json"), word_delimiter_token="|", do_lower_case=False)
extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False)
Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out)
if "--base" in sys.argv:
    config = Wav2Vec2Config(vocab_size=len(LABELS), pad_token_id=0)  # the defaults are wav2vec2-base's shapes
else:
    config = Wav2Vec2Config(
        vocab_size=len(LABELS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, pad_token_id=0,
    )  # fmt: skip
Wav2Vec2ForCTC(config).save_pretrained(out)
