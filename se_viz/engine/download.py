"""Find, download and cache the pretrained weights: one path, two sources.

Each pretrained file (`se_viz.arch.PRETRAINED`) names its source. `fetch(arch)` returns the
cached file without any request if there is one (`cached_path`: se_viz's cache, then the
Hugging Face cache), else downloads it from that source, verified and atomically:

* a Hugging Face hub file (``hf_repo``, ``hf_filename``, ``hf_revision``) goes through
  ``huggingface_hub`` into the user's Hugging Face cache, so a copy timm already has is used and
  ``HF_HUB_OFFLINE`` / ``HF_ENDPOINT`` / ``HF_HUB_CACHE`` work as usual (read at each call);
  the bytes are then checked against the blob's ETag (the file's sha256; huggingface_hub only
  checks the size);
* any other file (PaddleClas's ``.pdparams``, ``$SE_VIZ_MIRROR/<filename>`` or ``url=``) goes
  through pooch's HTTP downloader into se_viz's cache (`se_viz.paths.atomic_file`), with the
  size and sha256 checked where known and a transfer cut mid-way or a 5xx tried again.

Both fail within seconds on an offline machine (a name lookup bounded in time, and a HEAD probe
before huggingface_hub, which would retry for ~23 s), report ``progress(done, total)`` in bytes
(the CLI's tqdm bar, the app's st.progress), leave nothing usable behind when killed (the next
run sweeps it) and raise a `WeightsError` that says how to put the file in place by hand.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO

from ..arch import PRETRAINED, PretrainedFile
from ..errors import WeightsError
from ..paths import atomic_file, cache_dir, cleanup_partials
from ..version import __version__

Progress = Callable[[int, int | None], None]

CHUNK = 1 << 20
RETRIES = 2          # further attempts after a transfer cut mid-way or a 5xx
BACKOFF_S = 0.5      # first pause between attempts; doubles each time
USER_AGENT = f"se_viz/{__version__} (+weights)"
HF_DEFAULT_ENDPOINT = "https://huggingface.co"
_STALE_AFTER_S = 120.0  # partial files idle this long are swept (never one still being written)
_OFFLINE = "This machine may be offline."


class _Failed(Exception):
    """Why a transfer failed, a hint for the user, and whether another attempt may help."""

    def __init__(self, reason: str, hint: str = _OFFLINE, retry: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.hint, self.retry = reason, hint, retry


# ----------------------------------------------------------------------------- where (no request)


def _spec(arch: str) -> PretrainedFile:
    try:
        return PRETRAINED[arch]
    except KeyError:
        known = ", ".join(sorted(PRETRAINED))
        raise WeightsError(f"Unknown architecture {arch!r}. Known ones: {known}.") from None


def expected_path(arch: str) -> Path:
    """Where se_viz's cache keeps the file for ``arch`` (and where to put it by hand)."""
    return cache_dir() / _spec(arch).filename


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def hf_repo_folder(spec: PretrainedFile) -> Path:
    """``<hf cache>/models--{owner}--{name}`` (the hub cache's documented layout)."""
    return hf_cache_dir() / ("models--" + str(spec.hf_repo).replace("/", "--"))


