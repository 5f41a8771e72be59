"""Small, valid contract documents built by hand for tests that need no model."""

from __future__ import annotations

import functools
import wave
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

from orchestrator.stage_runner import StageOutcome
from shared import (
    AudioInfo,
    DecodingOptions,
    DiarizationInfo,
    LanguageInfo,
    ModelInfo,
    Provenance,
    Result,
    Segment,
    SpeakerTurn,
    Transcript,
    Word,
)

SHA = "ab" * 32


def word(text: str, start: float | None, end: float | None, speaker: str | None = None, probability: float = 0.9) -> Word:
    return Word(word=text, start=start, end=end, probability=probability, speaker=speaker)


def segment(index: int, start: float, end: float, text: str, words: list[Word] | None = None, speaker: str | None = None) -> Segment:
    return Segment(id=index, start=start, end=end, text=text, words=words, speaker=speaker)


def greeting_segments() -> list[Segment]:
    """Two whisper-style segments (leading spaces, non-ASCII) with decoder statistics and word times."""
    first = segment(0, 1.0, 2.5, " Hello there.", [word(" Hello", 1.0, 1.4), word(" there.", 1.5, 2.5, probability=0.8)])
    second = segment(1, 3.0, 4.0, " Ça va?", [word(" Ça", 3.0, 3.4, probability=0.7), word(" va?", 3.4, 4.0, probability=0.6)])
    for item, tokens in ((first, [1, 2]), (second, [3])):
        item.avg_logprob, item.no_speech_prob, item.compression_ratio, item.temperature, item.tokens = -0.2, 0.01, 1.1, 0.0, tokens
    return [first, second]


def provenance(stage: str = "transcribe") -> Provenance:
    return Provenance(
        stage=stage,  # type: ignore[arg-type]
        tool_version="0.1.0",
        started_at="2026-01-01T00:00:00+00:00",
        wall_time_s=1.5,
        python="3.11.7",
        platform="Linux-x86_64",
        device="cpu",
        packages={"numpy": "2.4.6"},
    )


def _audio(segments: list[Segment]) -> AudioInfo:
    return AudioInfo(path="talk.wav", sha256=SHA, duration=max((s.end for s in segments), default=0.0), sample_rate=16000, channels=1)


def _model() -> ModelInfo:
    return ModelInfo(id="bundled-tiny.en", source="bundled", path="/models/tiny", sha256=SHA, dtype="float32")


def make_transcript(segments: list[Segment] | None = None, language: str = "en") -> Transcript:
    segments = greeting_segments() if segments is None else segments
    return Transcript(
        audio=_audio(segments),
        language=language,
        language_info=LanguageInfo(code=language, source="user"),
        task="transcribe",
        text="".join(s.text for s in segments).strip(),
        segments=segments,
        model=_model(),
        decoding=DecodingOptions(
            task="transcribe",
            language=language,
            temperature=[0.0, 0.2],
            word_timestamps=True,
            condition_on_previous_text=False,
            compression_ratio_threshold=2.4,
            logprob_threshold=-1.0,
            no_speech_threshold=0.6,
            compute_type="float32",
            prepend_punctuations="\"'“¿([{-",
            append_punctuations="\"'.。,，!！?？:：”)]}、",
        ),
        provenance=provenance("transcribe"),
    )


def make_result(segments: list[Segment], language: str = "en", turns: list[SpeakerTurn] | None = None) -> Result:
    return Result(
        audio=_audio(segments),
        language=language,
        segments=segments,
        word_segments=[w for s in segments for w in s.words or []],
        model=_model(),
        speaker_turns=turns or [],
        diarization=None if turns is None else DiarizationInfo(pipeline="bundled", source="bundled", weights=[]),
        provenance=[provenance("transcribe"), provenance("align_diarize")],
    )


class FakeWorkerPool:
    """Stands in for orchestrator.workers.WorkerPool where a test checks the orchestrator's own logic (paths, cache,
    summary): each job runs at once through RUN(stage, label, argv, log_path), which writes what the stage would."""

    def __init__(self, run: Callable[[str, str, list[str], Path], StageOutcome], stage: str, *args: object, **kwargs: object) -> None:
        self.run, self.stage = run, stage

    def submit(self, argv: Sequence[str], label: str, log_path: Path, on_event: object = None) -> Future[StageOutcome]:
        future: Future[StageOutcome] = Future()
        future.set_result(self.run(self.stage, label, list(argv), log_path))
        return future

    def start(self) -> None:
        return None

    def close(self, cancel: bool = False) -> None:
        return None

    def shutdown(self, timeout_s: float = 0.0) -> None:
        return None


def fake_worker_pools(run: Callable[[str, str, list[str], Path], StageOutcome]) -> Callable[..., FakeWorkerPool]:
    """What to put in place of `orchestrator.cli.WorkerPool`."""
    return functools.partial(FakeWorkerPool, run)


def cut_wav(source: Path, destination: Path, start_s: float, seconds: float) -> None:
    """SECONDS of the WAV SOURCE from START_S, as a WAV of the same format."""
    with wave.open(str(source), "rb") as reader:
        rate = reader.getframerate()
        reader.setpos(int(start_s * rate))
        params, frames = reader.getparams(), reader.readframes(int(seconds * rate))
    with wave.open(str(destination), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(frames)


def repeat_wav(source: Path, destination: Path, times: int) -> None:
    """The WAV SOURCE repeated TIMES times (other bytes than the source: nothing is reused from a cache)."""
    with wave.open(str(source), "rb") as reader:
        params, frames = reader.getparams(), reader.readframes(reader.getnframes())
    with wave.open(str(destination), "wb") as writer:
        writer.setparams(params)
        writer.writeframes(frames * times)
