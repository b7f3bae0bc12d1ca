"""Find, download and cache the pretrained SE-ResNet-50 weights, safely.

Two sources, each through the library made for it:

* timm's ``seresnet50.ra2_in1k`` is a Hugging Face Hub file: it is looked up in, and downloaded
  into, the user's Hugging Face cache with ``huggingface_hub`` (`se_viz.engine.hub`), so a copy
  timm already has is used and ``HF_HUB_OFFLINE`` / ``HF_ENDPOINT`` work as usual.
* Any other file (PaddleClas's ``.pdparams``, or any file from ``SE_VIZ_MIRROR`` or ``--url``)
  is fetched with ``pooch`` (requests underneath) into se_viz's cache, sha256-checked before
  it is moved into place.

se_viz's own code keeps only what neither library does (`se_viz.engine.transfer`, `hub`): a
bounded name lookup and probe so that an offline machine fails within seconds (both libraries
resolve names without a timeout, and huggingface_hub retries an unreachable hub for ~23 s);
retries with backoff for transfers cut mid-way (pooch has none); byte counts checked as the
bytes arrive; a content-hash check of hub downloads (huggingface_hub checks only the size);
staging folders whose name carries the writer's pid, so a killed run leaves nothing usable and
the next run removes it; progress as ``progress(done, total)`` for the CLI's tqdm bar and the
app's st.progress; and every failure as a ``WeightsError`` that says where to put the file by
hand. Which file comes from where: `cached_path` (no request) and `fetch`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..arch import PRETRAINED, PretrainedFile
from ..errors import WeightsError
from ..paths import atomic_file, cache_dir, cleanup_partials
from . import hub, transfer
from .transfer import Progress, TransferError

_CHUNK = transfer.CHUNK
# fetch() only sweeps partial files idle this long, so it never deletes a download in progress.
_STALE_AFTER_S = 120.0


# ----------------------------------------------------------------------------- cache layout


def _spec(arch: str) -> PretrainedFile:
    try:
        return PRETRAINED[arch]
    except KeyError:
        known = ", ".join(sorted(PRETRAINED))
        raise WeightsError(f"Unknown architecture {arch!r}. Known ones: {known}.") from None


def expected_path(arch: str) -> Path:
    """Where se_viz's cache keeps the file for ``arch`` (and where to put it by hand)."""
    return cache_dir() / _spec(arch).filename


def _local_file(path: Path, size: int | None) -> Path | None:
    try:
        got = path.stat().st_size if path.is_file() else 0
    except OSError:
        return None
    return path if got and (size is None or got == size) else None


def cached_path(arch: str) -> Path | None:
    """The complete file for ``arch`` without any request: se_viz's cache first (a file the
    user installed), then, for hub files, the Hugging Face cache. None if neither has it."""
    spec = _spec(arch)
    found = _local_file(expected_path(arch), spec.size)
    if found is None and spec.hf_repo:
        found = hub.cached(spec)
    return found


def is_pretrained_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is one of the known pretrained files as cached (either cache)."""
    try:
        target = Path(path).resolve()
        return any(p is not None and p.resolve() == target
                   for p in (cached_path(a) for a in PRETRAINED))
    except OSError:
        return False


def _mirror() -> str:
    return os.environ.get("SE_VIZ_MIRROR", "").strip()


def source_url(arch: str) -> str:
    """Where ``fetch`` gets the file: ``$SE_VIZ_MIRROR/<filename>`` if that is set, else the
    Hugging Face endpoint (``$HF_ENDPOINT``) for hub files, else the official URL."""
    spec, mirror = _spec(arch), _mirror()
    if mirror:
        return f"{mirror.rstrip('/')}/{spec.filename}"
    return hub.file_url(spec) if spec.hf_repo else spec.url


def destination_folder(arch: str) -> Path:
    """Where `fetch` would put the file: the Hugging Face cache's repo folder for hub files
    (unless SE_VIZ_MIRROR is set), else se_viz's cache."""
    spec = _spec(arch)
    return hub.repo_folder(spec) if spec.hf_repo and not _mirror() else cache_dir()


def describe_cache() -> list[dict]:
    """One dict per known arch: arch, path, present, size (bytes or None), url, description,
    and ``hub_cache`` (the Hugging Face cache folder looked in, or None)."""
    rows = []
    for arch, spec in PRETRAINED.items():
        path = cached_path(arch)
        rows.append({
            "arch": arch,
            "path": str(path or expected_path(arch)),
            "present": path is not None,
            "size": path.stat().st_size if path is not None else None,
            "url": source_url(arch),
            "description": spec.description,
            "hub_cache": str(hub.repo_folder(spec)) if spec.hf_repo else None,
        })
    return rows


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- downloads


