"""Output writers: a Transcript or Result rendered as json, txt, srt, vtt, tsv or aud.

Same shapes and option names as WhisperX 3.3.x (`whisperx/utils.py`, itself openai-whisper's `utils.py`
plus speakers): `[SPEAKER_00]: ` prefixes in txt and subtitles, `[[SPEAKER_00]]` in Audacity labels,
"all" meaning json, txt, srt, vtt and tsv (aud only on request). rttm (NIST's diarization format) needs
a result with speaker turns; stage 2 writes it whenever it diarizes. Deliberate differences, all fixes:
a subtitle cue never mixes speakers (a speaker change starts a new cue), cue times come from the
cue's own words (WhisperX 3.3.1 used the segment's), words without times get interpolated ones,
lines hold no trailing spaces, the speaker prefix counts toward --max_line_width, and no
--highlight_words cue lasts zero seconds.
"""

from __future__ import annotations

import bisect
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .contract import Document, Result, Segment, Word
from .io import write_texts_atomic

FORMATS = ("json", "txt", "srt", "vtt", "tsv", "aud", "rttm")
ALL_FORMATS = ("json", "txt", "srt", "vtt", "tsv")
"""What "all" writes: WhisperX's default writers (its Audacity writer is optional, so is ours)."""

LANGUAGES_WITHOUT_SPACES = frozenset({"ja", "zh"})
"""Languages whose aligned words are joined without spaces (WhisperX's list)."""

# whisper: with both max_line_width and max_line_count, a gap of more than this between word starts ends the cue.
LONG_PAUSE_S = 3.0
# whisper's width when none is given: in effect, no line splitting.
UNLIMITED_WIDTH = 1000


