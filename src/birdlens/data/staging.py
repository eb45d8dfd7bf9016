"""The hidden folders ``prepare`` builds its output in, and the clean-up of those an interrupted run left.

Why a module of its own: ``prepare`` names and removes these folders and discovery must refuse to read one
as a dataset (it looks complete but is not), so both sides use the same naming rule from here.

A staging folder is ``.<OUT>.partial-<pid>-<random>`` (the new output being written) or
``.<OUT>.old-<pid>-<random>`` (the replaced output, for the moment of the swap), next to ``OUT``. The pid
tells a stale folder (its process is gone) from one a running ``prepare`` is still writing.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

_KINDS = ("partial", "old")
_NAME = re.compile(r"^\.(?P<out>.+)\.(?P<kind>partial|old)-(?:(?P<pid>\d+)-)?[A-Za-z0-9_]+$")


def make_staging_dir(out: Path, kind: str = "partial") -> Path:
    """Create an empty staging folder for ``out``; ``os.mkdir`` applies the umask (0755 at the usual 022).

    ``tempfile.mkdtemp`` would make it 0700, and the folder becomes the prepared dataset's root.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}")
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = staging_name(out, kind)
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path


def staging_name(out: Path, kind: str = "partial") -> Path:
    """A fresh staging path for ``out`` (not created)."""
    return out.with_name(f".{out.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


def staging_owner(name: str) -> tuple[str, int | None] | None:
    """``(OUT name, pid or None)`` when ``name`` is a staging folder's name, else None."""
    m = _NAME.match(name)
    if m is None:
        return None
    return m["out"], int(m["pid"]) if m["pid"] else None


def is_staging_path(path: Path) -> bool:
    """Whether ``path`` is (inside) a staging folder: an unfinished or replaced ``prepare`` output."""
    return any(staging_owner(part) is not None for part in Path(path).absolute().parts)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another prepare in this process (a thread of the web app) may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # another user's process: not ours to judge
    return True


def clean_stale(out: Path) -> list[str]:
    """Remove the staging folders of ``out`` whose ``prepare`` is gone; the names removed, for the report.

    A name without a pid comes from a birdlens before this rule (``tempfile.mkdtemp``): stale as well.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return removed
    for e in entries:
        owner = staging_owner(e.name)
        if owner is None or owner[0] != out.name or e.is_symlink() or not e.is_dir():
            continue
        pid = owner[1]
        if pid is not None and _alive(pid):
            continue
        shutil.rmtree(e.path, ignore_errors=True)
        if not os.path.exists(e.path):
            removed.append(e.name)
    return sorted(removed)
