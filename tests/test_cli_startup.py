"""``birdlens --help`` answers without importing torch: a CLI's start-up is paid on every call, and torch alone
takes seconds to import on a small CPU; each command imports what it needs when it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def test_building_the_cli_does_not_import_torch() -> None:
    code = "import sys, birdlens.cli; print(sorted(m for m in ('torch', 'timm', 'matplotlib') if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
