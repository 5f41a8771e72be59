"""shared.writers: WhisperX-shaped txt/srt/vtt/tsv/aud/json output, rendered from hand-built documents."""

from __future__ import annotations

import json
import random
import re
import warnings
from pathlib import Path

import pytest

from shared import io as shared_io
from shared.contract import AudioInfo, Result, SpeakerTurn, Transcript
from shared.errors import ExitCode, StageError
from shared.io import parse_document
from shared.writers import ALL_FORMATS, FORMATS, WriterOptions, expand_formats, format_timestamp, render, write_outputs

from .factories import greeting_segments, make_result, make_transcript, segment, word

ALL_OPTIONS = [
    WriterOptions(),
    WriterOptions(max_line_width=8),
    WriterOptions(max_line_width=8, max_line_count=2),
    WriterOptions(highlight_words=True),
    WriterOptions(max_line_width=12, max_line_count=1, highlight_words=True),
]


@pytest.fixture
def dialogue() -> Result:
    """WhisperX-style: aligned words without leading spaces, two speakers."""
    a, b = "SPEAKER_00", "SPEAKER_01"
    return make_result(
        [
            segment(
                0,
                0.0,
                2.5,
                " Hello there. How are you?",
                [
                    word("Hello", 0.0, 0.4, a),
                    word("there.", 0.5, 0.9, a),
                    word("How", 1.2, 1.4, a),
                    word("are", 1.5, 1.7, a),
                    word("you?", 1.8, 2.4, a),
                ],
                speaker=a,
            ),
            segment(1, 3.0, 4.0, " Fine, thanks.", [word("Fine,", 3.0, 3.4, b), word("thanks.", 3.5, 4.0, b)], speaker=b),
        ]
    )


@pytest.fixture
def counting() -> Transcript:
    """whisper-style: words carry their leading space, no speakers, a long pause before the last segment."""
    return make_transcript(
        [
            segment(0, 0.0, 2.0, " One two three.", [word(" One", 0.0, 0.5), word(" two", 0.5, 1.0), word(" three.", 1.0, 2.0)]),
            segment(1, 2.0, 4.0, " Four five six.", [word(" Four", 2.0, 2.5), word(" five", 2.5, 3.0), word(" six.", 3.0, 4.0)]),
            segment(2, 8.0, 9.0, " Seven.", [word(" Seven.", 8.0, 9.0)]),
        ]
    )


def without_words(document: Transcript | Result) -> Transcript | Result:
    return document.model_copy(update={"segments": [s.model_copy(update={"words": None}) for s in document.segments]})


def srt_cues(text: str) -> list[tuple[str, str, str]]:
    """(start, end, text) of every cue in an SRT file."""
    cues = []
    for block in text.split("\n\n"):
        if block:
            _, times, body = block.split("\n", 2)
            start, end = times.split(" --> ")
            cues.append((start, end, body))
    return cues


# ---------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("seconds", "hours", "marker", "expected"),
    [
        (0.0, False, ".", "00:00.000"),
        (1.0, True, ",", "00:00:01,000"),
        (61.25, False, ".", "01:01.250"),
        (59.9996, False, ".", "01:00.000"),
        (3600.0, False, ".", "01:00:00.000"),
        (3661.5, True, ",", "01:01:01,500"),
    ],
)
def test_format_timestamp_matches_whisper(seconds: float, hours: bool, marker: str, expected: str) -> None:
    assert format_timestamp(seconds, always_include_hours=hours, decimal_marker=marker) == expected


def test_format_timestamp_rejects_negative() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        format_timestamp(-0.5)


# ---------------------------------------------------------------- segment-level formats


def test_txt_prefixes_speakers(dialogue: Result, counting: Transcript) -> None:
    assert render(dialogue, "txt") == "[SPEAKER_00]: Hello there. How are you?\n[SPEAKER_01]: Fine, thanks.\n"
    assert render(counting, "txt") == "One two three.\nFour five six.\nSeven.\n"


def test_tsv_integer_milliseconds(dialogue: Result) -> None:
    document = make_result([segment(0, 0.0015, 1.2344, " tab\there "), *dialogue.segments[1:]])
    assert render(document, "tsv") == "start\tend\ttext\n2\t1234\ttab here\n3000\t4000\tFine, thanks.\n"


