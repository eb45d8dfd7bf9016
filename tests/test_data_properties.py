"""Property-based tests of the data layer (hypothesis): on any tree of files, ``inspect`` and ``prepare``
never raise, never hang, keep every good image, and name every other image-named file with a reason.

Trees mix good images with empty and corrupt files, FIFOs, links to ``/dev/zero``, dangling and looping
links, directories named like images, files made unreadable, ignored names (hidden, non-image), empty and
locked class folders, and names with unicode, spaces and shell metacharacters. Derandomised (the same
examples on every run, so CI is reproducible) and kept small: the whole file runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from _data_helpers import jpeg_bytes, noise_image
from birdlens.data.cli import data_app
from birdlens.data.images import is_ignored_name, is_image_candidate
from birdlens.data.layouts import SPLIT_DIR_NAMES, LayoutError
from birdlens.data.manifest import normalise_label
from birdlens.data.prepare import class_folders, prepare_dataset
from birdlens.data.report import DataUnusable, scan_data

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs, links and /dev/zero")

DEADLINE_S = 30.0  # per call; a healthy call on these trees takes well under a second
T = TypeVar("T")

GOOD = "good"
BAD_KINDS = ("empty", "corrupt", "text", "fifo", "devzero", "dangling", "loop", "dir")
KINDS = (GOOD,) * 6 + ("link-good", "unreadable", *BAD_KINDS, "junk", "hidden", "junk-fifo")
ODD = " $;|&*?'\"`<>(){}[]!#~=%^,+@-_.éßü中鳥🐦\t"
_name_chars = st.one_of(st.sampled_from(ODD), st.characters(codec="utf-8", exclude_characters="/\x00"))


def _stem() -> st.SearchStrategy[str]:
    return st.text(_name_chars, min_size=1, max_size=10).filter(
        lambda s: s.strip() and not s.startswith((".", "~$")) and "\n" not in s and "\r" not in s
    )


def _class_name() -> st.SearchStrategy[str]:
    return _stem().filter(
        lambda s: (
            normalise_label(s)
            and s.strip().lower() not in SPLIT_DIR_NAMES
            and not is_image_candidate(s)
            and not is_ignored_name(s)
            and len(s.encode()) < 100
        )
    )


@st.composite
def trees(draw: st.DrawFn, min_classes: int = 1) -> dict[str, Any]:
    n_classes = draw(st.integers(min_classes, 4))
    names = draw(st.lists(_class_name(), min_size=n_classes, max_size=n_classes, unique_by=str.casefold))
    classes = []
    for name in names:
        entries = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(KINDS), _stem(), st.sampled_from([".jpg", ".PNG", ".jpeg", ".png"])
                ),
                min_size=0 if draw(st.integers(0, 7)) == 0 else 1,  # some empty class folders, not most
                max_size=6,
                unique_by=lambda e: (e[1] + e[2]).casefold(),
            )
        )
        classes.append({"name": name, "entries": entries, "locked": draw(st.integers(0, 9)) == 0})
    layout = draw(st.sampled_from(["class-folders", "split-folders", "csv"]))
    return {"classes": classes, "layout": layout, "root_loop": draw(st.booleans()) and layout != "csv"}


@dataclass
class Built:
    root: Path
    source: Path  # what is scanned: the root folder, or the CSV in it
    good: set[str] = field(default_factory=set)  # display paths (relative to root) that must be kept
    bad: set[str] = field(default_factory=set)  # display paths that must be skipped with a reason
    folders: set[str] = field(default_factory=set)  # class folders that must be reported as skipped
    ignored: set[str] = field(default_factory=set)  # display paths that must be neither kept nor skipped
    locked: list[Path] = field(default_factory=list)


def _build(spec: dict[str, Any], base: Path) -> Built:
    root = base / "data"
    outside = base / "outside"
    outside.mkdir()
    csv_rows: list[list[str]] = []
    b = Built(root, root / "list.csv" if spec["layout"] == "csv" else root)
    top = "train/" if spec["layout"] == "split-folders" else ""
    seed = 0
    for c in spec["classes"]:
        rel_dir = top + c["name"]
        d = root / rel_dir
        d.mkdir(parents=True)
        candidates: set[str] = set()
        for kind, stem, ext in c["entries"]:
            seed += 1
            ignored = kind in ("junk", "hidden", "junk-fifo")
            name = f".{stem}{ext}" if kind == "hidden" else f"{stem}.txt" if ignored else stem + ext
            p, rel = d / name, f"{rel_dir}/{name}"
            _make(kind, p, seed, outside)
            if ignored:
                b.ignored.add(rel)
                continue
            candidates.add(rel)
            csv_rows.append([rel, c["name"]])
            readable = kind != "unreadable" or os.access(p, os.R_OK)  # root reads a 000 file
            (b.good if kind in (GOOD, "link-good", "unreadable") and readable else b.bad).add(rel)
        if c["locked"]:
            d.chmod(0)
            b.locked.append(d)
            if not os.access(d, os.R_OK | os.X_OK):  # not root: nothing inside can be seen or opened
                b.good -= candidates
                if spec["layout"] == "csv":
                    b.bad |= candidates  # each row is reported (permission denied)
                else:
                    b.bad -= candidates  # the folder is reported instead
                    candidates = set()
        if not candidates and spec["layout"] != "csv":
            b.folders.add(rel_dir + "/")
    if spec["layout"] == "csv":
        with open(b.source, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([["path", "label"], *csv_rows])
    if spec["root_loop"]:
        os.symlink(root / top, root / top / "loop")
        b.folders.add(top + "loop/")
    return b


def _make(kind: str, p: Path, seed: int, outside: Path) -> None:
    if kind in (GOOD, "unreadable"):
        buf = io.BytesIO()
        noise_image(seed, (40 + seed % 30, 36 + seed % 20)).save(buf, "PNG" if seed % 2 else "JPEG")
        p.write_bytes(buf.getvalue())
        if kind == "unreadable":
            p.chmod(0)
    elif kind == "link-good":
        target = outside / f"{seed}.jpg"
        target.write_bytes(jpeg_bytes(seed, (48, 40)))
        os.symlink(target, p)
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "corrupt":
        p.write_bytes(jpeg_bytes(seed)[:150])
    elif kind in ("text", "junk", "hidden"):
        p.write_text("not a picture\n")
    elif kind in ("fifo", "junk-fifo"):
        os.mkfifo(p)
    elif kind == "devzero":
        os.symlink("/dev/zero", p)
    elif kind == "dangling":
        os.symlink(p.with_name("nowhere-" + p.name), p)
    elif kind == "loop":
        os.symlink(p.name, p)
    elif kind == "dir":
        p.mkdir()
    else:  # pragma: no cover - a kind added to KINDS without a maker
        raise AssertionError(kind)


@contextlib.contextmanager
def _tree(spec: dict[str, Any]):
    with tempfile.TemporaryDirectory(prefix="birdlens-prop-") as tmp:
        built = _build(spec, Path(tmp))
        try:
            yield built
        finally:
            for d in built.locked:
                d.chmod(0o755)


def _within(fn: Callable[[], T], what: str) -> T:
    """Run ``fn`` in a daemon thread; fail (instead of hanging the suite) when it outlives the deadline."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the test thread, which re-raises it
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(DEADLINE_S)
    if t.is_alive():
        pytest.fail(f"{what} did not finish within {DEADLINE_S:.0f} s (hung on a special file?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


PROPERTY_SETTINGS = settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _check_scan(b: Built) -> Any:
    try:
        scan = _within(lambda: scan_data(b.source, near_threshold=None, progress=False), "scan_data")
    except LayoutError as e:
        assert not b.good, f"layout refused although good images exist: {e}"
        return None
    kept = {r.path.relative_to(b.root).as_posix() for r in scan.manifest}
    reasons = {s.path: s.reason for s in scan.skipped}
    assert kept == b.good
    assert b.bad <= set(reasons), f"bad files not reported: {b.bad - set(reasons)}"
    assert b.folders <= set(reasons), f"empty folders not reported: {b.folders - set(reasons)}"
    assert set(reasons) <= b.bad | b.folders, f"reported but not bad: {set(reasons) - b.bad - b.folders}"
    assert all(r.strip() for r in reasons.values())
    assert not b.ignored & (kept | set(reasons))
    for rec in scan.manifest:
        assert rec.label == normalise_label(rec.path.parent.name)
    return scan


@PROPERTY_SETTINGS
@given(spec=trees())
def test_inspect_keeps_every_good_image_and_names_every_other_file(spec: dict[str, Any]) -> None:
    with _tree(spec) as b:
        _check_scan(b)
        report = b.root.parent / "report.json"
        res = _within(
            lambda: CliRunner().invoke(
                data_app, ["inspect", str(b.source), "--json", str(report), "--quiet"]
            ),
            "birdlens data inspect",
        )
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
        assert res.exit_code in (0, 2) and "Traceback" not in res.output
        if res.exit_code == 2:  # a user-facing refusal: one line saying why
            assert res.output.strip().splitlines()[-1].startswith("error: ")


@PROPERTY_SETTINGS
@given(spec=trees(min_classes=2))
def test_prepare_writes_every_good_image_or_says_why_not(spec: dict[str, Any]) -> None:
    with _tree(spec) as b:
        scan = _check_scan(b)
        out = b.root.parent / "prepared"
        try:
            res = _within(
                lambda: prepare_dataset(b.source, out, size=32, near_threshold=None, progress=False),
                "prepare_dataset",
            )
        except (LayoutError, DataUnusable) as e:
            assert "\n" not in str(e)
            clash = False
            if scan is not None:
                try:
                    class_folders(scan.manifest.classes)
                except DataUnusable:
                    clash = True
            assert scan is None or scan.problem() is not None or clash, f"refused a usable dataset: {e}"
            assert not out.exists() and not list(out.parent.glob(".prepared.*"))
            event("prepare refused the data")
            return
        event("prepare wrote a dataset")
        rep = res.report
        assert rep["prepared"]["n_written"] == len(b.good) == len(res.manifest)
        assert rep["prepared"]["failed"] == []
        assert b.bad <= {s["path"] for s in rep["skipped"]}
        written = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in (".jpg", ".png"))
        assert len(written) == len(b.good)
        assert all(stat.S_ISREG(p.lstat().st_mode) and p.resolve().is_relative_to(out) for p in written)
        again = scan_data(out, near_threshold=None, progress=False)
        assert len(again.manifest) == len(b.good) and again.skipped == []
        assert not list(out.parent.glob(".prepared.*"))
