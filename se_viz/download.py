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
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable

from se_viz.errors import WeightsError

Progress = Callable[[int, int | None], None]

_CHUNK = 1 << 20
_PART_SUFFIX = ".part"
# fetch() only sweeps partial files idle this long, so it never deletes a download in progress.
_STALE_AFTER_S = 120.0
_USER_AGENT = "se_viz-weights/1.0 (+urllib)"


@dataclass(frozen=True)
class PretrainedFile:
    """One published weights file. ``size``/``sha256`` are checked whenever they are set."""

    arch: str
    url: str
    filename: str
    layout: str  # "paddleclas" or "timm"
    size: int | None
    sha256: str | None
    description: str


PRETRAINED: dict[str, PretrainedFile] = {
    "se_resnet50_vd": PretrainedFile(
        arch="se_resnet50_vd",
        url="https://paddle-imagenet-models-name.bj.bcebos.com/dygraph/SE_ResNet50_vd_pretrained.pdparams",
        filename="SE_ResNet50_vd_pretrained.pdparams",
        layout="paddleclas",
        size=None,
        sha256=None,
        description="PaddleClas SE_ResNet50_vd, ImageNet-1k top-1 79.52% (native Paddle weights).",
    ),
    "se_resnet50": PretrainedFile(
        arch="se_resnet50",
        url="https://huggingface.co/timm/seresnet50.ra2_in1k/resolve/main/model.safetensors",
        filename="seresnet50.ra2_in1k.safetensors",
        layout="timm",
        size=None,
        sha256=None,
        description="timm seresnet50.ra2_in1k, ImageNet-1k top-1 80.26% @224 (safetensors).",
    ),
}


class _Failure(Exception):
    """Internal: why a transfer failed, with a hint; turned into a WeightsError by ``download``."""

    def __init__(self, reason: str, hint: str = "This machine may be offline.") -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


# ----------------------------------------------------------------------------- cache layout


def cache_dir() -> Path:
    """The weights cache: ``$SE_VIZ_HOME`` if set, else ``~/.cache/se_viz``. Not created here."""
    home = os.environ.get("SE_VIZ_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "se_viz"


GRAPHS_KEPT = 4  # fast graphs kept in graph_cache_dir(), most recently used first


def graph_cache_dir() -> Path:
    """Where `se_viz.fast` keeps its ONNX graphs: ``cache_dir()/graphs`` (safe to delete:
    a missing graph is rebuilt from the weights)."""
    return cache_dir() / "graphs"


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


def cleanup_partials(folder: Path | None = None, *, older_than: float = 0.0) -> int:
    """Delete leftover ``*.part`` files (from killed runs) in ``folder`` (default: the cache).

    A file is removed when the process that wrote it (its name carries the pid) is gone, or
    when its last write is at least ``older_than`` seconds ago. Returns the count.
    """
    folder = cache_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        return 0
    now, removed = time.time(), 0
    for entry in folder.iterdir():
        if not entry.name.endswith(_PART_SUFFIX) or not entry.is_file():
            continue
        try:
            if not _writer_alive(entry.name) or now - entry.stat().st_mtime >= older_than:
                entry.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


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


def _writer_alive(name: str) -> bool:
    """Whether the process whose pid is in a ``.{file}.{pid}.{random}.part`` name still runs."""
    parts = name.split(".")
    pid = next((int(p) for p in reversed(parts[:-2]) if p.isdigit()), None)
    if pid is None or pid == os.getpid():
        return True  # ours (another thread) or unknown: only the age rule applies
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours to signal
        return True
    return True


def _atomic_write(dest: Path, fill: Callable[[BinaryIO], str], *,
                  expected_size: int | None, expected_sha256: str | None) -> None:
    """Run ``fill`` on a temp file beside ``dest``, check it, fsync and ``os.replace`` into ``dest``.

    The temp file is removed on every failure (KeyboardInterrupt included); ``dest`` is only touched
    on success.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=_PART_SUFFIX,
                                dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            sha256 = fill(out)
            out.flush()
            os.fsync(out.fileno())
            size = out.tell()
        _check_file(size, sha256, expected_size, expected_sha256)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(dest.parent)


def _fsync_dir(folder: Path) -> None:
    """Best effort: persist the rename (not supported on every platform)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