def test_aud_seconds_and_speaker_brackets(dialogue: Result, counting: Transcript) -> None:
    assert render(dialogue, "aud") == "0.0\t2.5\t[[SPEAKER_00]]Hello there. How are you?\n3.0\t4.0\t[[SPEAKER_01]]Fine, thanks.\n"
    assert render(counting, "aud").splitlines()[-1] == "8.0\t9.0\tSeven."


def test_json_is_the_document(dialogue: Result, tmp_path: Path) -> None:
    text = render(dialogue, "json")
    assert parse_document(json.loads(text), Result) == dialogue
    (path,) = write_outputs(dialogue, tmp_path, "talk", "json")
    assert path.read_text(encoding="utf-8") == text


def test_empty_document() -> None:
    empty = make_result([])
    assert render(empty, "srt") == ""
    assert render(empty, "vtt") == "WEBVTT\n\n"
    assert render(empty, "txt") == ""
    assert render(empty, "tsv") == "start\tend\ttext\n"


# ---------------------------------------------------------------- subtitles without words


def test_segment_cues_without_words(dialogue: Result) -> None:
    document = without_words(dialogue)
    document.segments[1].text = " A --> B "
    assert render(document, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,500\n[SPEAKER_00]: Hello there. How are you?\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\n[SPEAKER_01]: A -> B\n\n"
    )
    assert render(document, "vtt") == (
        "WEBVTT\n\n00:00.000 --> 00:02.500\n[SPEAKER_00]: Hello there. How are you?\n\n00:03.000 --> 00:04.000\n[SPEAKER_01]: A -> B\n\n"
    )


def test_vtt_shows_hours_only_when_needed() -> None:
    document = make_transcript([segment(0, 3599.5, 3600.25, " Late.")])
    assert render(document, "vtt") == "WEBVTT\n\n59:59.500 --> 01:00:00.250\nLate.\n\n"


# ---------------------------------------------------------------- subtitles from words


def test_word_cues_follow_segments_and_word_times(dialogue: Result) -> None:
    assert render(dialogue, "srt") == (
        "1\n00:00:00,000 --> 00:00:02,400\n[SPEAKER_00]: Hello there. How are you?\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\n[SPEAKER_01]: Fine, thanks.\n\n"
    )


def test_whisper_style_words_keep_their_spacing(counting: Transcript) -> None:
    assert render(counting, "vtt") == (
        "WEBVTT\n\n"
        "00:00.000 --> 00:02.000\nOne two three.\n\n"
        "00:02.000 --> 00:04.000\nFour five six.\n\n"
        "00:08.000 --> 00:09.000\nSeven.\n\n"
    )


def test_max_line_width_splits_lines_within_segments(dialogue: Result) -> None:
    assert render(dialogue, "srt", WriterOptions(max_line_width=26)) == (  # the first line: 14 of prefix, 12 of words
        "1\n00:00:00,000 --> 00:00:02,400\n[SPEAKER_00]: Hello there.\nHow are you?\n\n"
        "2\n00:00:03,000 --> 00:00:04,000\n[SPEAKER_01]: Fine,\nthanks.\n\n"  # 27 characters would not fit
    )


def test_the_speaker_prefix_counts_toward_the_line_width(dialogue: Result) -> None:
    options = WriterOptions(max_line_width=20, max_line_count=2, highlight_words=True)
    for _, _, body in srt_cues(render(dialogue, "srt", options)):
        for line in re.sub(r"</?u>", "", body).split("\n"):
            assert len(line) <= 20 or " " not in line.removeprefix("[SPEAKER_00]: ").removeprefix("[SPEAKER_01]: "), body


def test_highlighted_cues_never_last_zero_seconds() -> None:
    """Zero-length and overlapping words (stage 1's cross-attention times have them) still get a cue that lasts."""
    words = [word("So", 0.8, 0.8, "SPEAKER_00"), word("we", 1.0, 1.2, "SPEAKER_00"), word("met", 1.1, 1.1, "SPEAKER_00")]
    words += [word("there.", 1.5, 1.5, "SPEAKER_00")]
    document = make_result([segment(0, 0.8, 2.0, " So we met there.", words, speaker="SPEAKER_00")])
    cues = srt_cues(render(document, "srt", WriterOptions(max_line_width=30, max_line_count=2, highlight_words=True)))
    assert cues and all(start < end for start, end, _ in cues), cues
    assert [start for start, _, _ in cues] == sorted(start for start, _, _ in cues)
    underlined = [re.search(r"<u>(.*?)</u>", body).group(1) for _, _, body in cues if "<u>" in body]  # type: ignore[union-attr]
    assert underlined == ["So", "we", "met"], cues  # the last word, zero length with nothing after it, stays plain


