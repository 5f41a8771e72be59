"""mlx_whisper's tokenizer, encoding transcripts and prompts as the ordinary text they are.

tiktoken's `encode()` refuses special tokens in its input by default, and to look for them it compiles a regex
over all ~1,600 of Whisper's special tokens on first use: 0.25-0.45 s of every stage-1 process here (before any
audio is decoded), spent on `non_speech_tokens` and the first prompt. Our inputs are text, never token markup.
"""

from __future__ import annotations

from typing import Any


class _OrdinaryEncoding:
    """A tiktoken Encoding whose encode() treats "<|...|>" in the input as text (what encode_ordinary does)."""

    def __init__(self, encoding: Any) -> None:
        self._encoding = encoding

    def encode(self, text: str, **kwargs: Any) -> list[int]:
        kwargs.setdefault("disallowed_special", ())
        return self._encoding.encode(text, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoding, name)


def get_tokenizer(multilingual: bool, **kwargs: Any) -> Any:
    """mlx_whisper's get_tokenizer (cached there: the same instance per arguments), its encoding wrapped once."""
    from mlx_whisper.tokenizer import get_tokenizer as whisper_tokenizer

    tokenizer = whisper_tokenizer(multilingual, **kwargs)
    if not isinstance(tokenizer.encoding, _OrdinaryEncoding):
        tokenizer.encoding = _OrdinaryEncoding(tokenizer.encoding)
    return tokenizer
