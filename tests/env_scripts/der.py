"""Diarization error rate of a hypothesis RTTM against a reference RTTM, with pyannote.metrics (run inside envs/align_diarize).

Collar 0.25 s in total (pyannote.metrics' `collar` is the whole width around each boundary), overlapping speech counted.

usage: python der.py REFERENCE.rttm HYPOTHESIS.rttm   -> prints {"der": ..., "components": {...}}
"""

import json
import sys

from pyannote.database.util import load_rttm
from pyannote.metrics.diarization import DiarizationErrorRate

reference = next(iter(load_rttm(sys.argv[1]).values()))
hypothesis = next(iter(load_rttm(sys.argv[2]).values()))
metric = DiarizationErrorRate(collar=0.25, skip_overlap=False)
components = metric(reference, hypothesis, detailed=True)
print(json.dumps({"der": components["diarization error rate"], "components": components}))
