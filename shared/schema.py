"""The JSON Schema of each document, checked into shared/schema/; `python -m shared.schema` rewrites it."""

from __future__ import annotations

import json
from pathlib import Path

from .contract import SCHEMA_VERSION, Result, Transcript

SCHEMA_DIR = Path(__file__).with_name("schema")
DOCUMENTS = {"transcript": Transcript, "result": Result}


def schema_text(name: str) -> str:
    schema = DOCUMENTS[name].model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"stagewhisper/{name}/{SCHEMA_VERSION}"
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
