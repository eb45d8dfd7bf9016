"""Issue 26 (1): special files (devices, FIFOs, links to them) are named and skipped, never read or waited on.

The scan runs in a child process under a memory cap and a deadline: on a data layer that reads ``/dev/zero``
or opens a FIFO, the child fails or is killed instead of filling this machine's memory or hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from _data_helpers import make_split_tree

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs and /dev/zero")

_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # reading /dev/zero whole dies here
    from birdlens.data.report import scan_data
    scan = scan_data(sys.argv[1], near_threshold=None, progress=False)
    print(json.dumps({"kept": len(scan.manifest), "skipped": [s.to_dict() for s in scan.skipped]}))
    """
)


def _scan_in_child(source: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "BIRDLENS_QUIET": "1"}
    try:
        res = subprocess.run(
            [sys.executable, "-c", _CHILD, str(source)], capture_output=True, text=True, timeout=90, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"scanning {source} did not finish in 90 s (a special file was waited on)")
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_fifo_and_device_links_in_class_folders_are_skipped_with_a_reason(tmp_path: Path) -> None:
    root = make_split_tree(
        tmp_path / "ds", {"A": {"train": 2, "valid": 1, "test": 1}, "B": {"train": 2, "valid": 1, "test": 1}}
    )
    os.mkfifo(root / "train" / "A" / "pipe.jpg")
    os.symlink("/dev/zero", root / "train" / "B" / "zero.jpg")
    out = _scan_in_child(root)
    reasons = {s["path"]: s["reason"] for s in out["skipped"]}
    assert out["kept"] == 8
    assert reasons == {
        "train/A/pipe.jpg": "not a regular file (FIFO, a named pipe; only regular files are read)",
        "train/B/zero.jpg": "not a regular file (character device; only regular files are read)",
    }


def test_csv_row_naming_a_device_is_skipped_with_a_reason(tmp_path: Path) -> None:
    root = make_split_tree(
        tmp_path / "ds", {"A": {"train": 2, "valid": 1, "test": 1}, "B": {"train": 2, "valid": 1, "test": 1}}
    )
    rows = ["path,label,split"]
    rows += [
        f"{p.relative_to(root).as_posix()},{p.parent.name},{p.parts[-3]}" for p in root.glob("*/*/*.jpg")
    ]
    rows.append("/dev/zero,BIRD,train")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    out = _scan_in_child(root / "list.csv")
    assert out["kept"] == 8
    assert out["skipped"] == [
        {"path": "/dev/zero", "reason": "not a regular file (character device; only regular files are read)"}
    ]
