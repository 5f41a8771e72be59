"""Whisper models: resolving --model to a folder (bundled, HF repo id, MLX or CTranslate2), CT2 -> MLX conversion,
loading, and the text tokenizer. Imports nothing of the pipeline or the backends."""
