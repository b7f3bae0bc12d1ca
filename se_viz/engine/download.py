"""Download and cache pretrained SE-ResNet-50 weights, safely.

Standard library only. A download streams into a hidden ``.{name}.{random}.part`` file next to its
destination, is checked (byte count, optional size and sha256) and only then moved into place with
``os.replace``. Any failure removes the partial file, leaves an existing good file alone and raises
``WeightsError`` telling the user where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable

from ..arch import PRETRAINED, PretrainedFile
from ..errors import WeightsError
from ..paths import atomic_file, cache_dir, cleanup_partials

Progress = Callable[[int, int | None], None]

_CHUNK = 1 << 20
# fetch() only sweeps partial files idle this long, so it never deletes a download in progress.
_STALE_AFTER_S = 120.0
_USER_AGENT = "se_viz-weights/1.0 (+urllib)"


class _Failure(Exception):
    """Internal: why a transfer failed, with a hint; turned into a WeightsError by ``download``."""

    def __init__(self, reason: str, hint: str = "This machine may be offline.") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


# ----------------------------------------------------------------------------- cache layout


GRAPHS_KEPT = 4  # fast graphs kept in paths.graph_cache_dir(), most recently used first


def _spec(arch: str) -> PretrainedFile:
    try:
        return PRETRAINED[arch]
    except KeyError:
        known = ", ".join(sorted(PRETRAINED))
        raise WeightsError(f"Unknown architecture {arch!r}. Known ones: {known}.") from None


def expected_path(arch: str) -> Path:
    """Where the weights file for ``arch`` lives in the cache (and where to put it by hand)."""
    return cache_dir() / _spec(arch).filename


def cached_path(arch: str) -> Path | None:
    """The cached file for ``arch`` if present and complete (non-empty, right size if known)."""
    spec, path = _spec(arch), expected_path(arch)
    try:
        size = path.stat().st_size if path.is_file() else 0
    except OSError:
        return None
    if size == 0 or (spec.size is not None and size != spec.size):
        return None
    return path


def source_url(arch: str) -> str:
    """The URL ``fetch`` uses: ``$SE_VIZ_MIRROR/<filename>`` if the mirror is set, else the official one."""
    spec = _spec(arch)
    mirror = os.environ.get("SE_VIZ_MIRROR", "").strip()
    return f"{mirror.rstrip('/')}/{spec.filename}" if mirror else spec.url


def describe_cache() -> list[dict]:
    """One dict per known arch: arch, path, present, size (bytes on disk or None), url, description."""
    rows = []
    for arch, spec in PRETRAINED.items():
        path = cached_path(arch)
        rows.append({
            "arch": arch,
            "path": str(expected_path(arch)),
            "present": path is not None,
            "size": path.stat().st_size if path is not None else None,
            "url": source_url(arch),
            "description": spec.description,
        })
    return rows


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- transfer


def _manual_hint(url: str, dest: Path) -> str:
    return (f"Download it by hand from {url} and save it as {dest} "
            "(or pass its path with --weights PATH).")


def _check_url(url: str) -> str:
    """Return the host of an http(s) URL; refuse anything else."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Failure(f"only http:// and https:// URLs are supported, got {url!r}", hint="")
    return parts.hostname


def _resolve_within(url: str, host: str, timeout: float) -> None:
    """Fail fast if the host (or the proxy in use) cannot be resolved within ``timeout`` seconds."""
    proxy = urllib.request.getproxies().get(urllib.parse.urlsplit(url).scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        host = urllib.parse.urlsplit(proxy if "//" in proxy else f"//{proxy}").hostname or host
    outcome: list[BaseException | None] = []

    def resolve() -> None:
        try:
            socket.getaddrinfo(host, None)
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=resolve, daemon=True, name="se_viz-resolve")
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise _Failure(f"could not resolve {host!r} within {timeout:g} s")
    if outcome[0] is not None:
        raise _Failure(f"could not resolve {host!r} ({outcome[0]})")


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _stream(url: str, out: BinaryIO, expected_size: int | None, progress: Progress | None,
            timeout: float, chunk_size: int) -> str:
    """Copy ``url`` into ``out``; check the byte count; return the hex sha256. Raises ``_Failure``."""
    host = _check_url(url)
    _resolve_within(url, host, timeout)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    digest, done = hashlib.sha256(), 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            total = _content_length(response)
            if total is not None and expected_size is not None and total != expected_size:
                raise _Failure(f"the server announced {total} bytes but {expected_size} were expected",
                               hint="The URL may point to a different file.")
            total = total if total is not None else expected_size
            while chunk := response.read(chunk_size):
                _write(out, chunk)
                digest.update(chunk)
                done += len(chunk)
                if total is not None and done > total:
                    raise _Failure(f"the server sent more than the {total} bytes expected",
                                   hint="The URL may point to a different file.")
                if progress is not None:
                    progress(done, total)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the open response
        raise _Failure(f"HTTP error {exc.code} {exc.reason}", hint="") from exc
    except urllib.error.URLError as exc:
        raise _Failure(f"{_reason_text(exc.reason)}") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Failure(f"connection failed: {_reason_text(exc)}") from exc
    if total is not None and done != total:
        raise _Failure(f"the connection ended after {done} of {total} bytes (incomplete download)")
    return digest.hexdigest()