def _manual_hint(url: str, dest: Path) -> str:
    arch = next((a for a, s in PRETRAINED.items() if s.filename == dest.name), None)
    install = f" (or run 'se-viz weights install FILE --arch {arch}')" if arch else ""
    return (f"Download it by hand from {url} and save it as {dest}{install}, or pass its path "
            "with --weights PATH.")


def download(url: str, dest: Path, *, expected_size: int | None = None,
             expected_sha256: str | None = None, progress: Progress | None = None,
             timeout: float = 10.0, chunk_size: int = transfer.CHUNK,
             retries: int = transfer.RETRIES) -> Path:
    """Download ``url`` to ``dest`` atomically (pooch, `se_viz.engine.transfer.fetch_url`).

    ``progress(done_bytes, total_bytes_or_None)`` is called as bytes arrive. ``timeout``
    bounds name resolution, the connect and each read; a transfer cut mid-way is tried again
    ``retries`` times. Any failure raises ``WeightsError`` (KeyboardInterrupt is re-raised)
    after removing the partial file; an existing ``dest`` is left as it was.
    """
    dest = Path(dest)
    try:
        return transfer.fetch_url(url, dest, expected_size=expected_size,
                                  expected_sha256=expected_sha256, progress=progress,
                                  timeout=timeout, chunk_size=chunk_size, retries=retries)
    except TransferError as exc:
        hint = f"{exc.hint} " if exc.hint else ""
        raise WeightsError(f"Could not download {dest.name} from {url}: {exc.reason}. "
                           f"{hint}{_manual_hint(url, dest)}") from exc
    except OSError as exc:  # the cache folder itself: permissions, disk full
        raise WeightsError(f"Could not write {dest}: {exc}. Free some space or set SE_VIZ_HOME "
                           f"to a writable folder; or download {url} by hand and pass its path "
                           "with --weights PATH.") from exc


# ----------------------------------------------------------------------------- entry points


def _from_hub(arch: str, spec: PretrainedFile, progress: Progress | None,
              timeout: float) -> Path:
    url = hub.file_url(spec)
    try:
        if hub.offline():
            raise TransferError(f"HF_HUB_OFFLINE is set and the Hugging Face cache "
                                f"({hub.repo_folder(spec)}) does not have it", hint="")
        transfer.probe(url, timeout)
        return hub.download(spec, progress=progress, timeout=timeout)
    except (TransferError, hub.HubError) as exc:
        hint = f"{exc.hint} " if exc.hint else ""
        raise WeightsError(f"Could not download {spec.hf_filename} of {spec.hf_repo} from {url}: "
                           f"{exc.reason}. {hint}{_manual_hint(url, expected_path(arch))} "
                           f"'hf download {spec.hf_repo} {spec.hf_filename}' also works (it "
                           "fills the Hugging Face cache).") from exc


def fetch(arch: str, *, progress: Progress | None = None, timeout: float = 10.0,
          url: str | None = None) -> Path:
    """Return the cached weights for ``arch`` (`cached_path`), downloading them if needed.

    The source is ``url`` if given, else ``$SE_VIZ_MIRROR/<filename>`` if set (both through
    pooch into se_viz's cache), else the hub (``$HF_ENDPOINT``, into the Hugging Face cache)
    for hub files and the official URL for the others.
    """
    spec = _spec(arch)
    cleanup_partials(older_than=_STALE_AFTER_S)
    cached = cached_path(arch)
    if cached is not None:
        return cached
    if url is None and not _mirror() and spec.hf_repo:
        return _from_hub(arch, spec, progress, timeout)
    return download(url or source_url(arch), expected_path(arch), expected_size=spec.size,
                    expected_sha256=spec.sha256, progress=progress, timeout=timeout)


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
        with atomic_file(dest) as out, open(src, "rb") as f:
            digest = hashlib.sha256()
            while chunk := f.read(_CHUNK):
                out.write(chunk)
                digest.update(chunk)
            size, got = out.tell(), digest.hexdigest()
            if spec.size is not None and size != spec.size:
                raise TransferError(f"got {size} bytes but {spec.size} were expected")
            if spec.sha256 is not None and got != spec.sha256.lower():
                raise TransferError(f"sha256 mismatch: got {got}, "
                                    f"expected {spec.sha256.lower()}")
    except TransferError as exc:
        raise WeightsError(f"{src} is not the expected {spec.filename}: {exc.reason}. "
                           f"Download it again from {spec.url}.") from exc
    except OSError as exc:
        raise WeightsError(f"Could not copy {src} to {dest}: {exc}. Set SE_VIZ_HOME to a writable "
                           "folder or pass the file with --weights PATH.") from exc
    return dest
