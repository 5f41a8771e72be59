"""Small, valid contract documents built by hand for tests that need no model."""

from __future__ import annotations

from shared import AudioInfo, DecodingOptions, LanguageInfo, ModelInfo, Provenance, Segment, Transcript, Word


def make_transcript() -> Transcript:
    segments = [
        Segment(
            id=0,
            start=1.0,
            end=2.5,
            text=" Hello there.",
            avg_logprob=-0.2,
            no_speech_prob=0.01,
            compression_ratio=1.1,
            temperature=0.0,
            tokens=[1, 2],
            words=[Word(word=" Hello", start=1.0, end=1.4, probability=0.9), Word(word=" there.", start=1.5, end=2.5, probability=0.8)],
        ),
        Segment(
            id=1,
            start=3.0,
            end=4.0,
            text=" Ça va?",
            avg_logprob=-0.3,
            no_speech_prob=0.02,
            compression_ratio=0.9,
            temperature=0.0,
            tokens=[3],
            words=[Word(word=" Ça", start=3.0, end=3.4, probability=0.7), Word(word=" va?", start=3.4, end=4.0, probability=0.6)],
        ),
    ]
    return Transcript(
        audio=AudioInfo(path="talk.wav", sha256="0" * 64, duration=5.0, sample_rate=16000, channels=1),
        language="en",
        language_info=LanguageInfo(code="en", probability=None, source="model"),
        task="transcribe",
        text="Hello there. Ça va?",
        segments=segments,
        model=ModelInfo(id="bundled-tiny.en", source="bundled", path="/models/tiny", sha256="f" * 64, dtype="float32"),
        decoding=DecodingOptions(
            task="transcribe",
            language="en",
            temperature=[0.0, 0.2],
            word_timestamps=True,
            condition_on_previous_text=True,
            compression_ratio_threshold=2.4,
            logprob_threshold=-1.0,
            no_speech_threshold=0.6,
            compute_type="float32",
            prepend_punctuations="\"'“¿([{-",
            append_punctuations="\"'.。,，!！?？:：”)]}、",
        ),
        provenance=Provenance(
            stage="transcribe",
            tool_version="0.1.0",
            started_at="2026-01-01T00:00:00+00:00",
            wall_time_s=1.0,
            python="3.11.7",
            platform="Linux-x86_64",
            device="cpu",
            packages={"numpy": "2.4.6"},
        ),
    )