def hf_endpoint() -> str:
    """``$HF_ENDPOINT`` (a mirror of the hub) or the hub itself, without a trailing slash."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).strip().rstrip("/")


def hf_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now, or was when huggingface_hub
    was imported (it then refuses every request itself)."""
    if any(os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
           for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(constants is not None and constants.is_offline_mode())


def _hf():
    """huggingface_hub, imported late, its telemetry request off unless the user asked for it."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub

    return huggingface_hub


def _mirror() -> str:
    return os.environ.get("SE_VIZ_MIRROR", "").strip()


def _via_hub(spec: PretrainedFile) -> bool:
    """A hub file fetched from the hub (not from $SE_VIZ_MIRROR, a plain folder of files)."""
    return bool(spec.hf_repo) and not _mirror()


def source_url(arch: str) -> str:
    """Where `fetch` gets the file: ``$SE_VIZ_MIRROR/<filename>`` if that is set, else the
    hub endpoint's ``{repo}/resolve/{revision}/{filename}`` for hub files, else their URL."""
    spec = _spec(arch)
    if _mirror():
        return f"{_mirror().rstrip('/')}/{spec.filename}"
    if spec.hf_repo:
        return (f"{hf_endpoint()}/{spec.hf_repo}/resolve/{spec.hf_revision or 'main'}/"
                f"{spec.hf_filename}")
    return spec.url


def destination_folder(arch: str) -> Path:
    """Where `fetch` puts the file: the hub file's folder in the Hugging Face cache, else
    se_viz's cache."""
    spec = _spec(arch)
    return hf_repo_folder(spec) if _via_hub(spec) else cache_dir()


def _complete(path: Path | None, size: int | None) -> Path | None:
    try:
        got = path.stat().st_size if path is not None and path.is_file() else 0
    except OSError:
        return None
    return path if got and (size is None or got == size) else None


def cached_path(arch: str) -> Path | None:
    """The complete file for ``arch`` without any request: se_viz's cache first (a file the
    user installed), then, for hub files, the Hugging Face cache. None if neither has it."""
    spec = _spec(arch)
    found = _complete(expected_path(arch), spec.size)
    if found is None and spec.hf_repo and hf_repo_folder(spec).is_dir():
        hit = _hf().try_to_load_from_cache(spec.hf_repo, spec.hf_filename,
                                           cache_dir=hf_cache_dir(), revision=spec.hf_revision)
        found = _complete(Path(hit), spec.size) if isinstance(hit, str) else None
    return found


def is_pretrained_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of the known pretrained files as cached (either cache)."""
    try:
        target = Path(path).resolve()
        return any(p is not None and p.resolve() == target
                   for p in (cached_path(a) for a in PRETRAINED))
    except OSError:
        return False


def describe_cache() -> list[dict]:
    """One dict per known arch: arch, path, present, size (bytes or None), url, description,
    and ``hub_cache`` (the Hugging Face cache folder looked in, or None)."""
    rows = []
    for arch, spec in PRETRAINED.items():
        path = cached_path(arch)
        rows.append({"arch": arch, "path": str(path or expected_path(arch)),
                     "present": path is not None,
                     "size": path.stat().st_size if path is not None else None,
                     "url": source_url(arch), "description": spec.description,
                     "hub_cache": str(hf_repo_folder(spec)) if spec.hf_repo else None})
    return rows


def _hexdigest(f: IO[bytes], digest=None) -> str:
    digest = digest or hashlib.sha256()
    while chunk := f.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    with open(path, "rb") as f:
        return _hexdigest(f)


# ----------------------------------------------------------------------------- fetch


def fetch(arch: str, *, progress: Progress | None = None, timeout: float = 10.0,
          url: str | None = None) -> Path:
    """Return the cached file for ``arch`` (`cached_path`), downloading it if needed.

    The source is ``url`` if given, else ``$SE_VIZ_MIRROR/<filename>`` if set (both through
    pooch into se_viz's cache), else the hub (``$HF_ENDPOINT``, into the Hugging Face cache)
    for hub files and their URL for the others. ``progress(done_bytes, total_or_None)`` is
    called as bytes arrive; ``timeout`` bounds the name lookup, the connect and each read.
    Raises WeightsError; KeyboardInterrupt passes through. Nothing partial is left usable.
    """
    spec = _spec(arch)
    cleanup_partials(older_than=_STALE_AFTER_S)
    cached = cached_path(arch)
    if cached is not None:
        return cached
    if url is not None or not _via_hub(spec):
        return download(url or source_url(arch), expected_path(arch), expected_size=spec.size,
                        expected_sha256=spec.sha256, progress=progress, timeout=timeout)
    url = source_url(arch)
    try:
        if hf_offline():
            raise _Failed(f"HF_HUB_OFFLINE is set and the Hugging Face cache "
                          f"({hf_repo_folder(spec)}) does not have it", hint="")
        _probe(url, timeout)
        return _hub_download(spec, progress, timeout)
    except _Failed as exc:
        raise _weights_error(exc, f"{spec.hf_filename} of {spec.hf_repo}", url,
                             expected_path(arch),
                             f" 'hf download {spec.hf_repo} {spec.hf_filename}' also works (it "
                             "fills the Hugging Face cache).") from exc


def download(url: str, dest: str | Path, *, expected_size: int | None = None,
             expected_sha256: str | None = None, progress: Progress | None = None,
             timeout: float = 10.0, chunk_size: int = CHUNK, retries: int = RETRIES) -> Path:
    """Download ``url`` to ``dest`` through pooch, atomically, and return ``dest``.

    The size and sha256 are checked when given; a transfer cut mid-way or a 5xx is tried again
    ``retries`` times with backoff. Any failure raises WeightsError after removing the partial
    file (KeyboardInterrupt too, re-raised); an existing ``dest`` is left as it was.
    """
    dest = Path(dest)
    try:
        _resolve_within(url, timeout)
        attempt = 0
        while True:
            try:
                return _transfer(url, dest, expected_size, expected_sha256, progress, timeout,
                                 chunk_size)
            except _Failed as exc:
                if not exc.retry or attempt == retries:
                    raise
            time.sleep(BACKOFF_S * 2 ** attempt)
            attempt += 1
    except _Failed as exc:
        raise _weights_error(exc, dest.name, url, dest) from exc
    except OSError as exc:  # the cache folder itself: permissions, disk full
        raise WeightsError(f"Could not write {dest}: {exc}. Free some space or set SE_VIZ_HOME "
                           f"to a writable folder; or download {url} by hand and pass its path "
                           "with --weights PATH.") from exc


def install_file(arch: str, src: str | Path) -> Path:
    """Copy a weights file the user already has into se_viz's cache under the expected name
    (checked against the known size and sha256 before it is moved into place)."""
    spec, dest, src = _spec(arch), expected_path(arch), Path(src).expanduser()
    if not src.is_file():
        raise WeightsError(f"{src} does not exist or is not a file. Pass the path of the "
                           f"downloaded {spec.filename} (from {spec.url}).")
    if src.stat().st_size == 0:
        raise WeightsError(f"{src} is empty. Download {spec.filename} again from {spec.url}.")
    if dest.exists() and src.resolve() == dest.resolve():
        return dest
    try:
        with atomic_file(dest, "w+b") as out, open(src, "rb") as f:
            while chunk := f.read(CHUNK):
                out.write(chunk)
            _verify(out, spec.size, spec.sha256)
    except _Failed as exc:
        raise WeightsError(f"{src} is not the expected {spec.filename}: {exc.reason}. "
                           f"Download it again from {spec.url}.") from exc
    except OSError as exc:
        raise WeightsError(f"Could not copy {src} to {dest}: {exc}. Set SE_VIZ_HOME to a writable "
                           "folder or pass the file with --weights PATH.") from exc
    return dest


def _weights_error(exc: _Failed, what: str, url: str, dest: Path, extra: str = "") -> WeightsError:
    arch = next((a for a, s in PRETRAINED.items() if s.filename == dest.name), None)
    install = f" (or run 'se-viz weights install FILE --arch {arch}')" if arch else ""
    hint = f"{exc.hint} " if exc.hint else ""
    return WeightsError(f"Could not download {what} from {url}: {exc.reason}. {hint}Download it "
                        f"by hand from {url} and save it as {dest}{install}, or pass its path "
                        f"with --weights PATH.{extra}")


# ----------------------------------------------------------------------------- the two transfers


def _transfer(url: str, dest: Path, size: int | None, sha256: str | None,
              progress: Progress | None, timeout: float, chunk_size: int) -> Path:
    """One attempt: pooch's HTTP downloader streams into `atomic_file`'s temporary file, whose
    size and hash are checked before it is moved to ``dest``."""
    import pooch
    import requests

    with atomic_file(dest, "w+b") as out:
        meter = _Meter(progress, out, size)
        get = pooch.HTTPDownloader(progressbar=meter, chunk_size=chunk_size, timeout=timeout,
                                   headers={"User-Agent": USER_AGENT})
        try:
            get(url, out, None)
        except requests.RequestException as exc:
            raise _requests_failure(exc, out.tell(), meter.total) from exc
        _verify(out, size, sha256)
    return dest


def _hub_download(spec: PretrainedFile, progress: Progress | None, timeout: float) -> Path:
    """``hf_hub_download`` into the Hugging Face cache (atomic: a ``blobs/*.incomplete`` renamed
    into place), after sweeping the partial blobs a killed run left; then `_check_blob`."""
    hf = _hf()
    import httpx2  # huggingface_hub's HTTP client: its transport errors pass through

    now = time.time()
    for part in (hf_repo_folder(spec) / "blobs").glob("*.incomplete"):
        with contextlib.suppress(FileNotFoundError):
            if now - part.stat().st_mtime >= _STALE_AFTER_S:
                part.unlink()

    try:
        path = Path(hf.hf_hub_download(
            spec.hf_repo, spec.hf_filename, revision=spec.hf_revision, cache_dir=hf_cache_dir(),
            endpoint=hf_endpoint(), etag_timeout=timeout, tqdm_class=_hub_bar(progress),
            library_name="se_viz", library_version=__version__))
    except (httpx2.HTTPError, OSError, ValueError) as exc:
        text = str(exc).strip()
        raise _Failed(text.splitlines()[0] if text else type(exc).__name__, hint="") from exc
    _check_blob(path, spec.sha256)
    return path


class _Meter(contextlib.nullcontext):
    """The part of a tqdm bar that pooch and huggingface_hub drive, reported as
    ``progress(done, total)``. With ``file`` (pooch, which counts whole chunks), ``done`` is the
    bytes written so far, and the announced and received sizes are checked against
    ``expected`` as the bytes arrive. ``update_transfer`` (huggingface_hub's network bytes,
    xet's included) is ignored, so that huggingface_hub draws a single bar."""

    def __init__(self, progress: Progress | None, file: IO[bytes] | None = None,
                 expected: int | None = None, *, total: int | None = None, initial: int = 0,
                 **_: object) -> None:
        super().__init__(self)
        self.progress, self.file, self.expected = progress, file, expected
        self.total, self.n = total, int(initial or 0)

    def update(self, n: int = 1) -> None:
        if self.file is not None:
            self._check()
            n = self.file.tell() - self.n
        self.n += n
        if n > 0 and self.progress is not None:
            self.progress(self.n, self.total)

    def _check(self) -> None:
        announced = self.total or None  # pooch: Content-Length, 0 when there is none
        if None not in (self.expected, announced) and announced != self.expected:
            raise _Failed(f"the server announced {announced} bytes but {self.expected} were "
                          "expected", hint="The URL may point to a different file.")
        self.total = announced or self.expected
        if self.total is not None and self.file.tell() > self.total:
            raise _Failed(f"the server sent more than the {self.total} bytes expected",
                          hint="The URL may point to a different file.")

    def close(self, *args: object, **kwargs: object) -> None:
        """Nothing to close; nothing to draw for the other calls either."""

    reset = refresh = update_transfer = set_postfix_str = set_transfer_postfix_str = close


def _hub_bar(progress: Progress | None) -> type[_Meter]:
    """The ``tqdm_class`` for hf_hub_download: a `_Meter` that reports to ``progress``."""

    class Bar(_Meter):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(progress, **kwargs)

    return Bar


def _verify(out: IO[bytes], size: int | None, sha256: str | None) -> None:
    """Check a just-written file (open for reading too) against the known size and sha256."""
    got = out.tell()
    if got == 0:
        raise _Failed("the file is empty", hint="")
    if size is not None and got != size:
        raise _Failed(f"{got} bytes instead of the {size} expected (incomplete download?)",
                      retry=True)
    if sha256:
        out.seek(0)
        digest = _hexdigest(out)
        if digest != sha256.lower():
            raise _Failed(f"sha256 mismatch: got {digest}, expected {sha256.lower()}",
                          hint="The file is corrupt or not the expected one.")


def _check_blob(path: Path, sha256: str | None) -> None:
    """Compare a hub download with ``sha256`` or, without one, its blob's name (the ETag:
    sha256 for LFS files, git blob sha1 otherwise); a mismatch is removed (blob and link)."""
    blob = path.resolve()
    want = (sha256 or blob.name).lower()
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", want):
        return  # no hash to compare with (a copy instead of a symlinked blob)
    with open(blob, "rb") as f:
        got = _hexdigest(f, hashlib.sha256() if len(want) == 64 else
                         hashlib.sha1(b"blob %d\0" % blob.stat().st_size))
    if got != want:
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise _Failed(f"sha256 mismatch: the downloaded file hashes to {got} but the hub "
                      f"announced {want}; the corrupt file was removed",
                      "The transfer or the mirror corrupted it; try again.")


# ----------------------------------------------------------------------------- failing fast


def _resolve_within(url: str, timeout: float) -> None:
    """Refuse anything but http(s); fail fast if the host (or the proxy in use) cannot be
    resolved within ``timeout`` s (requests and huggingface_hub resolve without a timeout)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Failed(f"only http:// and https:// URLs are supported, got {url!r}", hint="")
    host, proxy = parts.hostname, urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        host = urllib.parse.urlsplit(proxy if "//" in proxy else f"//{proxy}").hostname or host
    outcome: list[OSError | None] = []

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
        raise _Failed(f"could not resolve {host!r} within {timeout:g} s")
    if outcome[0] is not None:
        raise _Failed(f"could not resolve {host!r} ({outcome[0]})")


def _probe(url: str, timeout: float) -> None:
    """One HEAD request (redirects, such as the hub's to its CDN, not followed): refused,
    unreachable, hanging or 4xx/5xx fail here in seconds, before huggingface_hub's retries."""
    import requests

    _resolve_within(url, timeout)
    try:
        requests.head(url, timeout=timeout, headers={"User-Agent": USER_AGENT}
                      ).raise_for_status()
    except requests.RequestException as exc:
        raise _requests_failure(exc, 0, None) from exc


def _requests_failure(exc: Exception, done: int, total: int | None) -> _Failed:
    """A requests exception as a _Failed; a transfer that had started may be tried again."""
    import requests

    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        code = exc.response.status_code
        return _Failed(f"HTTP error {code} {exc.response.reason}", hint="",
                       retry=code >= 500 or code == 429)
    if isinstance(exc, requests.Timeout) or "timed out" in str(exc):
        return _Failed("timed out", retry=done > 0)
    if isinstance(exc, requests.exceptions.ChunkedEncodingError) or done > 0:
        of = f" of {total}" if total else ""
        return _Failed(f"the connection ended after {done}{of} bytes (incomplete download)",
                       retry=True)
    cause = getattr(exc.args[0], "reason", exc.args[0]) if exc.args else exc
    return _Failed(f"connection failed: {cause}")