def test_max_line_count_flows_across_segments_and_breaks_on_long_pause(counting: Transcript) -> None:
    assert render(counting, "vtt", WriterOptions(max_line_width=10, max_line_count=2)) == (
        "WEBVTT\n\n"
        "00:00.000 --> 00:02.000\nOne two\nthree.\n\n"
        "00:02.000 --> 00:04.000\nFour five\nsix.\n\n"
        "00:08.000 --> 00:09.000\nSeven.\n\n"
    )
    assert render(counting, "vtt", WriterOptions(max_line_width=10, max_line_count=3)) == (
        "WEBVTT\n\n"
        "00:00.000 --> 00:03.000\nOne two\nthree.\nFour five\n\n"
        "00:03.000 --> 00:04.000\nsix.\n\n"
        "00:08.000 --> 00:09.000\nSeven.\n\n"
    )


def test_a_word_wider_than_the_line_gets_a_line_of_its_own(counting: Transcript) -> None:
    cues = srt_cues(render(counting, "srt", WriterOptions(max_line_width=3)))
    assert [body for _, _, body in cues] == ["One\ntwo\nthree.", "Four\nfive\nsix.", "Seven."]


def test_max_line_count_without_width_warns_and_is_ignored(counting: Transcript) -> None:
    with pytest.warns(UserWarning, match="max_line_count has no effect without max_line_width"):
        options = WriterOptions(max_line_count=1)
    assert render(counting, "srt", options) == render(counting, "srt")


