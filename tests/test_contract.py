"""The shared contract: round trip, schema drift, and one-line errors naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared import SCHEMA_VERSION, ExitCode, StageError, Transcript, load_document, write_document
from shared.schema import DOCUMENTS, schema_path, schema_text

from .factories import make_transcript


def test_round_trip_is_lossless(tmp_path: Path) -> None:
    transcript = make_transcript()
    path = write_document(tmp_path / "a.transcript.json", transcript)
    assert load_document(path, Transcript) == transcript
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_checked_in_schema_matches_models(name: str) -> None:
    assert schema_path(name).read_text(encoding="utf-8") == schema_text(name), (
        f"{schema_path(name)} is stale: run `uv run python -m shared.schema` and commit it"
    )


def _load_error(tmp_path: Path, content: str | bytes) -> StageError:
    path = tmp_path / "bad.transcript.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(StageError) as caught:
        load_document(path, Transcript)
    error = caught.value
    assert error.exit_code == ExitCode.BAD_DOCUMENT
    assert "\n" not in error.message and str(path) in error.message
    return error


def _mutated(**changes: object) -> str:
    data = json.loads(make_transcript().model_dump_json())
    for dotted, value in changes.items():
        target = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            target = target[int(key)] if key.isdigit() else target[key]
        target[int(leaf) if leaf.isdigit() else leaf] = value
    return json.dumps(data)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (_mutated(schema_version="2.0"), "schema_version '2.0' is not supported"),
        (_mutated(schema_version=None), "schema_version None is not supported"),
        (_mutated(kind="result"), "kind: expected a 'transcript' document"),
        (_mutated(segments__0__end=0.5), "segments[0]: end 0.5 is before start 1.0"),
        (_mutated(segments__0__words__1__end=9.0), "segments[0]: words[1] ends at 9.0, after its segment (2.5)"),
        (_mutated(segments__1__words__0__start=-1.0), "segments[1].words[0].start: Input should be greater than or equal to 0"),
        (_mutated(audio__sha256="abc"), "audio.sha256: String should match pattern"),
        (_mutated(segments__0__start="soon"), "segments[0].start: Input should be a valid number"),
        (_mutated(surprise=1), "surprise: Extra inputs are not permitted"),
    ],
)
def test_bad_documents_give_one_line_naming_the_field(tmp_path: Path, content: str | bytes, expected: str) -> None:
    assert expected in _load_error(tmp_path, content).message


def test_missing_file_is_a_document_error(tmp_path: Path) -> None:
    with pytest.raises(StageError) as caught:
        load_document(tmp_path / "nope.json", Transcript)
    assert caught.value.exit_code == ExitCode.BAD_DOCUMENT and "file not found" in caught.value.message


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path: Path) -> None:
    class Exploding:
        def model_dump_json(self, **_: object) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_document(tmp_path / "x.json", Exploding())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StageError) as caught:
        write_document(blocker / "sub" / "x.json", make_transcript())
    assert caught.value.exit_code == ExitCode.OUTPUT_UNWRITABLE
