"""Read values at many memory addresses with one numpy gather (no Python object per value).

Used by the model check before every fast capture (`traced.ModelState`): dict version tags
(`dict_tags`) and a few values of every weight tensor (`compat.value_reader`). Only
addresses the caller keeps valid are read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class _Span:
    """``__array_interface__`` of ``n`` items of ``dtype`` at ``address``: numpy makes a
    view without reading anything; only the gathered items are ever touched."""

    def __init__(self, address: int, n: int, dtype: np.dtype) -> None:
        self.__array_interface__ = {"data": (address, True), "shape": (n,),
                                    "typestr": dtype.str, "version": 3}


def reader(addresses: Sequence[int], dtype=np.uint64):
    """A function returning the items of ``dtype`` at ``addresses`` (each aligned to the
    item size relative to the lowest one), as one array, read anew on every call."""
    dtype = np.dtype(dtype)
    if len(addresses) == 0:
        return lambda: np.empty(0, dtype)
    at = np.asarray(addresses, np.int64)
    low = int(at.min())
    index = ((at - low) // dtype.itemsize).astype(np.intp)
    view = np.asarray(_Span(low, int(index.max()) + 1, dtype))
    return lambda: view[index]
