"""Verified, resumable downloads and safe archive extraction for the public datasets.

- :func:`fetch` gets one file from its publisher's HTTPS address (or a ``--mirror``: a local
  folder or an HTTP(S) base address holding files of the same names). An interrupted transfer
  resumes from its ``.part`` file with an HTTP Range request, both within a run (``retries``)
  and on the next run. The result is checked against the size and checksum the publisher gives
  (or that are pinned in the config); when none is known, the ones seen on the first download
  are recorded in ``<dest>/checksums.json`` and every later copy must match them. A file that
  fails a check is deleted and never used. A valid file already present is not fetched again.
- :func:`safe_extract` checks every member of a zip or tar archive before writing anything:
  no absolute paths, no ``..``, no links that point outside the target, no device files. It
  extracts into a temporary folder renamed onto the target, so a target is complete or absent.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import stat
import tarfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from src.utils.cache import recorded
from src.utils.io import file_stamp, write_json

log = logging.getLogger(__name__)
CHUNK = 1 << 20
MIRROR_HINT = "on a machine without internet, put {name} in a folder or on an HTTP server and pass --mirror DIR_OR_URL"


class DownloadError(RuntimeError):
    """A file could not be fetched; the message names the address and the --mirror option."""


class ChecksumError(DownloadError):
    """A fetched file has the wrong size or checksum; it has been deleted."""


class UnsafeArchiveError(DownloadError):
    """An archive member would land outside the target folder; nothing was extracted."""


@dataclass
class RemoteFile:
    """A file as its publisher serves it. Empty size/sha256/md5: recorded on the first download."""

    url: str
    filename: str = ""  # default: the last part of the URL
    size: int = 0
    sha256: str = ""
    md5: str = ""

    def __post_init__(self) -> None:
        if not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url must be an http(s) address, got {self.url!r}")
        self.filename = self.filename or self.url.rstrip("/").rsplit("/", 1)[-1]
        if "/" in self.filename or self.filename.startswith("."):
            raise ValueError(f"filename must be a plain file name, got {self.filename!r}")


def file_digests(path: Path) -> dict[str, Any]:
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            sha.update(block)
            md5.update(block)
    return {"size": path.stat().st_size, "sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _records(dest: Path) -> dict[str, dict[str, Any]]:
    path = dest / "checksums.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def expected_digests(remote: RemoteFile, dest: Path) -> tuple[dict[str, Any], str]:
    """What the file must match, and where that came from (config or the first download)."""
    pinned = {k: v for k, v in (("size", remote.size), ("sha256", remote.sha256), ("md5", remote.md5)) if v}
    if pinned.get("sha256") or pinned.get("md5"):
        return pinned, "published/pinned"
    rec = _records(dest).get(remote.filename)
    if rec:
        return {**{k: rec[k] for k in ("size", "sha256")}, **pinned}, f"recorded on first download ({rec['date']})"
    return pinned, "none yet"


def verify(path: Path, expected: dict[str, Any]) -> str:
    """'' when ``path`` matches every expected digest, else what differs."""
    if "size" in expected and path.stat().st_size != expected["size"]:
        return f"size {path.stat().st_size} bytes, expected {expected['size']}"
    if not ({"sha256", "md5"} & expected.keys()):
        return ""
    got = file_digests(path)
    for key in ("sha256", "md5"):
        if key in expected and got[key] != expected[key].lower():
            return f"{key} {got[key]}, expected {expected[key]}"
    return ""


def source_of(remote: RemoteFile, mirror: str) -> str:
    if not mirror:
        return remote.url
    if mirror.startswith(("http://", "https://")):
        return f"{mirror.rstrip('/')}/{remote.filename}"
    return str(Path(mirror) / remote.filename)


def fetch(remote: RemoteFile, dest: str | Path, mirror: str = "", retries: int = 3, timeout: float = 60.0) -> Path:
    """Download (or copy from ``mirror``) one file into ``dest``; verified; resumable; idempotent."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / remote.filename
    expected, origin = expected_digests(remote, dest)
    if path.is_file() and not (problem := verify(path, expected)):
        log.info("%s present and valid (checksum %s)", path, origin)
    else:
        if path.is_file():
            log.warning("%s: %s; fetching it again", path, problem)
            path.unlink()
        src = source_of(remote, mirror)
        part = path.with_name(path.name + ".part")
        if src.startswith(("http://", "https://")):
            _http_download(src, part, retries, timeout, remote.filename)
        else:
            if not Path(src).is_file():
                raise DownloadError(f"--mirror {mirror}: {src} not found (the mirror must hold {remote.filename})")
            shutil.copyfile(src, part)
        if problem := verify(part, expected):
            part.unlink()
            raise ChecksumError(f"{src}: {problem} (checksum {origin}); the file was deleted and is not used")
        os.replace(part, path)
    if origin == "none yet":  # the first copy: record what we got, so later copies must match it
        got = file_digests(path)
        recs = _records(dest)
        recs[remote.filename] = {
            "url": remote.url,
            "size": got["size"],
            "sha256": got["sha256"],
            "date": time.strftime("%Y-%m-%d"),
        }
        write_json(dest / "checksums.json", recs)
        log.info("recorded %s: %d bytes, sha256 %s", remote.filename, got["size"], got["sha256"])
    return path