def _write(out: BinaryIO, chunk: bytes) -> None:
    try:
        out.write(chunk)
    except OSError as exc:  # a disk problem, not a network one
        raise _Failure(f"could not write to disk ({exc})",
                       hint="Free some disk space or set SE_VIZ_HOME to a writable folder.") from exc


def _reason_text(reason: object) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(reason) or type(reason).__name__


def _check_file(size: int, sha256: str, expected_size: int | None,
                expected_sha256: str | None) -> None:
    """Compare a finished file's size and hash against what was expected. Raises ``_Failure``."""
    if size == 0:
        raise _Failure("the file is empty", hint="")
    if expected_size is not None and size != expected_size:
        raise _Failure(f"got {size} bytes but {expected_size} were expected",
                       hint="The file is incomplete or not the expected one.")
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise _Failure(f"sha256 mismatch: got {sha256}, expected {expected_sha256.lower()}",
                       hint="The file is corrupt or not the expected one.")


def _atomic_write(dest: Path, fill: Callable[[BinaryIO], str], *,
                  expected_size: int | None, expected_sha256: str | None) -> None:
    """Run ``fill`` on an atomic file for ``dest`` and check it before it is moved into place."""
    with atomic_file(dest) as out:
        sha256 = fill(out)
        out.flush()
        _check_file(out.tell(), sha256, expected_size, expected_sha256)


def download(url: str, dest: Path, *, expected_size: int | None = None,
             expected_sha256: str | None = None, progress: Progress | None = None,
             timeout: float = 10.0, chunk_size: int = _CHUNK) -> Path:
    """Download ``url`` to ``dest`` atomically and return ``dest``.

    ``progress(done_bytes, total_bytes_or_None)`` is called after each chunk. ``timeout`` bounds name
    resolution, the connect and each read. Any failure raises ``WeightsError`` (KeyboardInterrupt is
    re-raised) after removing the partial file; an existing ``dest`` is left as it was.
    """
    dest = Path(dest)
    try:
        _check_url(url)
        _atomic_write(dest, lambda out: _stream(url, out, expected_size, progress, timeout, chunk_size),
                      expected_size=expected_size, expected_sha256=expected_sha256)
    except _Failure as exc:
        hint = f"{exc.hint} " if exc.hint else ""
        raise WeightsError(f"Could not download {dest.name} from {url}: {exc.reason}. "
                           f"{hint}{_manual_hint(url, dest)}") from exc
    except OSError as exc:  # the cache folder itself: permissions, disk full
        raise WeightsError(f"Could not write {dest}: {exc}. Free some space or set SE_VIZ_HOME to a "
                           f"writable folder; or download {url} by hand and pass its path with "
                           "--weights PATH.") from exc
    return dest


# ----------------------------------------------------------------------------- entry points


def fetch(arch: str, *, progress: Progress | None = None, timeout: float = 10.0,
          url: str | None = None) -> Path:
    """Return the cached weights for ``arch``, downloading them first if needed.

    The source is ``url`` if given, else ``$SE_VIZ_MIRROR/<filename>`` if set, else the official URL.
    """
    spec = _spec(arch)
    cleanup_partials(older_than=_STALE_AFTER_S)
    cached = cached_path(arch)
    if cached is not None:
        return cached
    return download(url or source_url(arch), expected_path(arch), expected_size=spec.size,
                    expected_sha256=spec.sha256, progress=progress, timeout=timeout)


def install_file(arch: str, src: str | Path) -> Path:
    """Copy a weights file the user already has into the cache under the expected name."""
    spec, dest, src = _spec(arch), expected_path(arch), Path(src).expanduser()
    if not src.is_file():
        raise WeightsError(f"{src} does not exist or is not a file. Pass the path of the "
                           f"downloaded {spec.filename} (from {spec.url}).")
    if src.stat().st_size == 0:
        raise WeightsError(f"{src} is empty. Download {spec.filename} again from {spec.url}.")
    if dest.exists() and src.resolve() == dest.resolve():
        return dest

    def copy(out: BinaryIO) -> str:
        digest = hashlib.sha256()
        with open(src, "rb") as f:
            while chunk := f.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
        return digest.hexdigest()

    try:
        _atomic_write(dest, copy, expected_size=spec.size, expected_sha256=spec.sha256)
    except _Failure as exc:
        raise WeightsError(f"{src} is not the expected {spec.filename}: {exc.reason}. "
                           f"Download it again from {spec.url}.") from exc
    except OSError as exc:
        raise WeightsError(f"Could not copy {src} to {dest}: {exc}. Set SE_VIZ_HOME to a writable "
                           "folder or pass the file with --weights PATH.") from exc
    return dest
