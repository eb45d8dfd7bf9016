"""Online sources: the Kaggle bird dataset (via kagglehub) and CUB-200-2011 (HTTPS archive).

Design for a flaky or absent network:

* fail fast offline: one connection attempt with a short timeout (default 5 s), no retry loop, and one
  sentence saying what happened (a DNS failure fails in milliseconds);
* resume: bytes go to ``<archive>.part``; the next run asks the server for the rest with an HTTP ``Range``
  header (and starts over if the server ignores it);
* verify: the finished archive's MD5/SHA-256 must match, else it is deleted and the mismatch reported;
* extract safely (no absolute paths, no ``..``, no links out of the folder) into a temporary folder that is
  renamed into place, so a half-extracted tree is never mistaken for a dataset.

The URLs can be overridden (``url=`` or env ``BIRDLENS_CUB_URL``), which is how the tests serve a small fake
archive from a local ``http.server``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import socket
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from birdlens.utils.atomic import write_json

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
CUB_MD5 = "97eceeb196236b17998738112f37df78"
CUB_ARCHIVE = "CUB_200_2011.tgz"
KAGGLE_BIRDS = "gpiosenka/100-bird-species"
DEFAULT_TIMEOUT = 5.0
CHUNK = 1 << 20
USER_AGENT = "birdlens-downloader"


class DownloadError(RuntimeError):
    """A download could not finish; the message is one sentence saying why and what to do."""


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # "md5" or "sha256"
    hexdigest: str


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _describe(e: BaseException, url: str) -> str:
    host = urllib.parse.urlsplit(url).hostname or url
    if isinstance(e, urllib.error.HTTPError):
        return f"the server answered HTTP {e.code} {e.reason} for {url}"
    reason = getattr(e, "reason", e)
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve {host} (no network or no DNS?)"
    if isinstance(reason, (TimeoutError, socket.timeout)) or isinstance(e, (TimeoutError, socket.timeout)):
        return f"{host} did not answer in time (offline or blocked?)"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection"
    return f"cannot reach {host} ({reason})"


def download_file(
    url: str,
    dest: str | os.PathLike[str],
    checksum: Checksum | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
) -> Path:
    """Download ``url`` to ``dest`` with resume (``dest.part`` + HTTP Range) and checksum verification.

    An already complete ``dest`` with the right checksum is not downloaded again.
    """
    dest = Path(dest)
    if dest.is_file() and (checksum is None or _matches(dest, checksum)):
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": USER_AGENT}
    if have:
        headers["Range"] = f"bytes={have}-"
    req = urllib.request.Request(url, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)  # one attempt, no retry loop
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the .part is complete
            resp = None
        else:
            raise DownloadError(f"download failed: {_describe(e, url)}.") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise DownloadError(f"download failed: {_describe(e, url)}.") from None
    dest.parent.mkdir(parents=True, exist_ok=True)  # only now: an offline attempt leaves nothing behind
    if resp is not None:
        with resp:
            status = getattr(resp, "status", 200)
            resuming = have > 0 and status == 206
            if have and not resuming:
                have = 0  # server ignored Range: start again
            length = resp.headers.get("Content-Length")
            total = (int(length) + have) if length and length.isdigit() else None
            mode = "ab" if resuming else "wb"
            written = have
            try:
                with open(part, mode) as f:
                    for chunk in _iter_chunks(resp, total, have, progress, dest.name):
                        f.write(chunk)
                        written += len(chunk)
            except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:
                raise DownloadError(
                    f"download of {dest.name} interrupted after {written / 1e6:.1f} MB ({_describe(e, url)}): "
                    "run the same command again to resume."
                ) from None
            if total is not None and written < total:
                raise DownloadError(
                    f"download of {dest.name} interrupted after {written / 1e6:.1f} of "
                    f"{total / 1e6:.1f} MB: run the same command again to resume."
                )
    if checksum is not None:
        got = file_digest(part, checksum.algorithm)
        if got != checksum.hexdigest.lower():
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"checksum mismatch for {dest.name}: expected {checksum.algorithm} "
                f"{checksum.hexdigest}, got {got}; the file was deleted, run again to retry."
            )
    os.replace(part, dest)
    return dest


def _matches(path: Path, checksum: Checksum) -> bool:
    return file_digest(path, checksum.algorithm) == checksum.hexdigest.lower()


def _iter_chunks(resp: Any, total: int | None, start: int, progress: bool | None, name: str) -> Any:
    from birdlens.utils.console import is_quiet

    if is_quiet(progress is False):
        while chunk := resp.read(CHUNK):
            yield chunk
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    with Progress(
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("download", total=total, completed=start)
        while chunk := resp.read(CHUNK):
            yield chunk
            bar.advance(task, len(chunk))


def safe_extract(archive: Path, out: Path) -> list[str]:
    """Extract a tar archive into ``out`` refusing members that would escape it; returns top-level names."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=out))
    try:
        try:
            with tarfile.open(archive) as tar:
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, filter="data")
                else:  # pragma: no cover - Python without PEP 706 backport
                    for m in tar.getmembers():
                        target = (tmp / m.name).resolve()
                        if not target.is_relative_to(tmp.resolve()) or m.issym() or m.islnk():
                            raise DownloadError(
                                f"{archive.name} has an unsafe member {m.name!r}: not extracted."
                            )
                    tar.extractall(tmp)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise DownloadError(
                f"cannot extract {archive.name} ({e}): delete it and download again."
            ) from None
        names = sorted(p.name for p in tmp.iterdir())
        for name in names:
            target = out / name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            os.replace(tmp / name, target)
        return names
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_cub200(
    out: str | os.PathLike[str],
    url: str | None = None,
    md5: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool | None = None,
    keep_archive: bool = True,
) -> Path:
    """Download and extract CUB-200-2011 into ``out``; returns the dataset root (``out/CUB_200_2011``).

    ``url``/``md5`` default to the public archive (env ``BIRDLENS_CUB_URL``/``BIRDLENS_CUB_MD5`` override).
    """
    out = Path(out)
    url = url or os.environ.get("BIRDLENS_CUB_URL") or CUB_URL
    md5 = md5 or os.environ.get("BIRDLENS_CUB_MD5") or CUB_MD5
    marker = out / ".birdlens-download.json"
    root = out / "CUB_200_2011"
    if marker.is_file() and (root / "images.txt").is_file():
        return root
    archive = download_file(url, out / CUB_ARCHIVE, Checksum("md5", md5), timeout=timeout, progress=progress)
    names = safe_extract(archive, out)
    if not (root / "images.txt").is_file():
        found = ", ".join(names) or "nothing"
        raise DownloadError(
            f"{archive.name} did not contain CUB_200_2011/images.txt (it held {found}): check the URL."
        )
    write_json(
        marker,
        {
            "source": "cub200",
            "url": url,
            "md5": md5,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return root


def _can_connect(host: str, port: int = 443, timeout: float = DEFAULT_TIMEOUT) -> str | None:
    """None when a TCP connection opens, else a reason; a quick check before a library that retries for minutes."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"cannot resolve {host} (no network or no DNS?)"
    except TimeoutError:
        return f"{host} did not answer in time (offline or blocked?)"
    except OSError as e:
        return f"cannot reach {host} ({e.strerror or e})"


def download_kaggle_birds(
    out: str | os.PathLike[str], handle: str = KAGGLE_BIRDS, timeout: float = DEFAULT_TIMEOUT
) -> Path:
    """Download the Kaggle bird dataset with kagglehub into ``out`` (needs Kaggle credentials for kagglehub)."""
    try:
        import kagglehub
    except ImportError:
        raise DownloadError(
            "kagglehub is not installed: pip install 'birdlens[download]' (or kagglehub)."
        ) from None
    reason = _can_connect(os.environ.get("BIRDLENS_KAGGLE_HOST", "www.kaggle.com"), timeout=timeout)
    if reason:
        raise DownloadError(f"download failed: {reason}.")
    try:
        path = kagglehub.dataset_download(handle, output_dir=str(out))
    except Exception as e:  # kagglehub raises many types (auth, HTTP, missing dataset)
        raise DownloadError(
            f"kagglehub could not download {handle} ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:160] if str(e) else ''}): check your Kaggle credentials "
            "(~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)."
        ) from None
    return Path(path)
