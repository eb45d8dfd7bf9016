"""Every ``birdlens.x.y`` name in the source and the docs names something that exists: after modules move, a
docstring or help text that points to the old place sends the reader nowhere."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOTTED = re.compile(r"\bbirdlens(?:\.[A-Za-z_]\w*)+")
FILE_NAMES = re.compile(r"\.(?:py|ya?ml|json|md|toml|csv|safetensors)$")


def _resolves(name: str) -> bool:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_every_dotted_birdlens_name_in_src_and_docs_exists() -> None:
    files = [*(ROOT / "src").rglob("*.py"), *(ROOT / "docs").rglob("*.md")]
    names = {
        (m, str(p.relative_to(ROOT)))
        for p in files
        for m in DOTTED.findall(p.read_text(encoding="utf-8"))
        if not FILE_NAMES.search(m)
    }
    missing = sorted((where, name) for name, where in names if not _resolves(name))
    assert missing == []
