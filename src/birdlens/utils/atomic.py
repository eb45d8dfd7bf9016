"""Atomic file writes: a crash or Ctrl-C never leaves a half-written checkpoint or report.

Everything is written to a temporary file in the destination folder and moved over the target with
``os.replace`` (atomic on POSIX and Windows when source and target are on the same filesystem). Before the
rename the file gets the mode an ordinary ``open()`` would give (``0666 & ~umask``), because ``mkstemp``
creates it 0600 and the rename keeps that: results shared with a group or a web server must stay readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()

TEMP_PREFIX = "."  # temp files are hidden: a write killed before its rename leaves ``.TARGET.XXXX`` behind


def is_leftover(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` may be a temp file of :func:`atomic_path` (empty or partial if its write was killed).

    Why: ``Path.glob("*")`` matches hidden files, so a folder globbed for outputs must skip these itself.
    """
    return Path(path).name.startswith(TEMP_PREFIX)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``).

    Why: ``os.umask`` can only be read by setting it, which races with files other threads create meanwhile.
    """
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file now: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on normal exit move it over ``target``.

    On an exception the temporary file is removed and ``target`` is left untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{TEMP_PREFIX}{target.name}.", suffix=suffix or ".tmp", dir=target.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # at the end, not at creation: a writer may replace the temp file with its own (safetensors does)
        os.chmod(tmp_path, default_file_mode())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes(target: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(target)


def write_text(target: str | os.PathLike[str], text: str) -> Path:
    return write_bytes(target, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays and paths show up everywhere in metrics; serialise them plainly.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def write_json(target: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    return write_text(
        target, json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False) + "\n"
    )
