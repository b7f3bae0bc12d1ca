"""Human-readable ImageNet-1k class names (standard library only).

The names ship with the package in ``se_viz/data/imagenet_classes.txt``: 1000 lines,
line *i* is the name of class index *i* in the standard ImageNet-1k order
(0 = tench, 1 = goldfish, ..., 999 = toilet tissue). See ``se_viz/data/README.md``
for where they come from.
"""

from __future__ import annotations

import functools
import operator
from importlib import resources

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


def label_for(index: int, num_classes: int = NUM_IMAGENET_CLASSES) -> str:
    """Name of class ``index``.

    For a 1000-class (ImageNet-1k) head this is the ImageNet name; for any other
    head size it is the generic ``"class {index}"``. Accepts any integer-like
    value (e.g. a NumPy integer). Raises IndexError for an index outside
    ``[0, 1000)`` when ``num_classes == 1000``.
    """
    index = operator.index(index)
    if num_classes == NUM_IMAGENET_CLASSES:
        if not 0 <= index < NUM_IMAGENET_CLASSES:
            raise IndexError(
                f"class index {index} is outside 0..{NUM_IMAGENET_CLASSES - 1}"
            )
        return imagenet_labels()[index]
    return f"class {index}"
