"""The documents the stages hand to each other: pydantic v2 models, nothing heavy.

Stage 1 writes a `Transcript`; stage 2 reads it and writes a `Result` (WhisperX's JSON shape:
`segments` with `words`, `word_segments`, `language`, plus our audio identity and provenance).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# 1.1: alignment scores, char alignments, speaker turns, stage-2 model records; 1.2: batched decoding, VAD, language votes;
# 1.3: audio.resolved_path; 1.4: diarization.speed; 1.5: audio.warnings, decoding.best_of, words' score unaligned;
# 1.6: decoding.word_time_shift
SCHEMA_VERSION = "1.6"
SCHEMA_MAJOR = SCHEMA_VERSION.split(".")[0]

# Whisper rounds times to 10 ms; allow that much slack before calling times inconsistent.
TIME_TOLERANCE_S = 0.02

Seconds = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Word(_Model):
    word: str
    start: Seconds | None = None
    end: Seconds | None = None
    probability: Probability | None = Field(default=None, description="Whisper's token probability (stage 1's word timestamps)")
    score: Probability | None = Field(
        default=None, description="CTC alignment score (stage 2; WhisperX's name); stage 1's probability where words were not aligned"
    )
    speaker: str | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Word:
        if self.start is not None and self.end is not None and self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class CharAlignment(_Model):
    """One character's alignment, as WhisperX writes it with `--return_char_alignments`."""

    char: str
    start: Seconds | None = None
    end: Seconds | None = None
    score: Probability | None = None


class Segment(_Model):
    id: int = Field(ge=0)
    start: Seconds
    end: Seconds
    text: str
    avg_logprob: float | None = None
    no_speech_prob: Probability | None = None
    compression_ratio: Annotated[float, Field(ge=0.0)] | None = None
    temperature: Annotated[float, Field(ge=0.0)] | None = None
    tokens: list[int] | None = None
    words: list[Word] | None = None
    chars: list[CharAlignment] | None = None
    speaker: str | None = None

    @model_validator(mode="after")
    def _times_consistent(self) -> Segment:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        for index, word in enumerate(self.words or []):
            if word.start is not None and word.start < self.start - TIME_TOLERANCE_S:
                raise ValueError(f"words[{index}] starts at {word.start}, before its segment ({self.start})")
            if word.end is not None and word.end > self.end + TIME_TOLERANCE_S:
                raise ValueError(f"words[{index}] ends at {word.end}, after its segment ({self.end})")
        return self


class AudioInfo(_Model):
    path: str = Field(description="the path as the user gave it")
    # optional: documents before 1.3 have none
    resolved_path: str | None = Field(default=None, description="the absolute path stage 1 read (symbolic links resolved)")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    duration: Seconds
    sample_rate: int = Field(gt=0, description="sample rate of the source file")
    channels: int | None = Field(default=None, gt=0)
    warnings: list[str] | None = Field(
        default=None, description="what was wrong with the audio and accepted anyway, e.g. a truncated file with --allow_truncated"
    )


class ModelInfo(_Model):
    id: str = Field(description="what the user asked for: an HF repo id or a folder")
    source: Literal["hf", "mlx", "ctranslate2", "bundled"]
    path: str = Field(description="the folder the weights were loaded from")
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] = Field(description="hash of the weights file that ran")
    dtype: str


class VadSettings(_Model):
    method: Literal["silero", "pyannote"]
    onset: Probability
    offset: Probability
    chunk_size: Annotated[float, Field(gt=0.0, le=30.0)]


class DecodingOptions(_Model):
    """Every parameter that can change stage 1's text."""

    task: Literal["transcribe", "translate"]
    language: str | None
    temperature: list[Annotated[float, Field(ge=0.0)]]
    initial_prompt: str | None = None
    word_timestamps: bool
    condition_on_previous_text: bool
    compression_ratio_threshold: float | None
    logprob_threshold: float | None
    no_speech_threshold: float | None
    compute_type: Literal["float16", "float32", "bfloat16", "int8", "int8_float32", "int8_float16", "int8_bfloat16"]
    prepend_punctuations: str = "\"'“¿([{-"
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"
    hallucination_silence_threshold: float | None = None
    # 1.2: the batched pipeline (absent in 1.1 documents, which were all decoded by mlx_whisper sequentially)
    backend: Literal["mlx", "ctranslate2", "mlx_whisper"] = "mlx_whisper"
    batch_size: Annotated[int, Field(ge=1)] = 1
    beam_size: Annotated[int, Field(ge=1)] = 1
    # 1.5: candidates sampled per chunk at temperatures above 0 (documents before it sampled one)
    best_of: Annotated[int, Field(ge=1)] = 1
    patience: Annotated[float, Field(gt=0.0)] = 1.0
    length_penalty: float | None = None
    hotwords: str | None = None
    suppress_tokens: str = "-1"
    suppress_numerals: bool = False
    without_timestamps: bool = False
    interleaved_context: bool = False
    vad: VadSettings | None = Field(default=None, description="None: fixed 30 s windows (--no_vad) or mlx_whisper's own seeking")
    # 1.6: how much earlier stage 1 put its cross-attention word times than DTW found them (documents before it: none)
    word_time_shift: Annotated[float, Field(ge=0.0)] = 0.0


