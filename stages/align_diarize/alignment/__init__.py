"""Word times by wav2vec2 CTC forced alignment: the model (`model.py`), the CTC path (`ctc.py`), segments (`align.py`)."""