@pytest.mark.parametrize("options", [{"max_line_width": 0}, {"max_line_width": 10, "max_line_count": -1}])
def test_options_must_be_positive(options: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be a positive"):
        WriterOptions(**options)


def test_highlight_words_underlines_each_word_and_fills_gaps() -> None:
    document = make_result(
        [segment(0, 0.0, 2.0, " Hi you", [word("Hi", 0.5, 0.8, "SPEAKER_00"), word("you", 1.0, 1.5, "SPEAKER_00")], speaker="SPEAKER_00")]
    )
    assert render(document, "vtt", WriterOptions(highlight_words=True)) == (
        "WEBVTT\n\n"
        "00:00.500 --> 00:00.800\n[SPEAKER_00]: <u>Hi</u> you\n\n"
        "00:00.800 --> 00:01.000\n[SPEAKER_00]: Hi you\n\n"
        "00:01.000 --> 00:01.500\n[SPEAKER_00]: Hi <u>you</u>\n\n"
    )


def test_highlight_words_keeps_line_breaks_outside_the_underline(counting: Transcript) -> None:
    cues = srt_cues(render(counting, "srt", WriterOptions(max_line_width=7, highlight_words=True)))
    assert cues[:3] == [
        ("00:00:00,000", "00:00:00,500", "<u>One</u> two\nthree."),
        ("00:00:00,500", "00:00:01,000", "One <u>two</u>\nthree."),
        ("00:00:01,000", "00:00:02,000", "One two\n<u>three.</u>"),
    ]


# ---------------------------------------------------------------- speakers


def test_speaker_change_inside_a_segment_starts_a_new_cue() -> None:
    document = make_result(
        [
            segment(
                0,
                0.0,
                3.0,
                " Yes. No. Maybe. Sure.",
                [
                    word("Yes.", 0.0, 0.5),
                    word("No.", 1.0, 1.5, "SPEAKER_01"),
                    word("Maybe.", 2.0, 2.5, "SPEAKER_00"),
                    word("Sure.", 2.5, 3.0),
                ],
                speaker="SPEAKER_00",
            )
        ]
    )
    expected = (
        "1\n00:00:00,000 --> 00:00:00,500\n[SPEAKER_00]: Yes.\n\n"
        "2\n00:00:01,000 --> 00:00:01,500\n[SPEAKER_01]: No.\n\n"
        "3\n00:00:02,000 --> 00:00:03,000\n[SPEAKER_00]: Maybe. Sure.\n\n"
    )
    assert render(document, "srt") == expected
    assert render(document, "srt", WriterOptions(max_line_width=40, max_line_count=2)) == expected


@pytest.mark.parametrize("options", ALL_OPTIONS)
def test_cues_never_mix_speakers(options: WriterOptions) -> None:
    rng = random.Random(7)
    segments, speaker_of, t = [], {}, 0.0
    for index in range(12):
        words, start = [], t
        for _ in range(rng.randint(1, 6)):
            name = f"w{len(speaker_of)}"
            speaker_of[name] = rng.choice(["SPEAKER_00", "SPEAKER_01", "SPEAKER_02", None])
            words.append(word(name, t, t + 0.3, speaker_of[name]))
            t += rng.choice([0.4, 0.5, 4.0])
        segments.append(segment(index, start, t, " " + " ".join(w.word for w in words), words, speaker=rng.choice(["SPEAKER_00", None])))
    document = make_result(segments)
    effective = {w.word: w.speaker or s.speaker for s in segments for w in s.words or []}

    seen = []
    for _, _, body in srt_cues(render(document, "srt", options)):
        match = re.fullmatch(r"(?:\[(SPEAKER_\d\d)\]: )?(.*)", body, flags=re.DOTALL)
        assert match
        names = re.sub(r"</?u>", "", match.group(2)).split()
        assert {effective[name] for name in names} == {match.group(1)}, body
        seen.extend(names)
    if not options.highlight_words:
        assert seen == list(speaker_of)  # every word once, in order


# ---------------------------------------------------------------- missing times, unicode


def test_words_without_times_get_segment_bounds_and_interpolated_times() -> None:
    document = make_result(
        [segment(0, 0.0, 4.0, " a b c d", [word("a", None, None), word("b", 1.0, 2.0), word("c", None, None), word("d", None, 3.5)])]
    )
    assert render(document, "srt") == "1\n00:00:00,000 --> 00:00:03,500\na b c d\n\n"
    assert [cue[:2] for cue in srt_cues(render(document, "srt", WriterOptions(highlight_words=True)))] == [
        ("00:00:00,000", "00:00:00,500"),  # a: starts with its segment, ends halfway to b
        ("00:00:00,500", "00:00:01,000"),
        ("00:00:01,000", "00:00:02,000"),
        ("00:00:02,000", "00:00:02,375"),
        ("00:00:02,375", "00:00:02,750"),  # c and d share the gap before d's known end
        ("00:00:02,750", "00:00:03,125"),
        ("00:00:03,125", "00:00:03,500"),
    ]


@pytest.mark.parametrize("options", ALL_OPTIONS)
def test_untimed_words_and_wordless_segments_never_crash(options: WriterOptions) -> None:
    document = make_transcript(
        [
            segment(0, 1.0, 2.0, " x y", [word(" x", None, None), word(" y", None, None)]),
            segment(1, 2.0, 3.0, " Left alone here", None),
            segment(2, 3.0, 3.0, " ", []),
        ]
    )
    for fmt in FORMATS:
        if fmt != "rttm":  # needs speaker turns: test_rttm
            render(document, fmt, options)
    cues = srt_cues(render(document, "srt", options))
    assert cues[0][0] == "00:00:01,000" and cues[-1][1] == "00:00:03,000"
    assert " ".join(re.sub(r"</?u>|\n", " ", cues[-1][2]).split()).endswith("here")


def test_unicode_text_and_languages_without_spaces(tmp_path: Path) -> None:
    japanese = make_result([segment(0, 0.0, 2.0, "こんにちは世界", [word("こんにちは", 0.0, 1.0), word("世界", 1.0, 2.0)])], language="ja")
    assert render(japanese, "srt") == "1\n00:00:00,000 --> 00:00:02,000\nこんにちは世界\n\n"
    assert render(japanese, "srt", WriterOptions(max_line_width=6)) == "1\n00:00:00,000 --> 00:00:02,000\nこんにちは\n世界\n\n"

    french = make_result(
        [segment(0, 0.0, 1.0, " Café naïve 🎉", [word("Café", 0.0, 0.3), word("naïve", 0.3, 0.6), word("🎉", 0.6, 1.0)])], language="fr"
    )
    paths = write_outputs(french, tmp_path, "café", "all")
    assert (tmp_path / "café.txt").read_text(encoding="utf-8") == "Café naïve 🎉\n"
    assert (tmp_path / "café.vtt").read_text(encoding="utf-8") == "WEBVTT\n\n00:00.000 --> 00:01.000\nCafé naïve 🎉\n\n"
    assert "Café naïve 🎉" in (tmp_path / "café.json").read_text(encoding="utf-8")
    assert all(path.read_text(encoding="utf-8") == render(french, path.suffix[1:]) for path in paths)


# ---------------------------------------------------------------- formats and files


def test_rttm_lists_speaker_turns_and_needs_them() -> None:
    turns = [SpeakerTurn(start=0.5, end=2.25, speaker="SPEAKER_00"), SpeakerTurn(start=2.0, end=3.0, speaker="SPEAKER 01")]
    document = make_result(greeting_segments(), turns=turns).model_copy(update={"audio": _named_audio("my talk.wav")})
    assert render(document, "rttm") == (
        "SPEAKER my_talk 1 0.500 1.750 <NA> <NA> SPEAKER_00 <NA> <NA>\nSPEAKER my_talk 1 2.000 1.000 <NA> <NA> SPEAKER_01 <NA> <NA>\n"
    )
    with pytest.raises(ValueError, match="--diarize"):
        render(make_result(greeting_segments()), "rttm")
    with pytest.raises(ValueError, match="--diarize"):
        render(make_transcript(), "rttm")


def _named_audio(path: str) -> AudioInfo:
    return make_transcript().audio.model_copy(update={"path": path})


def test_expand_formats() -> None:
    assert expand_formats("all") == ["json", "txt", "srt", "vtt", "tsv"]
    assert expand_formats("srt") == ["srt"]
    assert expand_formats(["aud", "all"]) == ["aud", *ALL_FORMATS]
    assert expand_formats("srt, VTT,srt") == ["srt", "vtt"]


@pytest.mark.parametrize("requested", ["docx", ["srt", "ass"], "", []])
def test_unknown_or_missing_format_is_one_line_value_error(requested: str | list[str]) -> None:
    with pytest.raises(ValueError) as error:
        expand_formats(requested)
    assert "\n" not in str(error.value) and "choose from all, json, txt, srt, vtt, tsv, aud" in str(error.value)


def test_render_rejects_unknown_format(dialogue: Result) -> None:
    with pytest.raises(ValueError, match="unknown output format 'all'"):
        render(dialogue, "all", WriterOptions())


def test_write_outputs_writes_every_format_and_nothing_else(dialogue: Result, tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir"
    paths = write_outputs(dialogue, out, "talk", ["all", "aud"], WriterOptions(max_line_width=12))
    assert [p.name for p in paths] == ["talk.txt", "talk.srt", "talk.vtt", "talk.tsv", "talk.aud", "talk.json"]  # json renamed last
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert (out / "talk.srt").read_text(encoding="utf-8") == render(dialogue, "srt", WriterOptions(max_line_width=12))


def test_write_outputs_is_all_or_nothing(dialogue: Result, tmp_path: Path) -> None:
    """The last file cannot be written (its folder would be under a file): none of the others appears either."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    with pytest.raises(StageError) as caught:
        write_outputs(dialogue, tmp_path, "talk", ["all"], json_path=blocker / "talk.json")
    assert caught.value.exit_code == ExitCode.OUTPUT_UNWRITABLE and "blocker" in caught.value.message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]  # no outputs, no temp files


def test_write_outputs_renders_everything_before_writing(dialogue: Result, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.writers

    real_render = shared.writers.render

    def failing_render(document: Result, fmt: str, options: WriterOptions) -> str:
        if fmt == "tsv":
            raise RuntimeError("boom")
        return real_render(document, fmt, options)

    monkeypatch.setattr(shared.writers, "render", failing_render)
    with pytest.raises(RuntimeError):
        write_outputs(dialogue, tmp_path, "talk", "all")
    assert list(tmp_path.iterdir()) == []


def test_write_outputs_leaves_no_partial_or_temp_file(dialogue: Result, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_replace(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shared_io.os, "replace", failing_replace)
    with pytest.raises(StageError, match="cannot write"):
        write_outputs(dialogue, tmp_path, "talk", "srt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("basename", ["", "a/b", ".."])
def test_write_outputs_rejects_path_like_basenames(dialogue: Result, tmp_path: Path, basename: str) -> None:
    with pytest.raises(ValueError, match="basename"):
        write_outputs(dialogue, tmp_path, basename, "txt")


def test_no_warning_for_default_options() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        WriterOptions(max_line_width=42, max_line_count=2, highlight_words=True)
