"""Listing an image folder (ImageFolder: one sub-folder per class) as a sorted file list."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})


@dataclass(frozen=True)
class FileList:
    """Sorted images of an ImageFolder: files[i] (relative, '/') has class classes[labels[i]]."""

    root: Path
    classes: tuple[str, ...]
    files: tuple[str, ...]
    labels: np.ndarray  # (N,) int64

    def lines(self) -> Iterator[str]:
        for f, k in zip(self.files, self.labels):
            yield json.dumps([self.classes[k], f]) + "\n"

    def digest(self) -> str:
        h = hashlib.sha256()
        for line in self.lines():
            h.update(line.encode("utf-8", "surrogateescape"))
        return h.hexdigest()


def list_images(root: str | os.PathLike[str], limit_per_class: int | None = None) -> FileList:
    """ImageFolder listing of ``root``: classes and files sorted, dot-files and non-images
    left out."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"'{root}' is not a folder. Give a folder of images, or of one "
                           "sub-folder of images per class.")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    groups = [(d.name, _images_under(d, root)) for d in subdirs]
    loose = sorted(p.name for p in root.iterdir() if _is_image(p))
    if loose:
        name = root.resolve().name or "images"
        name = f"{name} (top level)" if name in [g[0] for g in groups] else name
        groups.append((name, loose))
    groups = sorted((name, files[:limit_per_class]) for name, files in groups if files)
    if not groups:
        raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in '{root}' "
                           "or its sub-folders.")
    classes = tuple(name for name, _ in groups)
    files = tuple(f for _, fs in groups for f in fs)
    labels = np.concatenate([np.full(len(fs), k, np.int64) for k, (_, fs) in enumerate(groups)])
    return FileList(root, classes, files, labels)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()


def _images_under(folder: Path, root: Path) -> list[str]:
    found, seen = [], set()
    for here, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen:  # a symlink loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [Path(here, n).relative_to(root).as_posix() for n in names
                  if _is_image(Path(here, n))]
    return sorted(found)


def file_stamps(root: Path, names: Sequence[str]) -> np.ndarray:
    """(n, 2) int64: size in bytes and mtime in ns of each file (-1, -1 if it is gone); the
    gate store keeps them to tell a moved or changed file."""
    stamps = np.full((len(names), 2), -1, np.int64)
    for i, name in enumerate(names):
        try:
            st = os.stat(root / name)
        except OSError:
            continue
        stamps[i] = st.st_size, st.st_mtime_ns
    return stamps
