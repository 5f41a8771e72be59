"""Fuzzing the contract loader: whatever a file holds, load_document returns a valid model or refuses it with
the documented error (StageError, exit code BAD_DOCUMENT, one line). Nothing else may escape it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contract import Result, Transcript
from shared.errors import ExitCode, StageError
from shared.io import load_document
from tests.factories import greeting_segments, make_result, make_transcript

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
# Texts that break parsers rather than schemas: deep nesting, ints past Python's digit limit, odd encodings.
HOSTILE_TEXTS = {
    "deep-list": "[" * 100_000 + "]" * 100_000,
    "deep-object": '{"a":' * 50_000 + "1" + "}" * 50_000,
    "huge-int": "1" * 5_000,
    "huge-int-inside": '{"schema_version": "1.1", "kind": "transcript", "audio": ' + "9" * 5_000 + "}",
    "bom": "\ufeff{}",
    "empty": "",
}
VALID = {"transcript": make_transcript().model_dump(mode="json"), "result": make_result(greeting_segments()).model_dump(mode="json")}


def check_load(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    for kind in (Transcript, Result):
        try:
            document = load_document(path, kind)
        except StageError as error:
            assert error.exit_code == ExitCode.BAD_DOCUMENT, error.message
            assert error.message and "\n" not in error.message and "\r" not in error.message, repr(error.message)
        else:
            assert isinstance(document, kind)


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "fuzzed.json"


@FUZZ
@given(data=st.binary(max_size=300))
def test_random_bytes(target: Path, data: bytes) -> None:
    check_load(target, data)


@FUZZ
@given(value=json_values)
def test_random_json_values(target: Path, value: Any) -> None:
    check_load(target, json.dumps(value).encode())


@pytest.mark.parametrize("name", sorted(HOSTILE_TEXTS))
def test_hostile_json_texts(target: Path, name: str) -> None:
    check_load(target, HOSTILE_TEXTS[name].encode())


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON document a mutation can hit."""
    places = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            places += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            places += _paths(child, (*prefix, index))
    return places


def _mutate(document: Any, place: tuple[Any, ...], action: str, new_value: Any, new_key: str) -> Any:
    if not place:
        return new_value
    parent = document
    for step in place[:-1]:
        parent = parent[step]
    last = place[-1]
    if action == "delete":
        del parent[last]
    elif action == "add_key" and isinstance(parent, dict):
        parent[new_key] = new_value
    else:
        parent[last] = new_value
    return document


@FUZZ
@given(
    kind=st.sampled_from(sorted(VALID)),
    choice=st.data(),
    action=st.sampled_from(["replace", "delete", "add_key"]),
    new_value=json_values,
    new_key=st.text(max_size=10),
)
def test_mutated_valid_documents(target: Path, kind: str, choice: st.DataObject, action: str, new_value: Any, new_key: str) -> None:
    document = json.loads(json.dumps(VALID[kind]))  # a fresh deep copy
    mutations = choice.draw(st.integers(1, 3))
    for _ in range(mutations):
        places = _paths(document)
        fresh_value = json.loads(json.dumps(new_value))  # never the same object twice: no cycles
        document = _mutate(document, choice.draw(st.sampled_from(places)), action, fresh_value, new_key)
    check_load(target, json.dumps(document).encode())


def test_the_unmutated_documents_load(target: Path) -> None:
    """The fuzz's starting points are valid, so a mutation that changes nothing must load."""
    check_load(target, json.dumps(VALID["transcript"]).encode())
    assert load_document(target, Transcript)
