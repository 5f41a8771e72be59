"""Our alignment loader and CTC path against whisperx 3.3.1's own (run inside envs/align_diarize); prints JSON.

usage: python align_checks.py TORCHAUDIO_MODEL_DIR HF_MODEL_DIR
- ctc: get_trellis / backtrack / merge_repeats of stages.align_diarize.alignment.ctc and of whisperx.alignment on
  random emissions (several sizes and blank labels; fewer frames than tokens: no path): equal tensors, points and spans
- defaults: the per-language default tables we read from whisperx's source equal its module's
- torchaudio / huggingface: our load_align_model and whisperx's give the same dictionary, kind and logits
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from stages.align_diarize.alignment import ctc  # noqa: E402
from stages.align_diarize.alignment.model import load_align_model, whisperx_alignment, whisperx_default_models  # noqa: E402


def ctc_equal(whisperx) -> dict[str, int]:
    generator = torch.Generator().manual_seed(0)
    cases = paths = failed = 0
    for frames, labels, num_tokens, blank in [
        (50, 32, 10, 0),
        (120, 32, 40, 0),
        (30, 29, 25, 0),
        (80, 40, 12, 3),
        (12, 32, 12, 0),
        (6, 32, 8, 0),
    ]:
        for _ in range(20):
            emission = torch.log_softmax(torch.randn(frames, labels, generator=generator) * 3, dim=-1)
            tokens = torch.randint(1, labels, (num_tokens,), generator=generator).tolist()
            ours, theirs = ctc.get_trellis(emission, tokens, blank), whisperx.get_trellis(emission, tokens, blank)
            assert torch.equal(ours, theirs), "trellis"
            path, stock_path = ctc.backtrack(ours, emission, tokens, blank), whisperx.backtrack(theirs, emission, tokens, blank)
            assert (path is None) == (stock_path is None), "backtrack failure"
            cases += 1
            if path is None:
                failed += 1
                continue
            assert [(p.token_index, p.time_index, p.score) for p in path] == [(p.token_index, p.time_index, p.score) for p in stock_path]
            labels_text = [str(t) for t in tokens]
            spans, stock_spans = ctc.merge_repeats(path, labels_text), whisperx.merge_repeats(stock_path, labels_text)
            assert [(s.label, s.start, s.end, s.score) for s in spans] == [(s.label, s.start, s.end, s.score) for s in stock_spans]
            paths += 1
    return {"cases": cases, "paths": paths, "failed": failed}


def same_model(whisperx, language: str, name: str | None, model_dir: str | None) -> bool:
    ours = load_align_model(language, name, model_dir)
    with contextlib.redirect_stdout(sys.stderr):
        network, metadata = whisperx.load_align_model(language, "cpu", model_name=name, model_dir=model_dir)
    network.eval()
    audio = torch.randn(1, 16000, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        if ours.kind == "torchaudio":
            mine, stock = ours.network(audio)[0], network(audio)[0]
        else:
            mine, stock = ours.network(audio).logits, network(audio).logits
    return ours.dictionary == metadata["dictionary"] and ours.kind == metadata["type"] and torch.equal(mine, stock)


def main() -> None:
    torchaudio_dir, hf_dir = sys.argv[1], sys.argv[2]
    ours_defaults = whisperx_default_models()  # read from the source, before whisperx.alignment is imported
    whisperx = whisperx_alignment()
    stock_defaults = {
        "DEFAULT_ALIGN_MODELS_TORCH": whisperx.DEFAULT_ALIGN_MODELS_TORCH,
        "DEFAULT_ALIGN_MODELS_HF": whisperx.DEFAULT_ALIGN_MODELS_HF,
    }
    report = {
        "ctc": ctc_equal(whisperx),
        "defaults_equal": ours_defaults == stock_defaults and len(ours_defaults["DEFAULT_ALIGN_MODELS_HF"]) > 10,
        "torchaudio_equal": same_model(whisperx, "en", None, torchaudio_dir),
        "huggingface_equal": same_model(whisperx, "en", hf_dir, None),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
