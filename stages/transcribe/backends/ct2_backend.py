"""The CTranslate2 backend: faster-whisper's feature extractor and ctranslate2's Whisper model behind `Backend`.

Only the model calls live here (encode, language detection, generate, word alignment); prompts, fallback and
filters stay in the pipeline. Everything CT2 needs to be told exactly is derived in one place, with the
CTranslate2 source it follows named where the semantics are not obvious.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper.feature_extractor import FeatureExtractor

from .base import Encoded, Generated, GenerateOptions, WordTiming

N_FRAMES = 3000  # mel frames in a 30 s window
HOP_LENGTH = 160  # samples per mel frame
TOKENS_PER_SECOND = 50  # encoder positions per second (the second conv has stride 2)
N_TEXT_CTX = 448  # decoder positions in every Whisper model
# "default" on CPU: float32, the tokens of faster-whisper's float32 and of our MLX backend (same weights, fp32).
# int8 (CT2 runs it as int8_float32 on CPU) was only 1.2-1.3x faster on 2 cores with tiny.en and changed 6 of 8
# windows' tokens (WER on the sample 0.198 -> 0.210): opt in with --compute_type int8. On CUDA "default" is CT2's
# own: the stored type (float16 for faster-whisper models).
CPU_DEFAULT_COMPUTE_TYPE = "float32"


class CTranslate2Backend:
    name = "ctranslate2"

    def __init__(self, model_dir: Path, compute_type: str = "default", threads: int = 0) -> None:
        cuda = ctranslate2.get_cuda_device_count() > 0
        if compute_type == "default" and not cuda:
            compute_type = CPU_DEFAULT_COMPUTE_TYPE
        if compute_type == "float32" and not cuda:
            # CT2 picks MKL on Intel CPUs and oneDNN elsewhere; oneDNN's float32 GEMM was 15-20x slower on an AMD EPYC
            # (benchmarks/stage1_peers.py). CT2 reads the variable at its first GEMM, so setting it here still counts.
            os.environ.setdefault("CT2_USE_MKL", "1")
        self.model = ctranslate2.models.Whisper(
            str(model_dir), device="cuda" if cuda else "cpu", compute_type=compute_type, intra_threads=_threads(threads)
        )
        self.device = "gpu" if cuda else "cpu"
        self.compute_type: str = self.model.compute_type  # what CT2 resolved "default"/"auto" to
        self.is_multilingual: bool = self.model.is_multilingual
        self.num_languages: int = self.model.num_languages
        self.n_mels = _n_mels(model_dir, self.model)
        self.features = FeatureExtractor(feature_size=self.n_mels)
        vocabulary = _vocabulary(model_dir)
        self.eot, self.sot = vocabulary.index("<|endoftext|>"), vocabulary.index("<|startoftranscript|>")
        self.no_timestamps = vocabulary.index("<|notimestamps|>")

    def encode(self, windows: list[np.ndarray]) -> Encoded:
        # As faster-whisper's BatchedInferencePipeline: log-mel per window (last frame dropped), zero-padded to 30 s.
        mels = [_pad_or_trim(self.features(np.asarray(w, dtype=np.float32))[..., :-1]) for w in windows]
        batch = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels)))
        num_frames = [min(len(w) // HOP_LENGTH, N_FRAMES) for w in windows]
        return Encoded(features=self.model.encode(batch, to_cpu=False), num_frames=num_frames)

    def select(self, encoded: Encoded, rows: list[int]) -> Encoded:
        return Encoded(features=_take(encoded.features, rows, len(encoded.num_frames)), num_frames=[encoded.num_frames[r] for r in rows])

    def detect_language(self, encoded: Encoded) -> list[dict[str, float]]:
        if not self.is_multilingual:  # CT2 refuses English-only models; openai-whisper answers "en" for them
            return [{"en": 1.0} for _ in encoded.num_frames]
        results = self.model.detect_language(encoded.features)
        return [{token.strip("<|>"): prob for token, prob in result} for result in results]

    def generate(self, encoded: Encoded, prompts: list[list[int]], options: GenerateOptions) -> list[Generated]:
        out: list[Generated | None] = [None] * len(prompts)
        # CT2 decodes a batch together only when <|startoftranscript|> and the task tokens line up in every prompt.
        for key, indices in _groups([self._prompt_shape(p) for p in prompts]).items():
            features = _take(encoded.features, indices, len(prompts))
            group = [prompts[i] for i in indices]
            results = self.model.generate(features, group, **self._generate_kwargs(options, key[1] - 1, options.max_new_tokens))
            for i, generated in zip(indices, self._to_generated(results, features, group, options), strict=True):
                out[i] = generated
        return [g for g in out if g is not None]

    def align_words(
        self, encoded: Encoded, prompts: list[list[int]], text_tokens: list[list[int]], tokenizer: Any
    ) -> list[list[WordTiming]]:
        out: list[list[WordTiming]] = [[] for _ in prompts]
        # CT2 takes one start sequence per call (sot lang task: it appends <|notimestamps|> itself), so group by it.
        shapes = [tuple(_sot_sequence(p, self.sot, self.no_timestamps)) if text_tokens[i] else None for i, p in enumerate(prompts)]
        for start, indices in _groups(shapes).items():
            if start is None:
                continue  # nothing to align
            features = _take(encoded.features, indices, len(prompts))
            tokens = [text_tokens[i] for i in indices]
            frames = [max(encoded.num_frames[i], 2) for i in indices]  # at least one encoder position for DTW
            results = self.model.align(features, list(start), tokens, frames, median_filter_width=7)
            for i, result, window_tokens in zip(indices, results, tokens, strict=True):
                out[i] = _word_timings(result, window_tokens, tokenizer)
        return out

    def _prompt_shape(self, prompt: list[int]) -> tuple[int, int]:
        """(index of <|startoftranscript|>, length up to the last task token), as CT2's check_prompts."""
        sot_index = prompt.index(self.sot)
        end = sot_index
        while end < len(prompt) and self.sot <= prompt[end] <= self.no_timestamps:
            end += 1
        return sot_index, end

    def _generate_kwargs(self, options: GenerateOptions, start_step: int, max_new_tokens: int) -> dict[str, Any]:
        # CT2 (models/whisper.cc) decodes min(max_length // 2, max_length - start_step) steps after the prompt, start_step =
        # prompt tokens before the last task token. Choose max_length so that this is exactly openai-whisper's bound:
        # sample_len new tokens, and no decoder position past n_text_ctx.
        steps = min(max_new_tokens, N_TEXT_CTX - start_step)
        if steps < 1:
            raise ValueError(f"the prompt ({start_step + 1} tokens) leaves no room in the {N_TEXT_CTX}-token text context")
        kwargs: dict[str, Any] = {
            "length_penalty": 1.0 if options.length_penalty is None else options.length_penalty,
            "max_length": max(2 * steps, start_step + steps),
            "suppress_blank": options.suppress_blank,
            "suppress_tokens": list(options.suppress_tokens),
            "max_initial_timestamp_index": round(options.max_initial_timestamp / 0.02),
            "return_scores": True,
            "return_no_speech_prob": True,
        }
        if options.temperature > 0:  # as faster-whisper: plain sampling from the whole vocabulary
            kwargs.update(beam_size=1, num_hypotheses=1, sampling_topk=0, sampling_temperature=options.temperature)
        else:
            kwargs.update(beam_size=options.beam_size, patience=options.patience)
        return kwargs

    def _to_generated(
        self, results: Sequence[Any], features: ctranslate2.StorageView, prompts: list[list[int]], options: GenerateOptions
    ) -> list[Generated]:
        penalty = 1.0 if options.length_penalty is None else options.length_penalty
        out = []
        for i, result in enumerate(results):
            tokens = list(result.sequences_ids[0])  # CT2 never returns end-of-text (include_eos_in_hypotheses = false)
            # CT2's score is sum_logprob (end-of-text included) / len(tokens) ** length_penalty: undo it, as faster-whisper.
            if tokens:
                sum_logprob = result.scores[0] * len(tokens) ** penalty
            else:  # the score is x / 0: ask for the end-of-text log-probability itself
                sum_logprob = self._first_eot_logprob(_take(features, [i], len(results)), prompts[i], options)
            out.append(Generated(tokens, float(sum_logprob), float(sum_logprob) / (len(tokens) + 1), float(result.no_speech_prob)))
        return out

    def _first_eot_logprob(self, features: ctranslate2.StorageView, prompt: list[int], options: GenerateOptions) -> float:
        """log P(end-of-text) at the first step, after suppression (only reached when suppress_blank is off)."""
        kwargs = self._generate_kwargs(options, self._prompt_shape(prompt)[1] - 1, 1) | {"beam_size": 1, "return_logits_vocab": True}
        kwargs.pop("patience", None)
        (result,) = self.model.generate(features, [prompt], **kwargs)
        logits = np.asarray(result.logits[0][0], dtype=np.float64)
        top = logits.max()
        return float(logits[self.eot] - top - np.log(np.exp(logits - top).sum()))


