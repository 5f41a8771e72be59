"""The contract between stagewhisper's stages: models, schema version, loaders and writers."""

from .contract import (
    SCHEMA_VERSION,
    AudioInfo,
    DecodingOptions,
    LanguageInfo,
    ModelInfo,
    Provenance,
    Result,
    Segment,
    SpeakerInfo,
    Transcript,
    Word,
)
from .errors import ExitCode, StageError
from .io import load_document, parse_document, write_document, write_text_atomic

__all__ = [
    "SCHEMA_VERSION",
    "AudioInfo",
    "DecodingOptions",
    "ExitCode",
    "LanguageInfo",
    "ModelInfo",
    "Provenance",
    "Result",
    "Segment",
    "SpeakerInfo",
    "StageError",
    "Transcript",
    "Word",
    "load_document",
    "parse_document",
    "write_document",
    "write_text_atomic",
]
