"""The CTC path: whisperx 3.3.1's `get_trellis`, `backtrack` and `merge_repeats`, copied unchanged in what they compute.

Why a copy: they live in `whisperx/alignment.py`, whose module top imports transformers' wav2vec2 stack, pandas and
nltk (2-4 s per process), which aligning with a torchaudio bundle (whisperx's en/fr/de/es/it defaults) never uses.
whisperx took them from the PyTorch tutorial
https://pytorch.org/tutorials/intermediate/forced_alignment_with_torchaudio_tutorial.html (BSD); its quirks are kept
(the trellis's unusual start; `backtrack` scores a stay with label 0, not `blank_id`), so the times do not move.
tests/test_align_start.py checks every function against whisperx's own on random emissions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def get_trellis(emission: torch.Tensor, tokens: list[int], blank_id: int = 0) -> torch.Tensor:
    """(frames + 1, tokens + 1) best log-probability of having emitted the first j tokens by frame t."""
    num_frame = emission.size(0)
    num_tokens = len(tokens)
    trellis = torch.empty((num_frame + 1, num_tokens + 1))
    trellis[0, 0] = 0
    trellis[1:, 0] = torch.cumsum(emission[:, 0], 0)
    trellis[0, -num_tokens:] = -float("inf")
    trellis[-num_tokens:, 0] = float("inf")
    for t in range(num_frame):
        trellis[t + 1, 1:] = torch.maximum(
            trellis[t, 1:] + emission[t, blank_id],  # stay on the same token
            trellis[t, :-1] + emission[t, tokens],  # move to the next token
        )
    return trellis


@dataclass
class Point:
    token_index: int
    time_index: int
    score: float


def backtrack(trellis: torch.Tensor, emission: torch.Tensor, tokens: list[int], blank_id: int = 0) -> list[Point] | None:
    """The best path through the trellis as (token, frame, probability) points; None if it does not reach the start."""
    j = trellis.size(1) - 1
    t_start = torch.argmax(trellis[:, j]).item()
    path = []
    for t in range(t_start, 0, -1):  # type: ignore[arg-type]  # item() of an argmax is an int
        stayed = trellis[t - 1, j] + emission[t - 1, blank_id]
        changed = trellis[t - 1, j - 1] + emission[t - 1, tokens[j - 1]]
        prob = emission[t - 1, tokens[j - 1] if changed > stayed else 0].exp().item()
        path.append(Point(j - 1, t - 1, prob))
        if changed > stayed:
            j -= 1
            if j == 0:
                break
    else:
        return None
    return path[::-1]


@dataclass
class CharSpan:
    """whisperx's `Segment`: one token's run of frames [start, end) and its mean probability."""

    label: str
    start: int
    end: int
    score: float


def merge_repeats(path: list[Point], transcript: list[str]) -> list[CharSpan]:
    """Consecutive points of the same token as one span."""
    i1, i2 = 0, 0
    segments = []
    while i1 < len(path):
        while i2 < len(path) and path[i1].token_index == path[i2].token_index:
            i2 += 1
        score = sum(path[k].score for k in range(i1, i2)) / (i2 - i1)
        segments.append(CharSpan(transcript[path[i1].token_index], path[i1].time_index, path[i2 - 1].time_index + 1, score))
        i1 = i2
    return segments
