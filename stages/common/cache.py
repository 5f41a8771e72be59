"""The stages' cache folder and file hashing, remembered by (path, size, mtime) so big files hash once."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from shared.io import file_sha256


def cache_root() -> Path:
    """$STAGEWHISPER_CACHE, else $XDG_CACHE_HOME/stagewhisper, else ~/.cache/stagewhisper."""
    if os.environ.get("STAGEWHISPER_CACHE"):
        return Path(os.environ["STAGEWHISPER_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "stagewhisper"


def memoized_sha256(path: Path, memo_dir: Path | None = None) -> str:
    """file_sha256, kept in memo_dir keyed by the file's identity; a memo we cannot write only costs a rehash."""
    path = Path(path).resolve()
    stat = path.stat()
    key = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()
    memo = (memo_dir or cache_root() / "hashes") / key
    try:
        return memo.read_text(encoding="utf-8").strip()
    except OSError:
        pass
    digest = file_sha256(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        temp = memo.with_suffix(f".tmp{os.getpid()}")
        temp.write_text(digest, encoding="utf-8")
        os.replace(temp, memo)
    except OSError:
        pass
    return digest
