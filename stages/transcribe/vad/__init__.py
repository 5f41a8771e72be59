"""Voice-activity detection and chunking: options, silero (ONNX), WhisperX's pyannote VAD (ONNX), chunks for Whisper.

Independent of the rest of stage 1: options <- silero, pyannote <- chunking.
"""