def _threads(threads: int) -> int:
    return threads or int(os.environ.get("OMP_NUM_THREADS") or 0) or os.cpu_count() or 1


def _n_mels(model_dir: Path, model: ctranslate2.models.Whisper) -> int:
    """faster-whisper reads feature_size from preprocessor_config.json; without one, CT2's own n_mels (encoder shape)."""
    config = Path(model_dir) / "preprocessor_config.json"
    if config.is_file():
        size = json.loads(config.read_text(encoding="utf-8")).get("feature_size")
        if size:
            return int(size)
    return int(getattr(model, "n_mels", 0)) or (128 if model.num_languages >= 100 else 80)


def _vocabulary(model_dir: Path) -> list[str]:
    """CT2 Whisper models ship vocabulary.json (a list) or vocabulary.txt (one token a line)."""
    json_file = Path(model_dir) / "vocabulary.json"
    if json_file.is_file():
        return list(json.loads(json_file.read_text(encoding="utf-8")))
    return (Path(model_dir) / "vocabulary.txt").read_text(encoding="utf-8").split("\n")


def _groups(keys: Sequence[Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    return groups


def _take(features: ctranslate2.StorageView, indices: list[int], batch_size: int) -> ctranslate2.StorageView:
    """Rows of an encoder output (usually all of them: then no copy)."""
    if indices == list(range(batch_size)):
        return features
    rows = np.asarray(features.to_device(ctranslate2.Device.cpu))[indices]
    return ctranslate2.StorageView.from_array(np.ascontiguousarray(rows))


def _pad_or_trim(mel: np.ndarray) -> np.ndarray:
    if mel.shape[-1] >= N_FRAMES:
        return mel[:, :N_FRAMES]
    return np.pad(mel, ((0, 0), (0, N_FRAMES - mel.shape[-1])))


def _sot_sequence(prompt: list[int], sot: int, no_timestamps: int) -> list[int]:
    """<|startoftranscript|> lang task, without previous text or <|notimestamps|>, as openai-whisper's find_alignment."""
    start = prompt[prompt.index(sot) :]
    return start[:-1] if start and start[-1] == no_timestamps else start


def _word_timings(result: Any, text_tokens: list[int], tokenizer: Any) -> list[WordTiming]:
    """faster-whisper's find_alignment on one CT2 alignment: DTW path -> word start/end, mean token probability."""
    words, word_tokens = tokenizer.split_to_word_tokens(text_tokens + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    text_indices = np.array([pair[0] for pair in result.alignments])
    time_indices = np.array([pair[1] for pair in result.alignments])
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    probs = result.text_token_probs
    return [
        WordTiming(word, list(tokens), float(jump_times[i]), float(jump_times[j]), float(np.mean(probs[i:j])))
        for word, tokens, i, j in zip(words, word_tokens, boundaries[:-1], boundaries[1:], strict=False)
    ]
