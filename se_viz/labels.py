"""Human-readable ImageNet-1k class names (standard library only).

The names ship with the package in ``se_viz/data/imagenet_classes.txt``: 1000 lines,
line *i* is the name of class index *i* in the standard ImageNet-1k order
(0 = tench, 1 = goldfish, ..., 999 = toilet tissue). See ``se_viz/data/README.md``
for where they come from.
"""

from __future__ import annotations

import functools
import operator
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

NUM_IMAGENET_CLASSES = 1000
_LABELS_FILE = "imagenet_classes.txt"
_WNIDS_FILE = "imagenet_wnids.txt"


def _shipped_lines(filename: str, what: str) -> tuple[str, ...]:
    """The stripped lines of ``se_viz/data/<filename>``; RuntimeError (reinstall) when the
    file cannot be read or does not hold exactly 1000 non-empty lines."""
    resource = resources.files("se_viz") / "data" / filename
    try:
        text = resource.read_text(encoding="utf-8")
    except OSError as exc:  # pragma: no cover - broken install
        raise RuntimeError(
            f"ImageNet {what} file se_viz/data/{filename} could not be read "
            f"({exc}); reinstall se_viz."
        ) from exc
    lines = tuple(line.strip() for line in text.splitlines())
    if len(lines) != NUM_IMAGENET_CLASSES or not all(lines):
        raise RuntimeError(
            f"se_viz/data/{filename} must have {NUM_IMAGENET_CLASSES} non-empty lines, "
            f"found {len(lines)} lines ({sum(1 for line in lines if not line)} empty); "
            "reinstall se_viz."
        )
    return lines


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """Return the 1000 ImageNet-1k class names, index *i* = class *i*.

    Raises RuntimeError if the shipped file is missing or does not hold exactly
    1000 non-empty lines (a broken install).
    """
    return _shipped_lines(_LABELS_FILE, "class names")


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """Return the 1000 WordNet ids (``n01440764`` ...), index *i* = class *i*, as ImageNet
    folders are named. Raises RuntimeError for a broken install."""
    lines = _shipped_lines(_WNIDS_FILE, "WordNet ids")
    if not all(w.startswith("n") for w in lines):
        raise RuntimeError(f"se_viz/data/{_WNIDS_FILE} must hold WordNet ids (n01440764 ...); "
                           "reinstall se_viz.")
    return lines


def read_labels(source: str | os.PathLike | bytes | Sequence[str], num_classes: int
                ) -> tuple[str, ...]:
    """Class names for a head of ``num_classes``: a text file (path or its bytes), one name a
    line, or a sequence of names. ValueError, saying what to fix, unless there is exactly
    one non-empty name per class."""
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValueError("the labels file is not UTF-8 text; save it as plain text with "
                             "one class name per line") from None
        names = text.splitlines()
    elif isinstance(source, (str, os.PathLike)):
        try:
            names = Path(source).read_text(encoding="utf-8-sig").splitlines()
        except OSError as exc:
            raise ValueError(f"cannot read labels file {source}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise ValueError(f"labels file {source} is not UTF-8 text; save it as plain text "
                             "with one class name per line") from None
    else:
        names = list(source)
    names = [str(n).strip() for n in names]
    while names and not names[-1]:
        names.pop()
    if len(names) != num_classes or not all(names):
        raise ValueError(f"the labels have {len(names)} line(s) ({sum(not n for n in names)} "
                         f"empty) but the network has {num_classes} classes: give one "
                         "non-empty name per line, in class-index order")
    return tuple(names)


def label_for(index: int, num_classes: int = NUM_IMAGENET_CLASSES,
              names: Sequence[str] | None = None) -> str:
    """Name of class ``index`` (``names``, the network's own class names, win when given).

    For a 1000-class (ImageNet-1k) head this is the ImageNet name; for any other
    head size it is the generic ``"class {index}"``. Accepts any integer-like
    value (e.g. a NumPy integer). Raises IndexError for an index outside
    ``[0, 1000)`` when ``num_classes == 1000``.
    """
    index = operator.index(index)
    if names is not None:
        if not 0 <= index < len(names):
            raise IndexError(f"class index {index} is outside 0..{len(names) - 1}")
        return names[index]
    if num_classes == NUM_IMAGENET_CLASSES:
        if not 0 <= index < NUM_IMAGENET_CLASSES:
            raise IndexError(
                f"class index {index} is outside 0..{NUM_IMAGENET_CLASSES - 1}"
            )
        return imagenet_labels()[index]
    return f"class {index}"
