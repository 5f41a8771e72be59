"""What a decoding backend (MLX or CTranslate2) must do for the batched pipeline, and the types it trades in.

The pipeline owns everything that is the same for every backend: VAD chunks, prompts, the tokenizer, the
temperature fallback, the no-speech and loop filters, segments. A backend only encodes audio windows and
generates tokens for a batch of them, so both backends give the same JSON from the same chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass(frozen=True)
class GenerateOptions:
    """One decoding pass over a batch (the pipeline retries failed chunks at the next temperature)."""

    temperature: float = 0.0
    beam_size: int = 1  # 1: greedy (or sampling when temperature > 0)
    patience: float = 1.0
    length_penalty: float | None = None  # None: average log-probability by length, as openai-whisper
    max_new_tokens: int = 224  # Whisper's sample_len: half the text context
    suppress_tokens: tuple[int, ...] = ()  # token ids never emitted (already expanded from "-1" and numerals)
    suppress_blank: bool = True  # no space or end-of-text as the first token
    without_timestamps: bool = False  # True: text only; False: timestamp tokens mark segments
    max_initial_timestamp: float = 1.0  # seconds: the first timestamp may not be later than this


@dataclass
class Generated:
    """One chunk's decode: the tokens after the prompt, without the end-of-text token."""

    tokens: list[int]
    sum_logprob: float
    avg_logprob: float  # sum_logprob / (len(tokens) + 1), the end-of-text token counted, as openai-whisper
    no_speech_prob: float  # probability of <|nospeech|> at the start-of-transcript position


@dataclass
class WordTiming:
    word: str
    tokens: list[int]
    start: float  # seconds from the start of the window
    end: float
    probability: float


@dataclass
class Encoded:
    """A batch of encoded 30 s windows; `features` is backend-specific (an mx.array, a StorageView...)."""

    features: Any
    num_frames: list[int]  # mel frames of real audio in each window (the rest is padding)
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str  # "mlx" | "ctranslate2"
    device: str  # "cpu" | "gpu"
    compute_type: str
    is_multilingual: bool
    num_languages: int

    def encode(self, windows: list[np.ndarray]) -> Encoded:
        """16 kHz float32 audio, each at most 30 s: log-mel, pad to 30 s, run the encoder as one batch."""
        ...

    def select(self, encoded: Encoded, rows: list[int]) -> Encoded:
        """These windows of a batch, in this order (to retry or align a subset without encoding again)."""
        ...

    def detect_language(self, encoded: Encoded) -> list[dict[str, float]]:
        """Per window: language code -> probability (all languages the model knows)."""
        ...

    def generate(self, encoded: Encoded, prompts: list[list[int]], options: GenerateOptions) -> list[Generated]:
        """Per window: decode after its prompt ([<|startofprev|> ...] <|startoftranscript|> lang task [notimestamps])."""
        ...

    def align_words(
        self, encoded: Encoded, prompts: list[list[int]], text_tokens: list[list[int]], tokenizer: Any
    ) -> list[list[WordTiming]]:
        """Per window: word times from the cross-attention of the alignment heads (DTW), as openai-whisper.

        `prompts` end with <|startoftranscript|> lang task <|notimestamps|>; `text_tokens` hold no timestamp
        tokens; `tokenizer` is mlx_whisper's `Tokenizer` (splits tokens into words by language)."""
        ...
