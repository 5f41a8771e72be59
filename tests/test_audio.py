"""Audio decoding: the stdlib path for 16 kHz mono PCM WAV gives exactly what PyAV gives, and other files
(another rate, stereo, compressed) still go through PyAV. Runs in stage 1's env (numpy, PyAV)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from orchestrator import runtime

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, wave
from pathlib import Path
import numpy as np
from stages.common import audio

sample, work = Path(sys.argv[1]), Path(sys.argv[2])
direct = audio.read_pcm_wav(sample)
through_pyav, rate, channels = audio._decode_with_pyav(sample)
with wave.open(str(sample)) as reader:
    pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
stereo = work / "stereo.wav"  # the sample twice, as 2 channels: FFmpeg downmixes them, (L + R) / sqrt 2
with wave.open(str(stereo), "wb") as writer:
    writer.setnchannels(2); writer.setsampwidth(2); writer.setframerate(16000)
    writer.writeframes(np.repeat(pcm, 2).tobytes())
decoded = audio.decode_audio(stereo)
print(json.dumps({
    "equal": bool(np.array_equal(direct, through_pyav)), "dtype": str(direct.dtype), "length": int(direct.size),
    "pyav_source": [rate, channels], "stereo_direct": audio.read_pcm_wav(stereo) is None,
    "stereo_info": [decoded.info.sample_rate, decoded.info.channels],
    "resolved_path": decoded.info.resolved_path == str(stereo.resolve()) and decoded.info.path == str(stereo),
    "stereo_close": float(np.abs(decoded.samples - direct * np.sqrt(2)).max()),
    "not_wav": audio.read_pcm_wav(Path(sys.argv[3])) is None,
}))
"""


def test_plain_wav_is_read_directly_and_equals_pyav(transcribe_python: Path, sample_wav: Path, tmp_path: Path) -> None:
    not_wav = tmp_path / "notes.txt"
    not_wav.write_text("not audio")
    env = runtime.stage_environment("transcribe", threads=1)
    args = [str(transcribe_python), "-c", PROBE, str(sample_wav), str(tmp_path), str(not_wav)]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["equal"] and result["dtype"] == "float32" and result["length"] == 480_000
    assert result["pyav_source"] == [16000, 1]
    assert result["stereo_direct"] and result["stereo_info"] == [16000, 2] and result["stereo_close"] < 1e-3
    assert result["resolved_path"]  # the path as typed, and the absolute one stage 2 finds the audio by
    assert result["not_wav"]
