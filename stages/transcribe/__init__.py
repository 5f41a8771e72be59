"""Stage 1: transcription with MLX Whisper, in the numpy-2 environment (envs/transcribe)."""
