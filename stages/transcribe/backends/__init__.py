"""Decoding backends for the batched pipeline (MLX, CTranslate2), the protocol they implement, and choosing/loading one.

A backend encodes audio windows and generates tokens; everything else is the pipeline's. Backends import models
(resolution, conversion, tokenizer), never the pipeline.
"""
