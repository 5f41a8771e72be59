"""Word times by wav2vec2 CTC forced alignment, segment by segment, with whisperx's trellis and backtrack.

We drive whisperx's CTC primitives (`get_trellis`, `backtrack`, `merge_repeats`, in `ctc.py`) ourselves instead of
calling `whisperx.align`, because that function loses text: words without characters in the model's
dictionary ("2024", "$5", "%") get no times (WhisperX #1104), a segment it cannot align keeps no
words at all, and sentences without an aligned character vanish in its pandas groupby. Here every
word of every segment comes out, with times unless `--interpolate_method ignore` asks for none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from shared.contract import CharAlignment, Segment, Word
from stages.common.audio import SAMPLE_RATE

from .ctc import backtrack, get_trellis, merge_repeats
from .model import AlignModel

InterpolateMethod = Literal["nearest", "linear", "ignore"]
LANGUAGES_WITHOUT_SPACES = frozenset({"ja", "zh"})  # whisperx's: one "word" per character
MIN_WAVEFORM_SAMPLES = 400  # wav2vec2's convolutions need at least this many samples
MIN_GAP_PER_WORD_S = 0.05  # "nearest": a gap shorter than this per unaligned word is too small to hold them
# Each segment's audio window reaches this far past its bounds: stage 1's bounds follow its word times, which run
# ~0.1 s late (benchmarks/word_times.py), and a window that cuts a word's first sounds off moves the word.
ALIGN_MARGIN_S = 0.25


@dataclass(frozen=True)
class AlignedSegments:
    segments: list[Segment]
    interpolated_words: int
    unaligned_segments: int


@dataclass
class _Word:
    text: str
    tokens: list[tuple[int, int]]  # (char index in text, CTC label) of the characters the model knows
    start: float | None = None
    end: float | None = None
    score: float | None = None
    char_times: dict[int, tuple[float, float, float]] | None = None  # char index -> (start, end, score)


def align_segments(
    segments: list[Segment],
    audio: np.ndarray,
    model: AlignModel,
    interpolate_method: InterpolateMethod = "nearest",
    return_char_alignments: bool = False,
    on_progress: Callable[[float], None] | None = None,
    margin: float = ALIGN_MARGIN_S,
) -> AlignedSegments:
    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    aligned, interpolated, unaligned = [], 0, 0
    for segment in segments:
        words = _split_words(segment.text, model)
        if words and not _align_words(words, alignment_window(segment, margin, len(audio) / SAMPLE_RATE), waveform, model):
            unaligned += 1
            _spread(words, segment.start, segment.end)
        interpolated += _fill_unaligned(words, segment.start, segment.end, interpolate_method)
        aligned.append(_to_segment(segment, words, return_char_alignments))
        if on_progress is not None:
            on_progress(segment.end)
    return AlignedSegments(aligned, interpolated, unaligned)


def _split_words(text: str, model: AlignModel) -> list[_Word]:
    pieces = list(text.replace(" ", "")) if model.language in LANGUAGES_WITHOUT_SPACES else text.split()
    return [_Word(piece, _known_chars(piece, model.dictionary)) for piece in pieces]


def _known_chars(word: str, dictionary: dict[str, int]) -> list[tuple[int, int]]:
    return [(index, dictionary[char.lower()]) for index, char in enumerate(word) if char.lower() in dictionary]


def alignment_window(segment: Segment, margin: float, duration: float) -> tuple[float, float]:
    """The span of audio a segment is aligned in: its bounds widened by `margin`, inside the file."""
    return max(0.0, segment.start - margin), min(duration, segment.end + margin)


def _align_words(words: list[_Word], window: tuple[float, float], waveform: torch.Tensor, model: AlignModel) -> bool:
    """Set the times of words with known characters; False if the segment cannot be aligned at all."""
    tokens, owners = _transcript_tokens(words, model)
    window_start, window_end = window
    first, last = int(window_start * SAMPLE_RATE), int(window_end * SAMPLE_RATE)
    if not tokens or first >= waveform.shape[0]:
        return False
    emission = _emission(waveform[first:last], model)
    if emission.shape[0] < len(tokens):  # fewer frames than characters: CTC cannot place them
        return False
    path = backtrack(get_trellis(emission, tokens, model.blank_id), emission, tokens, model.blank_id)
    if path is None:
        return False
    seconds_per_frame = (window_end - window_start) / emission.shape[0]  # as whisperx.align
    for char, owner in zip(merge_repeats(path, [str(t) for t in tokens]), owners, strict=True):
        if owner is None:  # the word separator
            continue
        word_index, char_index = owner
        start = window_start + char.start * seconds_per_frame
        end = min(window_start + char.end * seconds_per_frame, window_end)
        _add_char(words[word_index], char_index, start, end, char.score)
    return True


def _transcript_tokens(words: list[_Word], model: AlignModel) -> tuple[list[int], list[tuple[int, int] | None]]:
    """CTC labels for the segment and, for each, its (word, char) or None for the '|' word separator."""
    separator = model.dictionary.get("|") if model.language not in LANGUAGES_WITHOUT_SPACES else None
    tokens: list[int] = []
    owners: list[tuple[int, int] | None] = []
    for word_index, word in enumerate(words):
        if not word.tokens:
            continue
        if tokens and separator is not None:
            tokens.append(separator)
            owners.append(None)
        for char_index, label in word.tokens:
            tokens.append(label)
            owners.append((word_index, char_index))
    return tokens, owners


def _emission(piece: torch.Tensor, model: AlignModel) -> torch.Tensor:
    """Log-probabilities (frames, labels) for one segment's audio."""
    lengths = None
    if piece.shape[0] < MIN_WAVEFORM_SAMPLES:
        lengths = torch.as_tensor([piece.shape[0]], device=model.device)
        piece = torch.nn.functional.pad(piece, (0, MIN_WAVEFORM_SAMPLES - piece.shape[0]))
    batch = piece.unsqueeze(0).to(model.device)
    with torch.inference_mode():
        if model.kind == "torchaudio":
            logits, _ = model.network(batch, lengths=lengths)
        else:
            logits = model.network(batch).logits
        return torch.log_softmax(logits, dim=-1)[0].float().cpu()


