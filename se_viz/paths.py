"""Cache folders and the one atomic write every file se_viz produces goes through.

A file is written into a hidden ``.{name}.{pid}.{random}.part`` beside its destination,
flushed and fsynced, and only then moved into place (``os.replace``, or ``os.link`` for a
create-if-absent). On any failure, KeyboardInterrupt included, the partial file is removed
and the destination is left as it was. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

PART_SUFFIX = ".part"


def cache_dir() -> Path:
    """se_viz's cache: ``$SE_VIZ_HOME`` if set, else ``~/.cache/se_viz``. Not created here."""
    home = os.environ.get("SE_VIZ_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "se_viz"


def graph_cache_dir() -> Path:
    """Where the fast engine keeps its ONNX graphs: ``cache_dir()/graphs`` (safe to delete:
    a missing graph is traced again from the model)."""
    return cache_dir() / "graphs"


@contextlib.contextmanager
def atomic_file(dest: str | os.PathLike[str], mode: str = "wb", *, exclusive: bool = False,
                **open_args: Any) -> Iterator[IO]:
    """Open a temporary file beside ``dest``; when the block ends normally it is fsynced and
    renamed to ``dest`` (with ``exclusive``, linked: FileExistsError if ``dest`` exists).
    When the block raises, the temporary file is removed and ``dest`` is untouched."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.{os.getpid()}.", suffix=PART_SUFFIX,
                                dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, mode, **open_args) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        if exclusive:
            os.link(tmp, dest)
        else:
            os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(dest.parent)


def atomic_write(dest: str | os.PathLike[str], data: bytes | str, *,
                 exclusive: bool = False) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``dest`` atomically; returns the path."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    with atomic_file(dest, "wb", exclusive=exclusive) as handle:
        handle.write(data)
    return Path(dest)


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


def writer_alive(name: str) -> bool:
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


def cleanup_partials(folder: str | os.PathLike[str] | None = None, *,
                     older_than: float = 0.0) -> int:
    """Delete leftover ``*.part`` files and staging folders (from killed runs) in ``folder``
    (default: the cache).

    One is removed when the process that wrote it (its name carries the pid) is gone, or
    when its last write is at least ``older_than`` seconds ago. Returns the count.
    """
    folder = cache_dir() if folder is None else Path(folder)
    if not folder.is_dir():
        return 0
    now, removed = time.time(), 0
    for entry in folder.iterdir():
        if not entry.name.endswith(PART_SUFFIX) or entry.is_symlink():
            continue
        try:
            if writer_alive(entry.name) and now - _last_write(entry) < older_than:
                continue
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def _last_write(entry: Path) -> float:
    """mtime of a file, or the newest mtime inside a staging folder."""
    times = [entry.stat().st_mtime]
    if entry.is_dir():
        times += [p.stat().st_mtime for p in entry.iterdir() if p.is_file()]
    return max(times)
