"""timm's weights on the Hugging Face Hub, through ``huggingface_hub`` and the user's HF cache.

A file already in the Hugging Face cache (put there by timm, ``hf download`` or se_viz) is used
as it is, without a request. Otherwise ``hf_hub_download`` fetches it into that cache (atomic:
a unique ``blobs/<etag>.<id>.incomplete`` renamed into place, removed on failure).

The environment is read at each call, not at import, so a notebook or a test can change it:
``HF_HUB_CACHE`` / ``HF_HOME`` / ``XDG_CACHE_HOME`` (where the cache is), ``HF_HUB_OFFLINE``
(never ask the network) and ``HF_ENDPOINT`` (a mirror of the hub), as huggingface_hub reads them.

What se_viz adds here, because huggingface_hub does not do it: the downloaded bytes are checked
against the blob's content hash (the hub's ETag of an LFS file is its sha256; huggingface_hub
only checks the size) and a mismatching blob is removed; partial blobs that a killed process
left behind are swept once idle. Failing fast when the hub cannot be reached is done by the
caller (`se_viz.engine.download`) before this module is asked to download.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..arch import PretrainedFile
from ..version import __version__

Progress = Callable[[int, int | None], None]

DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = {"1", "ON", "YES", "TRUE"}
_STALE_AFTER_S = 120.0
_CHUNK = 1 << 20


class HubError(Exception):
    """Why a hub download failed (turned into a WeightsError by `se_viz.engine.download`)."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def cache_dir() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expandvars(explicit)).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def endpoint() -> str:
    """``$HF_ENDPOINT`` (a mirror) or the hub itself, without a trailing slash."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).strip().rstrip("/")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now, or was when
    huggingface_hub was imported (it then refuses every request itself)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in _TRUE:
            return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(constants is not None and constants.is_offline_mode())


def revision(spec: PretrainedFile) -> str:
    return spec.hf_revision or "main"


def file_url(spec: PretrainedFile) -> str:
    """``{endpoint}/{repo}/resolve/{revision}/{filename}``: what huggingface_hub asks for."""
    return f"{endpoint()}/{spec.hf_repo}/resolve/{revision(spec)}/{spec.hf_filename}"


def repo_folder(spec: PretrainedFile) -> Path:
    """``<cache>/models--{owner}--{name}`` (the hub cache's documented layout)."""
    return cache_dir() / ("models--" + str(spec.hf_repo).replace("/", "--"))


def _hf():
    """huggingface_hub, imported late; its once-a-day telemetry request is off unless the
    user asked for it."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import huggingface_hub

    return huggingface_hub


def cached(spec: PretrainedFile) -> Path | None:
    """The file from the Hugging Face cache, without any request; None if it is not there."""
    hf = _hf()
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf.hf_hub_download(spec.hf_repo, spec.hf_filename, revision=revision(spec),
                                  cache_dir=cache_dir(), local_files_only=True)
    except (EntryNotFoundError, OSError, ValueError):
        return None
    path = Path(path)
    try:
        return path if path.is_file() and path.stat().st_size > 0 else None
    except OSError:
        return None


def _bar_class(progress: Progress | None) -> type:
    """A tqdm stand-in for ``hf_hub_download(tqdm_class=...)`` that calls
    ``progress(done, total)``; with no callback it shows nothing (no bar from library code)."""

    class Bar:
        def __init__(self, *args: object, total: int | None = None, initial: int = 0,
                     **kwargs: object) -> None:
            self.total, self.n = total, int(initial or 0)

        def update(self, n: int = 1) -> None:
            self.n += int(n)
            if progress is not None and n > 0:
                progress(self.n, self.total)

        def close(self) -> None:
            pass

        def __enter__(self) -> "Bar":
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    return Bar


def download(spec: PretrainedFile, *, progress: Progress | None = None,
             timeout: float = 10.0) -> Path:
    """``hf_hub_download`` the file into the Hugging Face cache and check its content hash.

    Raises HubError (the caller adds where to put the file by hand). KeyboardInterrupt passes
    through; huggingface_hub removes its partial file in either case.
    """
    hf = _hf()
    import httpx2  # huggingface_hub's HTTP client: its transport errors pass through
    from huggingface_hub.errors import EntryNotFoundError

    sweep_partials(spec)
    try:
        path = Path(hf.hf_hub_download(
            spec.hf_repo, spec.hf_filename, revision=revision(spec), cache_dir=cache_dir(),
            endpoint=endpoint(), etag_timeout=timeout, tqdm_class=_bar_class(progress),
            library_name="se_viz", library_version=__version__))
    except EntryNotFoundError as exc:
        raise HubError(f"{spec.hf_filename} is not in {spec.hf_repo} at {revision(spec)} "
                       f"({_first_line(exc)})", "The mirror (HF_ENDPOINT) may lack it.") from exc
    except (httpx2.HTTPError, OSError, ValueError) as exc:
        raise HubError(_first_line(exc) or type(exc).__name__) from exc
    verify(path, spec.sha256)
    return path


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def verify(path: Path, sha256: str | None = None) -> None:
    """Check a freshly downloaded file's content against ``sha256`` or, without one, against
    its blob name (the ETag: sha256 for LFS files, git blob sha1 otherwise). On a mismatch
    the blob and the snapshot link to it are removed and HubError is raised."""
    blob = path.resolve()
    etag = blob.name.lower()
    if sha256:
        want, algo = sha256.lower(), "sha256"
    elif re.fullmatch(r"[0-9a-f]{64}", etag):
        want, algo = etag, "sha256"
    elif re.fullmatch(r"[0-9a-f]{40}", etag):
        want, algo = etag, "git-sha1"
    else:
        return  # no hash to compare with (a copy instead of a symlinked blob)
    digest = hashlib.sha256() if algo == "sha256" else hashlib.sha1(
        b"blob %d\0" % blob.stat().st_size)
    with open(blob, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    got = digest.hexdigest()
    if got != want:
        path.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise HubError(f"sha256 mismatch: the downloaded file hashes to {got} but the hub "
                       f"announced {want} ({algo}); the corrupt file was removed",
                       "The transfer or the mirror corrupted it; try again.")


def sweep_partials(spec: PretrainedFile, older_than: float = _STALE_AFTER_S) -> int:
    """Delete ``blobs/*.incomplete`` of this repo idle for ``older_than`` seconds (left by a
    killed download; huggingface_hub never reuses them). Returns the count."""
    blobs = repo_folder(spec) / "blobs"
    if not blobs.is_dir():
        return 0
    removed, now = 0, time.time()
    for entry in blobs.glob("*.incomplete"):
        try:
            if now - entry.stat().st_mtime >= older_than:
                entry.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed
