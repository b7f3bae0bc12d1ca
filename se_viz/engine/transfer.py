"""HTTP(S) file transfers through pooch, with what pooch leaves to its caller.

pooch (requests underneath) streams the file into a temporary file, checks its sha256 and only
then moves it into place. This module adds: a name lookup bounded in time (requests has none),
so an offline machine fails in seconds; a HEAD probe for the hub (`probe`); the byte counts
(announced, expected, received) checked as the bytes arrive; retries with backoff for a
transfer cut mid-way or a 5xx (pooch has none); a staging folder per download, named
``.{name}.{pid}.{random}.part`` so that `se_viz.paths.cleanup_partials` removes what a killed
run left; and ``progress(done, total)`` in exact bytes. Failures raise `TransferError`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from ..paths import PART_SUFFIX
from ..version import __version__

Progress = Callable[[int, int | None], None]

CHUNK = 1 << 20
RETRIES = 2          # further attempts after a transfer that was cut mid-way or got a 5xx
BACKOFF_S = 0.5      # first pause between attempts; doubles each time
USER_AGENT = f"se_viz/{__version__} (+weights)"


class TransferError(Exception):
    """Why a transfer failed, with a hint for the user; ``retry``: worth another attempt."""

    def __init__(self, reason: str, hint: str = "This machine may be offline.",
                 retry: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.hint, self.retry = reason, hint, retry


def host(url: str) -> str:
    """The host of an http(s) URL; anything else is refused."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransferError(f"only http:// and https:// URLs are supported, got {url!r}", hint="")
    return parts.hostname


def resolve_within(url: str, host: str, timeout: float) -> None:
    """Fail fast if the host (or the proxy in use) cannot be resolved within ``timeout`` s."""
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
        raise TransferError(f"could not resolve {host!r} within {timeout:g} s")
    if outcome[0] is not None:
        raise TransferError(f"could not resolve {host!r} ({outcome[0]})")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # a redirect (the hub's to its CDN) already proves the file is there


def _reason_text(reason: object) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)) or "timed out" in str(reason):
        return "timed out"
    return str(reason) or type(reason).__name__


def probe(url: str, timeout: float) -> None:
    """One HEAD request within ``timeout``: refused, unreachable, hanging or 4xx/5xx fail here,
    in seconds, before huggingface_hub's own retries (~23 s) would start."""
    resolve_within(url, host(url), timeout)
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": USER_AGENT})
    try:
        opener.open(request, timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code >= 400:
            raise TransferError(f"HTTP error {exc.code} {exc.reason}", hint="") from exc
    except urllib.error.URLError as exc:
        raise TransferError(_reason_text(exc.reason)) from exc
    except OSError as exc:
        raise TransferError(f"connection failed: {_reason_text(exc)}") from exc


# ----------------------------------------------------------------------------- pooch transfer


class _Meter:
    """pooch's progress-bar protocol (``total``, ``update``, ``reset``, ``close``) turned into
    ``progress(done, total)``. ``done`` is the size of the file on disk (pooch counts whole
    chunks); the announced and expected sizes are checked as the bytes arrive."""

    def __init__(self, progress: Progress | None, expected_size: int | None) -> None:
        self.progress, self.expected = progress, expected_size
        self.total: int | None = None  # pooch sets it from Content-Length (0 = unknown)
        self.file: str | None = None
        self.done = 0

    def update(self, n: int) -> None:
        total = self.total or None
        if self.expected is not None and total is not None and total != self.expected:
            raise TransferError(f"the server announced {total} bytes but {self.expected} "
                                "were expected", hint="The URL may point to a different file.")
        done = os.path.getsize(self.file) if self.file else self.done + n
        limit = total or self.expected
        if limit is not None and done > limit:
            raise TransferError(f"the server sent more than the {limit} bytes expected",
                                hint="The URL may point to a different file.")
        if done != self.done:
            self.done = done
            if self.progress is not None:
                self.progress(done, limit)

    def reset(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Downloader:
    """pooch.HTTPDownloader that tells the meter which file it writes."""

    def __init__(self, meter: _Meter, timeout: float, chunk_size: int) -> None:
        import pooch

        self.meter = meter
        self.http = pooch.HTTPDownloader(progressbar=meter, timeout=timeout,
                                         chunk_size=chunk_size,
                                         headers={"User-Agent": USER_AGENT})

    def __call__(self, url: str, output_file: str, pooch_obj: object,
                 check_only: bool = False) -> object:
        self.meter.file = output_file if isinstance(output_file, str) else None
        return self.http(url, output_file, pooch_obj, check_only=check_only)


@contextlib.contextmanager
def _quiet_pooch() -> Iterator[None]:
    """pooch logs every download at INFO on stderr; library code stays quiet."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def staging(dest: Path) -> Path:
    """A fresh ``.{name}.{pid}.{random}.part`` folder beside ``dest`` for pooch to work in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=PART_SUFFIX,
                                 dir=dest.parent))


def move_into_place(src: Path, dest: Path) -> None:
    with open(src, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(src, 0o644)
    os.replace(src, dest)
    with contextlib.suppress(OSError):
        fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _requests_failure(exc: Exception, meter: _Meter) -> TransferError:
    """A requests exception from pooch as a TransferError; transfers that had started may retry."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        return TransferError(f"HTTP error {code} {exc.response.reason}", hint="",
                             retry=code >= 500 or code == 429)
    cause = getattr(exc.args[0], "reason", exc.args[0]) if exc.args else exc
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc):
        return TransferError("timed out", retry=meter.done > 0)
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or meter.done > 0:
        total = meter.total or meter.expected
        of = f" of {total}" if total else ""
        return TransferError(f"the connection ended after {meter.done}{of} bytes "
                             "(incomplete download)", retry=True)
    return TransferError(f"connection failed: {cause}")


def _transfer(url: str, dest: Path, expected_size: int | None, expected_sha256: str | None,
              progress: Progress | None, timeout: float, chunk_size: int) -> None:
    """One attempt: pooch fetches ``url`` into a staging folder (sha256-checked there), the
    byte count is checked, and only then is the file moved to ``dest``."""
    import pooch
    import requests

    folder, meter = staging(dest), _Meter(progress, expected_size)
    try:
        with _quiet_pooch():
            got = Path(pooch.retrieve(
                url, known_hash=f"sha256:{expected_sha256.lower()}" if expected_sha256 else None,
                fname=dest.name, path=folder, downloader=_Downloader(meter, timeout, chunk_size)))
        size = got.stat().st_size
        if size == 0:
            raise TransferError("the file is empty", hint="")
        if expected_size is not None and size != expected_size:
            raise TransferError(f"the connection ended after {size} of {expected_size} "
                                "bytes (incomplete download)", retry=True)
        move_into_place(got, dest)
    except requests.RequestException as exc:
        raise _requests_failure(exc, meter) from exc
    except ValueError as exc:  # pooch: the sha256 of the downloaded file differs
        raise TransferError(f"sha256 mismatch ({exc})",
                            hint="The file is corrupt or not the expected one.") from exc
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def fetch_url(url: str, dest: Path, *, expected_size: int | None = None,
              expected_sha256: str | None = None, progress: Progress | None = None,
              timeout: float = 10.0, chunk_size: int = CHUNK, retries: int = RETRIES) -> Path:
    """Download ``url`` to ``dest`` atomically (through pooch) and return ``dest``.

    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive. ``timeout``
    bounds name resolution, the connect and each read. A transfer cut mid-way (or a 5xx) is
    tried again up to ``retries`` times with backoff. Raises TransferError (or OSError for
    the folder itself) after removing the partial file; KeyboardInterrupt passes through
    the same way. An existing ``dest`` is left as it was.
    """
    dest = Path(dest)
    resolve_within(url, host(url), timeout)
    for attempt in range(retries + 1):
        try:
            _transfer(url, dest, expected_size, expected_sha256, progress, timeout, chunk_size)
            return dest
        except TransferError as exc:
            if not exc.retry or attempt == retries:
                raise
            time.sleep(BACKOFF_S * 2 ** attempt)
    return dest
