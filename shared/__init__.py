"""The contract between stagewhisper's stages: models, schema version, loaders and writers."""

from .contract import (
    SCHEMA_VERSION,
    AlignmentInfo,
    AudioInfo,
    CharAlignment,
    DecodingOptions,
    DiarizationInfo,
    LanguageInfo,
    ModelInfo,
    Provenance,
    Result,
    Segment,
    SpeakerInfo,
    SpeakerTurn,
    Transcript,
    WeightsFile,
    Word,
)
from .errors import ExitCode, StageError
from .io import load_document, parse_document, write_document, write_text_atomic

__all__ = [
    "SCHEMA_VERSION",
    "AlignmentInfo",
    "AudioInfo",
    "CharAlignment",
    "DecodingOptions",
    "DiarizationInfo",
    "ExitCode",
    "LanguageInfo",
    "ModelInfo",
    "Provenance",
    "Result",
    "Segment",
    "SpeakerInfo",
    "SpeakerTurn",
    "StageError",
    "Transcript",
    "WeightsFile",
    "Word",
    "load_document",
    "parse_document",
    "write_document",
    "write_text_atomic",
]
