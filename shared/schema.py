"""The JSON Schema of each document, checked into shared/schema/; `python -m shared.schema` rewrites it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .contract import SCHEMA_VERSION, Result, Transcript
from .worker_protocol import WORKER_PROTOCOL_VERSION, FromWorker, ToWorker

SCHEMA_DIR = Path(__file__).with_name("schema")
# name: (the type, its version); the worker messages are one JSON object per line after the protocol's prefix
DOCUMENTS: dict[str, tuple[Any, str]] = {
    "transcript": (Transcript, SCHEMA_VERSION),
    "result": (Result, SCHEMA_VERSION),
    "worker-input": (ToWorker, str(WORKER_PROTOCOL_VERSION)),
    "worker-output": (FromWorker, str(WORKER_PROTOCOL_VERSION)),
}


def schema_text(name: str) -> str:
    kind, version = DOCUMENTS[name]
    schema = TypeAdapter(kind).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"stagewhisper/{name}/{version}"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def main() -> None:
    SCHEMA_DIR.mkdir(exist_ok=True)
    for name in DOCUMENTS:
        schema_path(name).write_text(schema_text(name), encoding="utf-8")
        print(f"wrote {schema_path(name)}")


if __name__ == "__main__":
    main()