def _http_download(url: str, part: Path, retries: int, timeout: float, name: str) -> None:
    """Fill ``part`` from ``url``, resuming from its current length (HTTP Range)."""
    attempt = 0
    while True:
        have = part.stat().st_size if part.exists() else 0
        req = urllib.request.Request(url, headers={"User-Agent": "hybrid-music-data/1"})
        if have:
            req.add_header("Range", f"bytes={have}-")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if have and resp.status != 206:  # the server ignored the range: start again
                    have = 0
                total = _total_length(resp, have)
                with (
                    open(part, "ab" if have else "wb") as f,
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=name, leave=False) as bar,
                ):
                    while block := resp.read(CHUNK):
                        f.write(block)
                        bar.update(len(block))
            got = part.stat().st_size
            if total is not None and got < total:
                raise ConnectionError(f"connection closed after {got} of {total} bytes")
            return
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send: the .part is complete (verified next)
                return
            raise DownloadError(
                f"cannot download {url}: HTTP {e.code} {e.reason}; {MIRROR_HINT.format(name=name)}"
            ) from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as e:  # incl. timeouts, resets
            reason = getattr(e, "reason", e)
            got = part.stat().st_size if part.exists() else 0
            if got == 0 and isinstance(e, urllib.error.URLError):  # never reached: no point retrying
                raise DownloadError(f"cannot reach {url}: {reason}; {MIRROR_HINT.format(name=name)}") from None
            if attempt >= retries:
                raise DownloadError(
                    f"download of {url} interrupted at {got} bytes ({reason}); rerun to resume from there"
                ) from None
            attempt += 1
            log.warning("%s: %s; resuming from byte %d (attempt %d of %d)", name, reason, got, attempt, retries)
            time.sleep(min(2.0**attempt, 30.0) * 0.1)


def _total_length(resp: Any, have: int) -> int | None:
    rng = resp.headers.get("Content-Range", "")  # "bytes 100-999/1000"
    if rng and "/" in rng and not rng.endswith("/*"):
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return int(length) + have if length is not None else None


# --------------------------------------------------------------------------- extraction
def _inside(name: str) -> bool:
    """Whether archive path ``name`` stays inside the extraction root."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    parts: list[str] = []
    for p in PurePosixPath(name.replace("\\", "/")).parts:
        if p == "..":
            if not parts:
                return False
            parts.pop()
        elif p not in (".", ""):
            parts.append(p)
    return True


def check_members(archive: Path) -> list[str]:
    """Every member's name after checking it; raise :class:`UnsafeArchiveError` on the first bad one."""
    names = []
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                mode = info.external_attr >> 16
                if not _inside(info.filename):
                    raise UnsafeArchiveError(
                        f"{archive}: member {info.filename!r} escapes the target; nothing extracted"
                    )
                if stat.S_ISLNK(mode):
                    link = zf.read(info).decode("utf-8", "replace")
                    target = str(PurePosixPath(info.filename).parent / link)
                    if link.startswith("/") or not _inside(target):
                        raise UnsafeArchiveError(
                            f"{archive}: link {info.filename!r} -> {link!r} points outside; nothing extracted"
                        )
                names.append(info.filename)
        return names
    try:
        with tarfile.open(archive) as tf:
            for m in tf.getmembers():
                if not _inside(m.name):
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} escapes the target; nothing extracted")
                if m.issym() or m.islnk():
                    target = m.linkname if m.islnk() else str(PurePosixPath(m.name).parent / m.linkname)
                    if m.linkname.startswith("/") or not _inside(target):
                        raise UnsafeArchiveError(
                            f"{archive}: link {m.name!r} -> {m.linkname!r} points outside; nothing extracted"
                        )
                elif not (m.isfile() or m.isdir()):
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device or fifo; nothing extracted")
                names.append(m.name)
    except tarfile.TarError as e:
        raise DownloadError(f"{archive}: not a readable zip or tar archive ({e}); delete it and rerun") from None
    return names


def safe_extract(archive: str | Path, target: str | Path) -> Path:
    """Extract ``archive`` into ``target`` (all or nothing); skipped when already extracted from it."""
    archive, target = Path(archive), Path(target)
    marker = target / ".extracted.json"
    stamp = file_stamp(archive)  # fetch() has verified the archive's content; this names that copy
    if recorded(marker, stamp) is not None:
        return target
    names = check_members(archive)
    tmp = target.with_name(f".{target.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(tmp)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(tmp, filter="data")
        # the record travels inside the folder that replaces the target at once
        write_json(tmp / ".extracted.json", {"fingerprint": stamp, "archive": archive.name, "members": len(names)})
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise DownloadError(f"{archive}: extraction failed ({type(e).__name__}: {e}); delete it and rerun") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    log.info("extracted %d members of %s into %s", len(names), archive.name, target)
    return target


def fetch_and_extract(remote: RemoteFile, raw_dir: str | Path, name: str, mirror: str = "") -> Path:
    """``raw_dir/<name>/downloads/<file>`` extracted to ``raw_dir/<name>/extracted``."""
    base = Path(raw_dir) / name
    archive = fetch(remote, base / "downloads", mirror)
    return safe_extract(archive, base / "extracted")
