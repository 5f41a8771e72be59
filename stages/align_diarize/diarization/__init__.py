"""Who spoke when: pipeline loading and running (`pipelines.py`), the bundled offline pipeline (`bundled.py`, `ge2e.py`),
our engine over pyannote's SpeakerDiarization (`engine.py`, `embeddings.py`, `clustering.py`), the options (`options.py`),
checkpoint loading (`checkpoints.py`), importing pyannote.audio without transformers (`pyannote_import.py`)."""
