"""Fetching a dataset's official files into a data folder, once, verified against the published checksums.

A dataset source that knows where its files are published lists them as `RemoteFile`s and calls `ensure_files`
before it reads them. Files already in the folder are used as they are and nothing is fetched, which is the case
wherever the shared data folder (or $GANBENCH_DATA_ROOT) holds them. A missing file is downloaded from its hosts in
order (the official host first), logged with its size and rate, checked against its published MD5, and only then
moved to its final name. A download that does not match is deleted and refused, so a half-written or altered file
never sits where the next run would read it.

Two environment variables steer fetching for everyone at once:
- `GANBENCH_OFFLINE=1` refuses every fetch at once (no waiting on timeouts) with the error a failed fetch gives.
  The test suite sets it, so no test reaches the network by accident.
- `GANBENCH_DATA_MIRROR=<url>` replaces every host with `<url>/<collection>/<file name>`: a site-wide mirror
  for a cluster without internet access (and how the tests serve copies from a local HTTP server).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmark.errors import BenchmarkError

log = logging.getLogger(__name__)

OFFLINE_VARIABLE = "GANBENCH_OFFLINE"
MIRROR_VARIABLE = "GANBENCH_DATA_MIRROR"
TIMEOUT_S = 60  # per connection attempt and per read; a stalled host fails instead of hanging a job
CHUNK_BYTES = 1 << 20
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class RemoteFile:
    """One published file: its name in the data folder, its hosts (official first) and its published MD5."""

    name: str
    urls: tuple[str, ...]
    md5: str
    collection: str  # the data folder's sub-folder name, used for mirrors: <mirror>/<collection>/<name>


def ensure_files(files: Sequence[RemoteFile], folder: Path, what: str, otherwise: str = "") -> list[Path]:
    """The paths of `files` in `folder`, fetching the missing ones first. Present files are not touched.
    `otherwise` adds another way to provide the data to the error a failed fetch gives."""
    folder = Path(folder)
    missing = [remote for remote in files if not (folder / remote.name).is_file()]
    if missing:
        log.info("%s: %d of %d file(s) missing in %s; fetching them", what, len(missing), len(files), folder)
    for remote in missing:
        fetch_file(remote, folder, what, otherwise)
    return [folder / remote.name for remote in files]


def hosts(remote: RemoteFile) -> tuple[str, ...]:
    """Where `remote` is fetched from: the site mirror when one is set, else its published hosts in order."""
    mirror = os.environ.get(MIRROR_VARIABLE, "").strip()
    if mirror:
        return (f"{mirror.rstrip('/')}/{remote.collection}/{remote.name}",)
    return remote.urls


def fetch_file(remote: RemoteFile, folder: Path, what: str, otherwise: str = "") -> Path:
    """Download `remote` into `folder` from the first host that serves it with the published MD5."""
    target = folder / remote.name
    urls = hosts(remote)
    how_to_fix = (
        f"Without network access, copy {remote.name} (MD5 {remote.md5}) into {folder}, or set GANBENCH_DATA_ROOT to a "
        f"folder holding {remote.collection}/{remote.name}.{' ' + otherwise if otherwise else ''}"
    )
    if os.environ.get(OFFLINE_VARIABLE, "") not in ("", "0"):
        raise BenchmarkError(
            f"{what}: {target} is missing and fetching is off ({OFFLINE_VARIABLE} is set), so it was not fetched from "
            f"{' or '.join(urls)}. {how_to_fix}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, partial_name = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".partial", dir=folder)
        os.close(handle)
    except OSError as error:
        raise BenchmarkError(
            f"{what}: cannot write into the data folder {folder} to fetch {remote.name} ({error}). Set GANBENCH_DATA_ROOT "
            "(or the config's data_root) to a writable folder."
        ) from error
    partial = Path(partial_name)
    failures = []
    try:
        for url in urls:
            try:
                size, md5 = _download(url, partial, remote.name)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:  # offline, HTTP errors, cut off
                reason = error if isinstance(error, urllib.error.HTTPError) else getattr(error, "reason", error)
                failures.append(f"{url}: {reason}")
                continue
            if md5 != remote.md5:
                failures.append(f"{url}: served {size:,} bytes with MD5 {md5}, not the published {remote.md5} (refused)")
                continue
            os.replace(partial, target)  # only a verified file ever carries the final name
            log.info("%s: fetched %s (%s bytes, MD5 verified) into %s", what, remote.name, f"{size:,}", folder)
            return target
    finally:
        partial.unlink(missing_ok=True)
    raise BenchmarkError(f"{what}: could not fetch {remote.name} into {folder}; nothing was kept. Tried {'; '.join(failures)}. {how_to_fix}")


def _download(url: str, destination: Path, name: str) -> tuple[int, str]:
    """Stream `url` into `destination`; return the byte count and MD5. A body shorter than announced raises."""
    digest = hashlib.md5(usedforsecurity=False)  # the published checksums are MD5s; integrity, not security
    size = 0
    started = last_report = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": "ganbench-data-fetch"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response, open(destination, "wb") as out:
        announced = response.headers.get("Content-Length")
        total = int(announced) if announced and announced.isdigit() else None
        log.info("fetching %s from %s (%s)", name, url, f"{total:,} bytes" if total is not None else "size not announced")
        while chunk := response.read(CHUNK_BYTES):
            out.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                share = f" of {total:,}" if total else ""
                log.info("  %s: %s%s bytes, %.1f MB/s", name, f"{size:,}", share, size / 1e6 / max(now - started, 1e-9))
    if total is not None and size != total:
        raise ValueError(f"the connection ended after {size:,} of {total:,} bytes")
    elapsed = max(time.monotonic() - started, 1e-9)
    log.info("  %s: %s bytes in %.1f s (%.1f MB/s)", name, f"{size:,}", elapsed, size / 1e6 / elapsed)
    return size, digest.hexdigest()
