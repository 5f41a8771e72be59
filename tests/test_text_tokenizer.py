"""Stage 1's tokenizer wrapper gives mlx_whisper's tokens (suppress list, prompts) and treats token markup in user
text as text. Runs in stage 1's env (mlx_whisper, tiktoken)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from orchestrator import runtime

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json
from mlx_whisper.tokenizer import Tokenizer, get_encoding
from stages.transcribe.models.text_tokenizer import get_tokenizer

ours = get_tokenizer(False, num_languages=99)
plain = Tokenizer(encoding=get_encoding("gpt2", num_languages=99), num_languages=99)  # mlx_whisper's, unwrapped
texts = [" Hello, world.", " New Jersey -- (laughs) ♪", " 42 numbers 3.5"]
print(json.dumps({
    "same_suppress": list(ours.non_speech_tokens) == list(plain.non_speech_tokens),
    "same_text": [ours.encode(t) == plain.encode(t) for t in texts],
    "markup_as_text": ours.encode(" <|endoftext|>") == plain.encoding.encode_ordinary(" <|endoftext|>"),
    "same_instance": get_tokenizer(False, num_languages=99) is ours,
    "decodes": ours.decode(ours.encode(" Hello, world.")),
}))
"""


def test_wrapped_tokenizer_gives_mlx_whispers_tokens(transcribe_python: Path) -> None:
    env = runtime.stage_environment("transcribe", threads=1)
    done = subprocess.run([str(transcribe_python), "-c", PROBE], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"same_suppress": True, "same_text": [True, True, True], "markup_as_text": True, "same_instance": True,
                      "decodes": " Hello, world."}  # fmt: skip
