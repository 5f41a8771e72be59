"""Stage 1's pipeline: options, the batched run (VAD chunks, language, decoding, segments) and mlx_whisper's sequential one.

Imports go one way: pipeline -> backends -> models; vad stands alone. Modules here import each other downward too:
transcribe -> batched_run | sequential -> language | segments -> batched -> words -> decoded, options.
"""
