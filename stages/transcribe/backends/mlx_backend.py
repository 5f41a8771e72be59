"""The MLX decoding backend: batched encoder, batched greedy/sampling/beam decoding with a KV cache,
per-row early stop, language detection and cross-attention word timings. Weights are mlx_whisper's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from . import mlx_forward as fwd
from .base import Encoded, Generated, GenerateOptions, WordTiming
from .logit_rules import RowHistory, Vocabulary, filtered_logprobs, record

N_SAMPLES = 480_000  # 30 s at 16 kHz
N_FRAMES = 3000
MEDIAN_FILTER_WIDTH = 7


def _left_pad(prompts: list[list[int]], filler: int) -> tuple[np.ndarray, np.ndarray]:
    longest = max(len(p) for p in prompts)
    padding = np.array([longest - len(p) for p in prompts], dtype=np.int64)
    return np.array([[filler] * (longest - len(p)) + p for p in prompts], dtype=np.int32), padding


@dataclass
class _Beam:
    tokens: list[int]
    logprob: float


class MlxBackend:
    name = "mlx"

    def __init__(self, model: Any, compute_type: str, tokenizer: Any) -> None:
        self.model = model
        self.compute_type = compute_type
        self.dtype = getattr(mx, compute_type)
        self.device = "cpu" if fwd.on_cpu() else "gpu"
        self.is_multilingual = bool(model.is_multilingual)
        self.num_languages = int(model.num_languages)
        self.tokenizer = tokenizer
        n_vocab = model.dims.n_vocab
        self.vocab = Vocabulary(
            size=n_vocab,
            eot=tokenizer.eot,
            timestamp_begin=tokenizer.timestamp_begin,
            no_timestamps=tokenizer.no_timestamps,
            blank=(*tokenizer.encode(" "), tokenizer.eot),
        )
        # logit rules run where the logits are: numpy on the CPU device (see logit_rules), MLX on a GPU
        self.xp = np if self.device == "cpu" else mx
        # On a GPU, greedy/sampling queue step t+1 before reading step t's tokens, so that the host builds the next
        # graph while the device computes (a row that ended is dropped one step late). On the CPU both share the cores.
        self.step_ahead = self.device != "cpu"

    # --- encoder -------------------------------------------------------------------------------------
    def encode(self, windows: list[np.ndarray]) -> Encoded:
        from mlx_whisper.audio import log_mel_spectrogram

        n_mels = self.model.dims.n_mels
        mels = []
        for samples in windows:
            # the window's own log-mel, zero-padded to 30 s (as faster-whisper's batched pipeline; cheaper than
            # padding the audio, and on the sample's short chunks it decoded with higher log-probability)
            mel = log_mel_spectrogram(samples[:N_SAMPLES], n_mels=n_mels)[:N_FRAMES]
            mels.append(mx.pad(mel, [(0, N_FRAMES - mel.shape[0]), (0, 0)]))
        mel = mx.stack(mels).astype(self.dtype)
        features = fwd.encode(self.model.encoder, mel)
        mx.eval(features)
        return Encoded(features=features, num_frames=[min(len(w) // 160, N_FRAMES) for w in windows])

    def select(self, encoded: Encoded, rows: list[int]) -> Encoded:
        return Encoded(features=encoded.features[mx.array(rows)], num_frames=[encoded.num_frames[r] for r in rows])

    # --- language --------------------------------------------------------------------------------------
    def detect_language(self, encoded: Encoded) -> list[dict[str, float]]:
        from mlx_whisper.tokenizer import LANGUAGES

        tokenizer = self.tokenizer
        rows = encoded.features.shape[0]
        state = fwd.new_state(self.model.decoder, encoded.features, np.zeros(rows, np.int64))
        sot = self._tokens(np.full((rows, 1), tokenizer.sot, np.int32))
        logits = np.asarray(fwd.logits_of(self.model.decoder, fwd.decode_hidden(self.model.decoder, sot, state)[:, -1]))
        codes = list(LANGUAGES)[: self.num_languages]
        ids = [tokenizer.to_language_token(code) for code in codes]
        chosen = logits[:, ids]
        chosen = np.exp(chosen - chosen.max(axis=1, keepdims=True))
        chosen /= chosen.sum(axis=1, keepdims=True)
        return [dict(zip(codes, map(float, row), strict=True)) for row in chosen]

    # --- decoding --------------------------------------------------------------------------------------
    def _static_mask(self, suppress: tuple[int, ...]) -> Any:
        mask = np.zeros(self.vocab.size, np.float32)
        mask[[t for t in suppress if t < self.vocab.size]] = -np.inf
        return self.xp.array(mask)

    def _prefill(self, encoded: Encoded, prompts: list[list[int]], repeat: int) -> tuple[fwd.DecoderState, Any, np.ndarray]:
        """Run the prompts; returns the state, the last position's logits and each row's no-speech probability."""
        decoder = self.model.decoder
        tokens, padding = _left_pad(prompts, self.tokenizer.eot)
        features = encoded.features
        if repeat > 1:  # beams: each window's prompt `repeat` times; its audio stays once (DecoderState.group)
            tokens, padding = np.repeat(tokens, repeat, axis=0), np.repeat(padding, repeat)
        state = fwd.new_state(decoder, features, padding, group=repeat)
        hidden = fwd.decode_hidden(decoder, self._tokens(tokens), state)
        rows = np.arange(len(tokens))
        sot_index = np.array([row.index(self.tokenizer.sot) for row in tokens.tolist()])
        index = (rows, sot_index) if isinstance(hidden, np.ndarray) else (mx.array(rows), mx.array(sot_index))
        at_sot = fwd.logits_of(decoder, hidden[index])
        logits = fwd.logits_of(decoder, hidden[:, -1])
        no_speech = np.zeros(len(rows))
        if self.tokenizer.no_speech is not None:
            no_speech = fwd.softmax_numpy(at_sot)[:, self.tokenizer.no_speech].astype(np.float64)
        return state, logits, no_speech

    def _step(self, state: fwd.DecoderState, tokens: Any) -> Any:
        """One token per row (a list, numpy or MLX array) -> the next logits (lazy)."""
        decoder = self.model.decoder
        hidden = fwd.decode_hidden(decoder, self._tokens(tokens)[:, None], state)
        return fwd.logits_of(decoder, hidden[:, -1])

    def _tokens(self, tokens: Any) -> Any:
        """Token ids as the decoder takes them: numpy on the CPU device (cpu_decoder), MLX elsewhere."""
        if isinstance(tokens, mx.array):
            return tokens.astype(mx.int32) if self.xp is mx else np.asarray(tokens, np.int32)
        return np.asarray(tokens, np.int32) if self.xp is np else mx.array(np.asarray(tokens, np.int32))

    def _logprobs(self, logits: Any, histories: list[RowHistory], options: GenerateOptions, static_mask: Any) -> Any:
        xp = self.xp
        if xp is np:
            logits = np.asarray(logits)  # numpy already on the CPU device (fwd.logits_of)
        return filtered_logprobs(
            xp,
            logits,
            histories,
            self.vocab,
            static_mask,
            timestamps=not options.without_timestamps,
            max_initial_index=None if options.without_timestamps else round(options.max_initial_timestamp / 0.02),
        )

    def generate(self, encoded: Encoded, prompts: list[list[int]], options: GenerateOptions) -> list[Generated]:
        if options.beam_size > 1 and options.temperature == 0:
            return self._beam_search(encoded, prompts, options)
        return self._sample(encoded, prompts, options)

    def _token_budget(self, prompts: list[list[int]], options: GenerateOptions) -> int:
        return min(options.max_new_tokens, self.model.dims.n_text_ctx - max(len(p) for p in prompts))

    def _sample(self, encoded: Encoded, prompts: list[list[int]], options: GenerateOptions) -> list[Generated]:
        """Greedy (temperature 0) or sampling; rows that reach end-of-text leave the batch."""
        xp, eot = self.xp, self.vocab.eot
        state, logits, no_speech = self._prefill(encoded, prompts, 1)
        static_mask = self._static_mask(options.suppress_tokens)
        histories = [RowHistory() for _ in prompts]
        sum_logprob = np.zeros(len(prompts))
        active = np.arange(len(prompts))  # original row of each batch row
        budget = self._token_budget(prompts, options)
        for step in range(budget):
            logprobs = self._logprobs(logits, [histories[i] for i in active], options, static_mask)
            scores = logprobs if options.temperature == 0 else logprobs / options.temperature + _gumbel(xp, logprobs.shape)
            chosen = xp.argmax(scores, axis=-1)
            picked = xp.take_along_axis(logprobs, chosen[:, None], axis=-1)[:, 0]
            queued = None
            if self.step_ahead and step + 1 < budget:
                queued = self._step(state, chosen)
                mx.async_eval(queued, *((chosen, picked) if xp is mx else ()))
            chosen, picked = np.asarray(chosen).astype(np.int64), np.asarray(picked).astype(np.float64)
            sum_logprob[active] += picked
            record([histories[i] for i in active], chosen.tolist(), self.vocab)
            alive = chosen != eot
            if not alive.any():
                break
            if not alive.all():
                keep = np.flatnonzero(alive)
                state, active, chosen = state.select(keep), active[alive], chosen[alive]
                queued = None if queued is None else queued[mx.array(keep.astype(np.int32))]
            logits = queued if queued is not None else self._step(state, chosen)
        return [self._result(h.sampled, s, p) for h, s, p in zip(histories, sum_logprob, no_speech, strict=True)]

    def _result(self, sampled: list[int], sum_logprob: float, no_speech: float) -> Generated:
        tokens = sampled[:-1] if sampled and sampled[-1] == self.vocab.eot else sampled
        return Generated(tokens=tokens, sum_logprob=float(sum_logprob), avg_logprob=float(sum_logprob) / (len(tokens) + 1),
                         no_speech_prob=float(no_speech))  # fmt: skip

    def _beam_search(self, encoded: Encoded, prompts: list[list[int]], options: GenerateOptions) -> list[Generated]:
        """openai-whisper's beam search: beam_size live beams per window, finished ones ranked by length-penalised score."""
        beams_n, eot = options.beam_size, self.vocab.eot
        state, logits, no_speech = self._prefill(encoded, prompts, beams_n)
        static_mask = self._static_mask(options.suppress_tokens)
        windows = len(prompts)
        live = [[_Beam([], 0.0)] + [_Beam([], -np.inf) for _ in range(beams_n - 1)] for _ in range(windows)]
        finished: list[list[_Beam]] = [[] for _ in range(windows)]
        active = list(range(windows))  # windows still searching; their beams fill the batch in order
        max_finished = round(beams_n * options.patience)
        for _ in range(self._token_budget(prompts, options)):
            histories = [_history(beam.tokens, self.vocab) for w in active for beam in live[w]]
            logprobs = np.asarray(self._logprobs(logits, histories, options, static_mask))
            top = np.argpartition(-logprobs, beams_n, axis=-1)[:, : beams_n + 1]  # the best beam_size + 1, unordered
            source_rows, next_tokens, still = [], [], []
            for slot, window in enumerate(active):
                candidates = []
                for b, beam in enumerate(live[window]):
                    row = slot * beams_n + b
                    for token in top[row]:
                        candidates.append((beam.logprob + float(logprobs[row, token]), row, [*beam.tokens, int(token)]))
                candidates.sort(key=lambda c: -c[0])
                kept = []
                for score, row, tokens in candidates:  # finished ones count only above the last kept beam
                    if tokens[-1] != eot:
                        kept.append((score, row, tokens))
                        if len(kept) == beams_n:
                            break
                    elif len(finished[window]) < max_finished:
                        finished[window].append(_Beam(tokens, score))
                if len(finished[window]) >= max_finished or len(kept) < beams_n:
                    continue
                live[window] = [_Beam(tokens, score) for score, _, tokens in kept]
                source_rows += [row for _, row, _ in kept]
                next_tokens += [tokens[-1] for _, _, tokens in kept]
                still.append(window)
            active = still
            if not active:
                break
            state = state.select(np.array(source_rows))
            logits = self._step(state, next_tokens)
        results = []
        for window in range(windows):
            pool = finished[window] or live[window]
            best = max(pool, key=lambda beam: _beam_score(beam, options.length_penalty, eot))
            results.append(self._result(best.tokens, best.logprob, no_speech[window * beams_n]))
        return results

    # --- word timings ------------------------------------------------------------------------------------
    def align_words(
        self, encoded: Encoded, prompts: list[list[int]], text_tokens: list[list[int]], tokenizer: Any
    ) -> list[list[WordTiming]]:
        from mlx_whisper.timing import dtw, median_filter

        decoder = self.model.decoder
        sequences = [[*prompt, *text, tokenizer.eot] for prompt, text in zip(prompts, text_tokens, strict=True)]
        tokens, padding = _left_pad(sequences, tokenizer.eot)
        state = fwd.new_state(decoder, encoded.features, padding)
        cross_qk: list = []
        hidden = fwd.decode_hidden(decoder, self._tokens(tokens), state, cross_qk)
        heads = np.asarray(self.model.alignment_heads).tolist()
        weights = self.xp.stack([cross_qk[layer][:, head] for layer, head in heads], axis=1)  # (rows, heads, tokens, 1500)
        results = []
        for row, (prompt, text) in enumerate(zip(prompts, text_tokens, strict=True)):
            if not text:
                results.append([])
                continue
            start, frames = int(padding[row]), encoded.num_frames[row]
            logits = fwd.logits_of(decoder, hidden[row, start + len(prompt) - 1 : start + len(prompt) - 1 + len(text)])
            probs = fwd.softmax_numpy(logits[:, : tokenizer.eot])
            text_probs = probs[np.arange(len(text)), text]
            w = fwd.softmax_numpy(weights[row, :, start:, : max(frames // 2, 1)])
            w = (w - w.mean(axis=-2, keepdims=True)) / (w.std(axis=-2, keepdims=True) + 1e-10)
            first = len(prompt) - 1  # the position that predicts the first text token
            matrix = median_filter(w, MEDIAN_FILTER_WIDTH).mean(axis=0)[first : first + len(text) + 1]
            results.append(_words(tokenizer, text, text_probs, *dtw(-matrix.astype(np.float64))))
        return results


def _words(tokenizer: Any, text: list[int], text_probs: np.ndarray, text_indices: np.ndarray, time_indices: np.ndarray) -> list[WordTiming]:
    """openai-whisper's find_alignment tail: word boundaries from the DTW path's jumps."""
    words, word_tokens = tokenizer.split_to_word_tokens(text + [tokenizer.eot])
    if len(word_tokens) <= 1:
        return []
    boundaries = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / 50.0  # 50 audio tokens per second
    return [
        WordTiming(word, tokens, float(jump_times[i]), float(jump_times[j]), float(np.mean(text_probs[i:j])))
        for word, tokens, i, j in zip(words[:-1], word_tokens[:-1], boundaries[:-1], boundaries[1:], strict=True)
    ]


def _history(tokens: list[int], vocab: Vocabulary) -> RowHistory:
    timestamps = [t for t in tokens if t >= vocab.timestamp_begin]
    return RowHistory(sampled=list(tokens), last_timestamp=timestamps[-1] if timestamps else -1)


def _beam_score(beam: _Beam, length_penalty: float | None, eot: int) -> float:
    length = len(beam.tokens) - (1 if beam.tokens and beam.tokens[-1] == eot else 0)  # without eot, as openai-whisper's ranker
    penalty = length if length_penalty is None else ((5 + length) / 6) ** length_penalty
    return beam.logprob / penalty


def _gumbel(xp: Any, shape: tuple[int, ...]) -> Any:
    """Gumbel noise: argmax(logprobs / T + noise) samples from softmax(logprobs / T)."""
    if xp is np:
        uniform = np.random.default_rng().uniform(1e-9, 1 - 1e-9, size=shape).astype(np.float32)
    else:
        uniform = mx.random.uniform(low=1e-9, high=1 - 1e-9, shape=shape)
    return -xp.log(-xp.log(uniform))