@dataclass(frozen=True)
class WriterOptions:
    """WhisperX's writer options (`--max_line_width`, `--max_line_count`, `--highlight_words`)."""

    max_line_width: int | None = None
    max_line_count: int | None = None
    highlight_words: bool = False

    def __post_init__(self) -> None:
        for name in ("max_line_width", "max_line_count"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive number of characters/lines, got {value}")
        if self.max_line_count is not None and self.max_line_width is None:
            warnings.warn("max_line_count has no effect without max_line_width", stacklevel=3)

    @property
    def preserve_segments(self) -> bool:
        """whisper: cues follow segments unless both the width and the count are given."""
        return self.max_line_count is None or self.max_line_width is None


# ---------------------------------------------------------------- formats


def expand_formats(requested: str | Iterable[str]) -> list[str]:
    """Format names, "all" expanded, duplicates dropped, order kept; a string may be comma-separated."""
    names = requested.split(",") if isinstance(requested, str) else list(requested)
    formats: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if name == "all":
            expanded: Sequence[str] = ALL_FORMATS
        elif name in FORMATS:
            expanded = (name,)
        else:
            raise ValueError(f"unknown output format {raw.strip()!r}; choose from all, {', '.join(FORMATS)}")
        formats.extend(fmt for fmt in expanded if fmt not in formats)
    if not formats:
        raise ValueError(f"no output format given; choose from all, {', '.join(FORMATS)}")
    return formats


def render(document: Document, fmt: str, options: WriterOptions | None = None) -> str:
    """The whole file's text for one format (not "all")."""
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown output format {fmt!r}; choose from {', '.join(FORMATS)}")
    return renderer(document, options or WriterOptions())


def result_formats(requested: str | Iterable[str], diarized: bool) -> list[str]:
    """What stage 2 writes: the requested formats, plus rttm whenever it diarizes."""
    formats = expand_formats(requested)
    return [*formats, "rttm"] if diarized and "rttm" not in formats else formats


def write_outputs(
    document: Document,
    output_dir: str | Path,
    basename: str,
    formats: str | Iterable[str],
    options: WriterOptions | None = None,
    json_path: str | Path | None = None,
) -> list[Path]:
    """Write `<output_dir>/<basename>.<ext>` for each format (json to `json_path` if given), all or none.

    Every file is rendered and written to a temp file first; only when all are on disk are they renamed, json
    last (its presence means the stage finished). A full disk or unwritable folder leaves no output at all.
    """
    if not basename or "/" in basename or "\\" in basename or basename in (".", ".."):
        raise ValueError(f"basename must be a plain file name, got {basename!r}")
    output_dir = Path(output_dir)
    options = options or WriterOptions()
    selected = sorted(expand_formats(formats), key=lambda fmt: fmt == "json")  # json last, others in order
    files = [
        (Path(json_path) if fmt == "json" and json_path else output_dir / f"{basename}.{fmt}", render(document, fmt, options))
        for fmt in selected
    ]
    return write_texts_atomic(files)


# ---------------------------------------------------------------- timestamps


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """whisper's format_timestamp: `[hh:]mm:ss.mmm`, hours when asked for or non-zero."""
    if seconds < 0:
        raise ValueError(f"non-negative timestamp expected, got {seconds}")
    hours, rest = divmod(round(seconds * 1000.0), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole_seconds, milliseconds = divmod(rest, 1_000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{whole_seconds:02d}{decimal_marker}{milliseconds:03d}"


def _srt_timestamp(seconds: float) -> str:
    return format_timestamp(seconds, always_include_hours=True, decimal_marker=",")


def _vtt_timestamp(seconds: float) -> str:
    return format_timestamp(seconds)


# ---------------------------------------------------------------- segment-level formats


def _speaker_prefix(speaker: str | None) -> str:
    return f"[{speaker}]: " if speaker is not None else ""


def _render_json(document: Document, options: WriterOptions) -> str:
    # The same text `write_document` writes.
    return document.model_dump_json(indent=2) + "\n"


def _render_txt(document: Document, options: WriterOptions) -> str:
    return "".join(f"{_speaker_prefix(s.speaker)}{s.text.strip()}\n" for s in document.segments)


def _render_tsv(document: Document, options: WriterOptions) -> str:
    rows = (f"{round(1000 * s.start)}\t{round(1000 * s.end)}\t{_one_line(s.text)}\n" for s in document.segments)
    return "start\tend\ttext\n" + "".join(rows)


def _render_aud(document: Document, options: WriterOptions) -> str:
    def label(segment: Segment) -> str:
        speaker = f"[[{segment.speaker}]]" if segment.speaker is not None else ""
        return f"{segment.start}\t{segment.end}\t{speaker}{_one_line(segment.text)}\n"

    return "".join(label(s) for s in document.segments)


def _render_rttm(document: Document, options: WriterOptions) -> str:
    """NIST RTTM, one SPEAKER line per diarization turn; the file id is the audio's name without spaces."""
    if not isinstance(document, Result) or document.diarization is None:
        raise ValueError("rttm needs speaker turns: run stage 2 with --diarize")
    file_id = "_".join(Path(document.audio.path).stem.split()) or "audio"
    return "".join(
        f"SPEAKER {file_id} 1 {turn.start:.3f} {turn.end - turn.start:.3f} <NA> <NA> {'_'.join(turn.speaker.split())} <NA> <NA>\n"
        for turn in document.speaker_turns
    )


def _one_line(text: str) -> str:
    return text.strip().replace("\t", " ")


# ---------------------------------------------------------------- subtitles


@dataclass(frozen=True)
class _Token:
    """One word ready for a cue: stripped text, resolved times and speaker."""

    text: str
    start: float
    end: float
    speaker: str | None
    space_before: bool
    opens_segment: bool


_Line = list[_Token]
_Cue = list[_Line]


def _render_srt(document: Document, options: WriterOptions) -> str:
    cues = _iterate_cues(document, options, _srt_timestamp)
    return "".join(f"{index}\n{start} --> {end}\n{text}\n\n" for index, (start, end, text) in enumerate(cues, start=1))


def _render_vtt(document: Document, options: WriterOptions) -> str:
    cues = _iterate_cues(document, options, _vtt_timestamp)
    return "WEBVTT\n\n" + "".join(f"{start} --> {end}\n{text}\n\n" for start, end, text in cues)


def _iterate_cues(document: Document, options: WriterOptions, timestamp: Callable[[float], str]) -> Iterator[tuple[str, str, str]]:
    """(start, end, text) per cue: word-level when any segment has words, else one cue per segment."""
    if not any(segment.words for segment in document.segments):
        for segment in document.segments:
            text = _speaker_prefix(segment.speaker) + segment.text.strip().replace("-->", "->")
            yield timestamp(segment.start), timestamp(segment.end), text
        return
    tokens = [token for segment in document.segments for token in _tokens(segment, document.language)]
    for cue in _group_cues(tokens, options):
        yield from _cue_texts(cue, options.highlight_words, timestamp)


def _tokens(segment: Segment, language: str) -> list[_Token]:
    """The segment's words with times filled in; a segment without words is split on whitespace."""
    words = segment.words or [Word(word=text) for text in segment.text.split()]
    times = _fill_times(segment, [(word.start, word.end) for word in words])
    # whisper's words carry their leading space; WhisperX's aligned words carry none and get joined with one.
    whisper_style = any(word.word[:1].isspace() for word in words)
    spaced_language = language not in LANGUAGES_WITHOUT_SPACES
    kept = [(word, start, end) for word, (start, end) in zip(words, times, strict=False) if word.word.strip()]
    return [
        _Token(
            text=word.word.strip(),
            start=start,
            end=end,
            speaker=word.speaker if word.speaker is not None else segment.speaker,
            space_before=word.word[:1].isspace() if whisper_style else spaced_language,
            opens_segment=index == 0,
        )
        for index, (word, start, end) in enumerate(kept)
    ]


def _fill_times(segment: Segment, times: list[tuple[float | None, float | None]]) -> list[tuple[float, float]]:
    """Missing word times: the segment's bounds at its two ends, linear interpolation in between."""
    points = [value for pair in times for value in pair]
    if not points:
        return []
    points[0] = segment.start if points[0] is None else points[0]
    points[-1] = segment.end if points[-1] is None else points[-1]
    known = [i for i, value in enumerate(points) if value is not None]
    filled: list[float] = []
    for i, value in enumerate(points):
        if value is None:
            after = bisect.bisect(known, i)
            low_at, high_at = known[after - 1], known[after]
            low, high = filled[low_at], points[high_at]
            assert high is not None
            value = max(low + (high - low) * (i - low_at) / (high_at - low_at), filled[-1])
        filled.append(value)
    return [(filled[i], max(filled[i], filled[i + 1])) for i in range(0, len(filled), 2)]


def _group_cues(tokens: list[_Token], options: WriterOptions) -> Iterator[_Cue]:
    """whisper's iterate_subtitles line and cue breaking, plus a cue break at every speaker change."""
    width = options.max_line_width or UNLIMITED_WIDTH
    count = options.max_line_count if options.max_line_width is not None else None
    preserve = options.preserve_segments
    cue: _Cue = []
    last_start = tokens[0].start if tokens else 0.0
    for token in tokens:
        long_pause = not preserve and token.start - last_start > LONG_PAUSE_S
        last_start = token.start
        if not cue:
            cue = [[token]]
        elif token.speaker != cue[0][0].speaker or (preserve and token.opens_segment):
            yield cue
            cue = [[token]]
        elif not long_pause and _line_width([*cue[-1], token], first=len(cue) == 1) <= width:
            cue[-1].append(token)
        elif count is not None and (long_pause or len(cue) >= count):
            yield cue
            cue = [[token]]
        else:
            cue.append([token])
    if cue:
        yield cue


def _line_width(line: _Line, first: bool = False) -> int:
    """Characters the line shows: the cue's first line carries the speaker prefix (`[SPEAKER_00]: `, 14 characters
    WhisperX leaves out of the width, so its lines overran --max_line_width)."""
    prefix = _speaker_prefix(line[0].speaker) if first and line else ""
    return len(prefix) + len(_join(line, lambda token: token.text))


def _join(line: _Line, show: Callable[[_Token], str]) -> str:
    return "".join((" " if token.space_before and i > 0 else "") + show(token) for i, token in enumerate(line))


def _cue_text(cue: _Cue, show: Callable[[_Token], str] = lambda token: token.text) -> str:
    text = "\n".join(_join(line, show) for line in cue).replace("-->", "->")
    return _speaker_prefix(cue[0][0].speaker) + text


def _cue_texts(cue: _Cue, highlight_words: bool, timestamp: Callable[[float], str]) -> Iterator[tuple[str, str, str]]:
    """One cue, or with highlight_words one cue per word (<u>underlined</u>) and plain cues over the gaps.

    Every cue lasts at least a millisecond: a word of zero length is underlined until the next word starts (whisper's
    writer gave it a cue from t to t, which players skip or flash), and one that overlaps the word before starts
    where that one's underline ends."""
    tokens = [token for line in cue for token in line]
    if not highlight_words:
        yield timestamp(tokens[0].start), timestamp(max(tokens[-1].end, tokens[0].start)), _cue_text(cue)
        return
    last = _ms(tokens[0].start)
    for index, current in enumerate(tokens):
        start, end = max(_ms(current.start), last), _ms(current.end)
        if end <= start and index + 1 < len(tokens):
            end = _ms(tokens[index + 1].start)
        if end <= start:
            continue  # nothing left to show it in: it stays plain in the neighbouring cues
        if start > last:
            yield timestamp(last / 1000), timestamp(start / 1000), _cue_text(cue)
        yield (
            timestamp(start / 1000),
            timestamp(end / 1000),
            _cue_text(cue, lambda t, current=current: f"<u>{t.text}</u>" if t is current else t.text),
        )
        last = end


def _ms(seconds: float) -> int:
    """Cue times are compared in whole milliseconds, as they are written."""
    return round(seconds * 1000)


_RENDERERS: dict[str, Callable[[Document, WriterOptions], str]] = {
    "json": _render_json,
    "txt": _render_txt,
    "srt": _render_srt,
    "vtt": _render_vtt,
    "tsv": _render_tsv,
    "aud": _render_aud,
    "rttm": _render_rttm,
}