class Provenance(_Model):
    stage: Literal["transcribe", "align_diarize"]
    tool_version: str
    started_at: str = Field(description="ISO 8601, UTC")
    wall_time_s: Seconds
    timings: dict[str, Seconds] = Field(default_factory=dict, description="seconds per step, e.g. load_models, align, diarize")
    peak_rss_mib: Annotated[float, Field(ge=0.0)] | None = Field(default=None, description="the stage process's peak resident memory")
    python: str
    platform: str
    device: str = Field(description="what did the work, e.g. 'cpu' or 'gpu'")
    packages: dict[str, str] = Field(description="versions of the packages that matter (numpy, mlx, torch, ...)")
    environment: dict[str, str] = Field(default_factory=dict, description="thread counts, BLAS and other settings the stage ran with")


class LanguageVote(_Model):
    start: Seconds
    end: Seconds
    language: str
    probability: Probability


class LanguageInfo(_Model):
    code: str
    probability: Probability | None = Field(default=None, description="None when the language was given or the model is English-only")
    source: Literal["user", "detected", "model"]
    votes: list[LanguageVote] | None = Field(default=None, description="per-chunk detections the language was voted from")


class Transcript(_Model):
    """Stage 1's output."""

    schema_version: str = SCHEMA_VERSION
    kind: Literal["transcript"] = "transcript"
    audio: AudioInfo
    language: str
    language_info: LanguageInfo
    task: Literal["transcribe", "translate"]
    text: str
    segments: list[Segment]
    model: ModelInfo
    decoding: DecodingOptions
    provenance: Provenance


class SpeakerInfo(_Model):
    id: str
    speaking_time: Seconds
    embedding: list[float] | None = Field(default=None, description="the speaker's centroid embedding (--speaker_embeddings)")


class SpeakerTurn(_Model):
    """One diarization turn: what RTTM holds."""

    start: Seconds
    end: Seconds
    speaker: str

    @model_validator(mode="after")
    def _ordered(self) -> SpeakerTurn:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        return self


class WeightsFile(_Model):
    name: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class AlignmentInfo(_Model):
    """How stage 2 aligned words: the CTC model that ran and the options that change word times."""

    model: str = Field(description="what ran: a torchaudio bundle name, an HF repo id or a folder")
    source: Literal["torchaudio", "hf", "local"]
    weights: list[WeightsFile]
    language: str
    interpolate_method: Literal["nearest", "linear", "ignore"]
    return_char_alignments: bool
    device: str
    interpolated_words: int = Field(ge=0, description="words without alignable characters (digits, symbols) whose times were interpolated")
    unaligned_segments: int = Field(
        ge=0, description="segments the CTC model could not align; their words' times are spread over the segment"
    )


class DiarizationInfo(_Model):
    """Which pipeline found the speakers, with which constraints."""

    pipeline: str = Field(description="'bundled', an HF pipeline id or a local config.yaml")
    source: Literal["bundled", "hf", "local"]
    weights: list[WeightsFile]
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None
    speed: Literal["exact", "fast", "stock"] = Field(
        "stock", description="exact: stock's output, less work; fast: sparser windows; stock: pyannote's own code path"
    )
    device: Literal["cpu"] = "cpu"


class Result(_Model):
    """Stage 2's output: WhisperX's shape plus audio identity and the provenance of both stages."""

    schema_version: str = SCHEMA_VERSION
    kind: Literal["result"] = "result"
    audio: AudioInfo
    language: str
    segments: list[Segment]
    word_segments: list[Word]
    speakers: list[SpeakerInfo] = Field(default_factory=list)
    speaker_turns: list[SpeakerTurn] = Field(default_factory=list, description="the diarization, turn by turn (RTTM's content)")
    model: ModelInfo = Field(description="stage 1's Whisper model")
    alignment: AlignmentInfo | None = Field(default=None, description="None with --no_align")
    diarization: DiarizationInfo | None = Field(default=None, description="None without --diarize")
    provenance: list[Provenance] = Field(description="one record per stage that ran, stage 1 first")


Document = Transcript | Result