def _add_char(word: _Word, char_index: int, start: float, end: float, score: float) -> None:
    word.char_times = {**(word.char_times or {}), char_index: (start, end, score)}
    word.start = start if word.start is None else min(word.start, start)
    word.end = end if word.end is None else max(word.end, end)
    word.score = sum(times[2] for times in word.char_times.values()) / len(word.char_times)


def _spread(words: list[_Word], start: float, end: float) -> None:
    """A segment the model cannot align: its words share its span by length, without scores."""
    for word in words:
        word.start = word.end = word.score = word.char_times = None
    _share(words, start, end)


def _fill_unaligned(words: list[_Word], start: float, end: float, method: InterpolateMethod) -> int:
    """Give times to runs of words the model could not place; returns how many words got interpolated times."""
    if method == "ignore":
        return 0
    filled = 0
    index = 0
    while index < len(words):
        if words[index].start is not None:
            index += 1
            continue
        run_end = index
        while run_end < len(words) and words[run_end].start is None:
            run_end += 1
        run = words[index:run_end]
        gap_start = words[index - 1].end if index > 0 else start
        gap_end = words[run_end].start if run_end < len(words) else end
        assert gap_start is not None and gap_end is not None
        if method == "nearest" and gap_end - gap_start < MIN_GAP_PER_WORD_S * len(run):
            neighbour = words[index - 1] if index > 0 else words[run_end] if run_end < len(words) else None
            if neighbour is not None:
                gap_start, gap_end = neighbour.start, neighbour.end  # no room: share the nearest word's span
        _share(run, gap_start, max(gap_end, gap_start))  # type: ignore[arg-type]
        filled += len(run)
        index = run_end
    return filled


def _share(words: list[_Word], start: float, end: float) -> None:
    """Split [start, end] among words in proportion to their lengths."""
    total = sum(max(len(word.text), 1) for word in words)
    cursor = start
    for word in words:
        width = (end - start) * max(len(word.text), 1) / total
        word.start, word.end = cursor, cursor + width
        cursor += width


def _to_segment(segment: Segment, words: list[_Word], with_chars: bool) -> Segment:
    contract_words = [
        Word(
            word=word.text,
            start=None if word.start is None else round(word.start, 3),
            end=None if word.end is None else round(word.end, 3),
            score=None if word.score is None else _unit(word.score),
        )
        for word in words
    ]
    timed = [word for word in contract_words if word.start is not None and word.end is not None]
    start = min((word.start for word in timed), default=segment.start)  # type: ignore[type-var]
    end = max((word.end for word in timed), default=segment.end)  # type: ignore[type-var]
    chars = _char_alignments(words) if with_chars else None
    return segment.model_copy(update={"start": start, "end": max(end, start), "words": contract_words, "chars": chars})


def _char_alignments(words: list[_Word]) -> list[CharAlignment]:
    """Every character of the words (a space between them), with times where the model placed it."""
    chars: list[CharAlignment] = []
    for word in words:
        if chars:
            chars.append(CharAlignment(char=" "))
        for index, char in enumerate(word.text):
            times = (word.char_times or {}).get(index)
            if times is None:
                chars.append(CharAlignment(char=char))
            else:
                chars.append(CharAlignment(char=char, start=round(times[0], 3), end=round(times[1], 3), score=_unit(times[2])))
    return chars


def _unit(score: float) -> float:
    return round(min(max(score, 0.0), 1.0), 3)
