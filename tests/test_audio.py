"""Audio decoding: the stdlib path for 16 kHz mono PCM WAV gives exactly what PyAV gives, and other files
(another rate, stereo, compressed) still go through PyAV. Runs in stage 1's env (numpy, PyAV)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from orchestrator import runtime
from shared.contract import Transcript
from shared.io import load_document

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys, wave
from pathlib import Path
import numpy as np
from stages.common import audio

sample, work = Path(sys.argv[1]), Path(sys.argv[2])
direct = audio.read_pcm_wav(sample)
pyav = audio._decode_with_pyav(sample)
through_pyav, rate, channels = pyav.samples, pyav.source_rate, pyav.source_channels
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


TRUNCATION_PROBE = r"""
import json, sys, wave
from pathlib import Path
import numpy as np
from shared.errors import StageError
from stages.common import audio

sample, work = Path(sys.argv[1]), Path(sys.argv[2])
with wave.open(str(sample)) as reader:
    pcm = np.frombuffer(reader.readframes(reader.getnframes()), "<i2")
stereo = work / "stereo.wav"  # another rate and 2 channels: PyAV's path, whose WAV demuxer hides a short data chunk
with wave.open(str(stereo), "wb") as writer:
    writer.setnchannels(2); writer.setsampwidth(2); writer.setframerate(22050)
    writer.writeframes(np.repeat(pcm[::2], 2).tobytes())
streamed = work / "streamed.wav"  # a streamed WAV: data size 0xFFFFFFFF means "unknown", not 4 GB
data = bytearray(sample.read_bytes())
at = data.index(b"data") + 4
data[at : at + 4] = (0xFFFFFFFF).to_bytes(4, "little")
streamed.write_bytes(bytes(data[: at + 4 + 200_000]))
zero = work / "zero.wav"  # data size 0, also "unknown" to some streamed writers: the stdlib reads none of it, PyAV all
data[at : at + 4] = (0).to_bytes(4, "little")
zero.write_bytes(bytes(data))

def outcome(path, **kwargs):
    try:
        decoded = audio.decode_audio(path, **kwargs)
        return {"duration": decoded.info.duration, "warnings": decoded.info.warnings}
    except StageError as error:
        return {"exit": int(error.exit_code), "message": error.message}

report = {}
for name, size in (("cut.wav", 3000), ("cut_stereo.wav", 300_000)):
    source = sample if name == "cut.wav" else stereo
    (work / name).write_bytes(source.read_bytes()[:size])
    report[name] = outcome(work / name)
    report[name + " allowed"] = outcome(work / name, allow_truncated=True)
report["streamed"] = outcome(streamed)
report["zero"] = outcome(zero)
report["whole"] = outcome(sample)
print(json.dumps(report))
"""


def test_truncated_audio_is_refused_unless_allowed_with_a_warning(transcribe_python: Path, sample_wav: Path, tmp_path: Path) -> None:
    env = runtime.stage_environment("transcribe", threads=1)
    args = [str(transcribe_python), "-c", TRUNCATION_PROBE, str(sample_wav), str(tmp_path)]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cut.wav"]["exit"] == 3, report
    assert "header says 30.0 s, file holds 0.09 s" in report["cut.wav"]["message"] and "--allow_truncated" in report["cut.wav"]["message"]
    assert report["cut_stereo.wav"]["exit"] == 3 and "header says 10.9 s" in report["cut_stereo.wav"]["message"], report
    for name, declared in (("cut.wav allowed", "30.0"), ("cut_stereo.wav allowed", "10.9")):
        assert report[name]["duration"] < 5 and f"header says {declared} s" in report[name]["warnings"][0], report
    assert report["streamed"] == {"duration": 6.25, "warnings": None}, report  # unknown length: what is there, no complaint
    assert report["whole"] == {"duration": 30.0, "warnings": None}
    assert report["zero"] == {"duration": 30.0, "warnings": None}, report


def test_transcribe_refuses_a_cut_wav_in_one_line_and_allow_truncated_records_it(tmp_path: Path, sample_wav: Path) -> None:
    cut = tmp_path / "cut.wav"
    cut.write_bytes(sample_wav.read_bytes()[:3000])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "250"}
    base = ["stagewhisper", "transcribe", str(cut), "--model", "bundled-tiny.en", "--output_format", "json", "-o", str(tmp_path / "out")]
    refused = subprocess.run(base, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 3, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cut.wav" in errors[0] and "header says 30.0 s, file holds 0.09 s" in errors[0], refused.stderr
    assert not (tmp_path / "out" / "cut.transcript.json").exists()
    allowed = subprocess.run([*base, "--allow_truncated"], capture_output=True, text=True, env=env, timeout=300)
    assert allowed.returncode == 0, allowed.stderr
    transcript = load_document(tmp_path / "out" / "cut.transcript.json", Transcript)
    assert transcript.audio.warnings and "header says 30.0 s" in transcript.audio.warnings[0]
