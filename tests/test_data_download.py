"""Downloads against a local http.server on 127.0.0.1 (never the internet): resume, checksum, fail fast."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import tarfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from _data_helpers import make_cub
from birdlens.data.download import (
    Checksum,
    DownloadError,
    download_cub200,
    download_file,
    download_kaggle_birds,
)
from birdlens.data.layouts import discover


class _State:
    def __init__(self) -> None:
        self.payload = b""
        self.cut_after: int | None = None  # close the connection after this many bytes, once
        self.ranges: list[str | None] = []
        self.honor_range = True


def _handler(state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            data = state.payload
            rng = self.headers.get("Range")
            state.ranges.append(rng)
            start = 0
            if rng and rng.startswith("bytes=") and state.honor_range:
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                cut, state.cut_after = state.cut_after, None
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)  # the line drops mid-transfer
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, _State]]:
    state = _State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/CUB_200_2011.tgz", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _fake_cub_archive(tmp: Path) -> bytes:
    root = make_cub(tmp / "build" / "CUB_200_2011", n_per_class=3)
    (root / "padding.bin").write_bytes(os.urandom(300_000))  # big enough to interrupt in the middle
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(root, arcname="CUB_200_2011")
        info = tarfile.TarInfo("attributes.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"1 x"))
    return buf.getvalue()


def test_cub_download_resumes_after_an_interruption(tmp_path: Path, server: tuple[str, _State]) -> None:
    url, state = server
    state.payload = _fake_cub_archive(tmp_path)
    md5 = hashlib.md5(state.payload).hexdigest()
    state.cut_after = 120_000
    with pytest.raises(
        DownloadError, match=r"interrupted after 0\.1 of 0\.3 MB: run the same command again to resume\.$"
    ):
        download_cub200(tmp_path / "out", url=url, md5=md5, progress=False)
    part = tmp_path / "out" / "CUB_200_2011.tgz.part"
    assert part.stat().st_size == 120_000
    root = download_cub200(tmp_path / "out", url=url, md5=md5, progress=False)
    assert state.ranges == [None, "bytes=120000-"]  # the second request asked only for the rest
    assert (
        not part.exists()
        and hashlib.md5((tmp_path / "out" / "CUB_200_2011.tgz").read_bytes()).hexdigest() == md5
    )
    d = discover(tmp_path / "out")
    assert root.name == "CUB_200_2011" and d.layout == "cub" and len(d.manifest) == 6
    # already there: nothing is fetched again
    download_cub200(tmp_path / "out", url=url, md5=md5, progress=False)
    assert len(state.ranges) == 2


def test_checksum_mismatch_is_reported_and_the_file_removed(
    tmp_path: Path, server: tuple[str, _State]
) -> None:
    url, state = server
    state.payload = b"not the real archive" * 100
    with pytest.raises(DownloadError, match=r"checksum mismatch.*expected md5 0{32}"):
        download_cub200(tmp_path / "out", url=url, md5="0" * 32, progress=False)
    assert not list((tmp_path / "out").glob("CUB_200_2011.tgz*"))
    # the same through the CLI: exit code 2 and the sentence, no traceback
    from typer.testing import CliRunner

    from birdlens.data.cli import data_app

    res = CliRunner().invoke(
        data_app,
        ["download", "cub200", "--out", str(tmp_path / "cli"), "--url", url, "--md5", "0" * 32, "--quiet"],
    )
    assert res.exit_code == 2 and "checksum mismatch" in res.output and "Traceback" not in res.output


def test_stale_part_file_restart_or_checksum(tmp_path: Path, server: tuple[str, _State]) -> None:
    url, state = server
    state.payload = os.urandom(5000)
    stale = b"stale bytes from another download"
    # a server that ignores Range answers 200: the download starts over instead of appending
    state.honor_range = False
    (tmp_path / "f.bin.part").write_bytes(stale)
    assert download_file(url, tmp_path / "f.bin", progress=False).read_bytes() == state.payload
    assert state.ranges == [f"bytes={len(stale)}-"]
    # a server that honours Range appends to the stale part: the checksum catches it, and a re-run succeeds
    state.honor_range = True
    (tmp_path / "g.bin.part").write_bytes(stale)
    good = Checksum("sha256", hashlib.sha256(state.payload).hexdigest())
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_file(url, tmp_path / "g.bin", good, progress=False)
    assert download_file(url, tmp_path / "g.bin", good, progress=False).read_bytes() == state.payload


def test_offline_fails_fast_with_one_sentence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Wall-clock bounds here are generous guards against a retry loop (a minute of retries), not speed checks.
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(DownloadError) as e:
        download_cub200(tmp_path / "out", url=f"http://127.0.0.1:{port}/x.tgz", progress=False)
    assert time.perf_counter() - t0 < 20
    assert str(e.value).startswith("download failed: 127.0.0.1 refused the connection") and "\n" not in str(
        e.value
    )

    # a server that accepts but never answers: the short timeout ends it after exactly one attempt
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                accepted.append(silent.accept()[0])

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(DownloadError, match="did not answer in time"):
            download_file(
                f"http://127.0.0.1:{silent.getsockname()[1]}/x", tmp_path / "x", timeout=0.5, progress=False
            )
        assert time.perf_counter() - t0 < 20
        deadline = time.perf_counter() + 5  # let the accept thread catch up with every queued connection
        while time.perf_counter() < deadline and not accepted:
            time.sleep(0.05)
        time.sleep(0.3)
        assert len(accepted) == 1  # one attempt, no retry loop
    finally:
        stop.set()
        t.join()
        for c in accepted:
            c.close()
        silent.close()

    # Kaggle: a quick connectivity probe fails before kagglehub's own retries could start
    monkeypatch.setenv("BIRDLENS_KAGGLE_HOST", "127.0.0.1")
    t0 = time.perf_counter()
    with pytest.raises(DownloadError, match=r"cannot reach 127\.0\.0\.1"):
        download_kaggle_birds(tmp_path / "k", timeout=1)
    assert time.perf_counter() - t0 < 20
