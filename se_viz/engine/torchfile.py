"""PyTorch ``.pth`` / ``.pt`` checkpoints read without torch, and without running anything.

Two formats (``torch/serialization.py``):

* zip (torch >= 1.6): ``<top>/data.pkl`` is a pickle whose tensors name their data by the
  persistent id ``('storage', StorageType, key, location, numel)``; the raw bytes are the record
  ``<top>/data/<key>``, in the byte order of ``<top>/byteorder`` (absent: little).
* legacy: pickles in a row - magic number, protocol version, sys_info, the object (persistent
  ids ``(..., numel, view_metadata)``), the storage keys - then, key by key, an int64
  little-endian element count and the raw little-endian bytes.

The pickle is read by an unpickler whose ``find_class`` knows only the names a state dict uses,
each mapped to an inert local stand-in: a rebuild call records (storage, offset, size, stride)
and numpy builds the array afterwards. Any other name (``os.system``, a pickled ``nn.Module``)
is refused before anything is called.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import types
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import WeightsError

__all__ = ["read_pth"]

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_NESTS = ("state_dict", "model", "state_dict_ema")
_MAX_EXPANDED = 1 << 26  # elements a stride-0 (expanded) tensor may have beyond its data
_HINT = ("Save a state dict (torch.save(model.state_dict(), path)) or convert the checkpoint "
         "to .safetensors.")


# ---------------------------------------------------------------- inert stand-ins

@dataclass(frozen=True, slots=True)
class _Dtype:
    """A torch dtype: its name and the numpy code of its bytes (bfloat16: 'u2')."""

    name: str
    code: str

    @property
    def itemsize(self) -> int:
        return np.dtype(self.code).itemsize


_DTYPES = {d.name: d for d in (
    _Dtype("float64", "f8"), _Dtype("float32", "f4"), _Dtype("float16", "f2"),
    _Dtype("bfloat16", "u2"), _Dtype("int64", "i8"), _Dtype("int32", "i4"),
    _Dtype("int16", "i2"), _Dtype("int8", "i1"), _Dtype("uint8", "u1"), _Dtype("bool", "?"),
    _Dtype("uint16", "u2"), _Dtype("uint32", "u4"), _Dtype("uint64", "u8"))}

_STORAGES = {"DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
             "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
             "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
             "BoolStorage": "bool", "UntypedStorage": "uint8"}


@dataclass(frozen=True, slots=True)
class _StorageType:
    dtype: _Dtype


@dataclass(frozen=True, slots=True)
class _Marker:
    """A class name that is recognised but never called (torch.Tensor, nn.Parameter)."""

    name: str


class _Storage:
    """Raw tensor data: a root with bytes, or (legacy) a window ``start:start+numel`` of one."""

    __slots__ = ("dtype", "numel", "order", "raw", "base", "start")

    def __init__(self, dtype: _Dtype, numel: int, order: str = "<", raw: bytes | None = None,
                 base: _Storage | None = None, start: int = 0) -> None:
        self.dtype, self.numel, self.order, self.raw = dtype, numel, order, raw
        self.base, self.start = base, start

    def elements(self, dtype: _Dtype) -> np.ndarray:
        """The data as a 1-D read-only array of ``dtype``, in the file's byte order."""
        root = self.base or self
        if root.raw is None:
            raise WeightsError("a tensor's data is missing from the file; it is truncated or "
                               "corrupt")
        nbytes = self.numel * self.dtype.itemsize
        return np.frombuffer(root.raw, np.dtype(dtype.code).newbyteorder(root.order),
                             count=nbytes // dtype.itemsize,
                             offset=self.start * root.dtype.itemsize)


@dataclass(frozen=True, slots=True)
class _Tensor:
    storage: _Storage
    dtype: _Dtype
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]
    negate: bool = False

    def numpy(self) -> np.ndarray:
        """A C-contiguous copy in native byte order; bfloat16 becomes float32."""
        flat = self.storage.elements(self.dtype)
        if 0 in self.size:
            out = np.zeros(self.size, flat.dtype)
        else:
            last = self.offset + sum((n - 1) * s for n, s in zip(self.size, self.stride))
            numel = math.prod(self.size)
            if last >= flat.size or (numel > flat.size and numel > _MAX_EXPANDED):
                raise WeightsError("a tensor reaches outside its data; the file is corrupt")
            strides = tuple(s * flat.itemsize for s in self.stride)
            out = np.lib.stride_tricks.as_strided(flat[self.offset:], self.size, strides,
                                                  writeable=False).copy()
        out = out.astype(out.dtype.newbyteorder("="), copy=False)
        if self.dtype.name == "bfloat16":
            out = (out.astype(np.uint32) << 16).view(np.float32)
        return -out if self.negate else out


class _Inert:
    """A stand-in the unpickler may call; a pickle cannot change it (no __dict__, no setattr)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., object]) -> None:
        object.__setattr__(self, "_fn", fn)

    def __setattr__(self, key: str, value: object) -> None:
        raise WeightsError("the file tries to modify a loader function; the file is corrupt")

    def __call__(self, *args: object) -> object:
        return self._fn(*args)


# ---------------------------------------------------------------- rebuild calls

def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise WeightsError(f"a tensor has an invalid size or offset {value!r}; the file is corrupt")
    return value


def _tensor(storage: object, offset: object, size: object, stride: object,
            dtype: _Dtype | None = None, metadata: object = None) -> _Tensor:
    if not isinstance(storage, _Storage) or not isinstance(size, (tuple, list)) \
            or not isinstance(stride, (tuple, list)) or len(size) != len(stride):
        raise WeightsError("a tensor record is malformed; the file is corrupt")
    if metadata is not None and not isinstance(metadata, dict):
        raise WeightsError("a tensor record is malformed; the file is corrupt")
    flags = {k for k, v in (metadata or {}).items() if v}
    if flags - {"neg", "conj"}:  # conj is a no-op on real tensors
        raise WeightsError(f"a tensor has flags {sorted(map(str, flags))} that se_viz cannot "
                           f"read. {_HINT}")
    return _Tensor(storage, dtype or storage.dtype, _int(offset), tuple(map(_int, size)),
                   tuple(map(_int, stride)), "neg" in flags)


def _rebuild_tensor(storage, offset, size, stride) -> _Tensor:  # torch <= 0.3
    return _tensor(storage, offset, size, stride)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None) -> _Tensor:
    return _tensor(storage, offset, size, stride, metadata=metadata)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None) -> _Tensor:
    if not isinstance(dtype, _Dtype):
        raise WeightsError("a tensor record has no valid dtype; the file is corrupt")
    return _tensor(storage, offset, size, stride, dtype, metadata)


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None) -> _Tensor:
    if not isinstance(data, _Tensor):
        raise WeightsError("a parameter record holds no tensor; the file is corrupt")
    return data


def _rebuild_from_type_v2(func, new_type, args, state) -> _Tensor:
    if new_type not in (_TENSOR, _PARAMETER) or not isinstance(func, _Inert) \
            or not isinstance(args, tuple):
        raise WeightsError(f"the file holds a tensor subclass se_viz cannot read. {_HINT}")
    return _rebuild_parameter(func(*args))


def _latin1(text: object, encoding: object = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes, and nothing more."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise WeightsError("a bytes record is malformed; the file is corrupt")
    return text.encode("latin1")


_TENSOR, _PARAMETER = _Marker("torch.Tensor"), _Marker("torch.nn.Parameter")


def _allowed() -> dict[tuple[str, str], object]:
    table: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): OrderedDict, ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset, ("_codecs", "encode"): _Inert(_latin1),
        ("argparse", "Namespace"): types.SimpleNamespace,  # timm training checkpoints' 'args'
        ("torch", "Size"): tuple, ("torch", "Tensor"): _TENSOR,
        ("torch.nn.parameter", "Parameter"): _PARAMETER,
        ("torch._tensor", "_rebuild_from_type_v2"): _Inert(_rebuild_from_type_v2),
        ("torch._utils", "_rebuild_tensor"): _Inert(_rebuild_tensor),
        ("torch._utils", "_rebuild_tensor_v2"): _Inert(_rebuild_tensor_v2),
        ("torch._utils", "_rebuild_tensor_v3"): _Inert(_rebuild_tensor_v3),
        ("torch._utils", "_rebuild_parameter"): _Inert(_rebuild_parameter),
        ("torch._utils", "_rebuild_parameter_with_state"): _Inert(_rebuild_parameter),
    }
    table.update({("torch", name): dtype for name, dtype in _DTYPES.items()})
    for cls, dtype in _STORAGES.items():
        for module in ("torch", "torch.cuda", "torch.storage"):
            table[module, cls] = _StorageType(_DTYPES[dtype])
    return table


_ALLOWED = _allowed()


def _refused(module: str, name: str) -> WeightsError:
    what = f"{module}.{name}"
    if module == "torch._utils" or (module in ("torch", "torch.cuda") and re.fullmatch(
            r"\w*Storage|float\w*|complex\w*|q\w*int\w*|bits\w*|u?int\d\w*", name)):
        return WeightsError(f"it stores tensors as '{what}', which se_viz cannot read (it reads "
                            "float64/32/16, bfloat16, integer and bool tensors); nothing in it was "
                            "run. Convert the tensors to float32, or to .safetensors.")
    return WeightsError(f"refused: the file asks to load '{what}', which a state dict never needs "
                        f"(a whole pickled model, or something malicious); nothing in it was run. "
                        f"{_HINT}")


class _Unpickler(pickle.Unpickler):
    """Builds containers and inert tensor records only; never imports or calls anything else."""

    def __init__(self, file: io.BytesIO, storage: Callable[[object], _Storage] | None = None):
        super().__init__(file, encoding="utf-8")
        self._storage = storage

    def find_class(self, module: str, name: str) -> object:
        module = "builtins" if module == "__builtin__" else module  # Python 2 pickles
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _refused(module, name)
        return found

    def persistent_load(self, pid: object) -> _Storage:
        if self._storage is None:
            raise WeightsError("a header record refers to tensor data; the file is corrupt")
        return self._storage(pid)


# ---------------------------------------------------------------- the two formats

def _storage_id(pid: object) -> tuple[_Dtype, str, int, object]:
    """(dtype, key, numel, view_metadata) from a persistent id."""
    kind = pid[0] if isinstance(pid, tuple) and pid else None
    kind = kind.decode("ascii") if isinstance(kind, bytes) else kind
    if kind == "module":
        raise WeightsError("the file holds a whole pickled model (with its source code), not a "
                           f"state dict; nothing in it was run. {_HINT}")
    if kind != "storage" or len(pid) not in (5, 6) or not isinstance(pid[1], _StorageType) \
            or not isinstance(pid[2], str):
        raise WeightsError("a tensor data reference is malformed; the file is corrupt")
    return pid[1].dtype, pid[2], _int(pid[4]), pid[5] if len(pid) == 6 else None


def _load_zip(data: bytes) -> object:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        top = names[0].split("/")[0] if names else ""
        if f"{top}/data.pkl" not in names:
            raise WeightsError("a zip archive without data.pkl, not a PyTorch checkpoint")
        order = "<"
        if f"{top}/byteorder" in names:
            order = {b"little": "<", b"big": ">"}[zf.read(f"{top}/byteorder").strip()]
        storages: dict[str, _Storage] = {}

        def record(path: str, nbytes: int | None = None) -> bytes:
            info = zf.getinfo(path)
            if (nbytes is not None and info.file_size != nbytes) or info.file_size > 32 * len(data):
                raise WeightsError(f"the record {path} has {info.file_size} bytes, expected "
                                   f"{nbytes}; the file is corrupt")
            return zf.read(info)

        def storage(pid: object) -> _Storage:
            dtype, key, numel, _ = _storage_id(pid)
            if key not in storages:
                raw = record(f"{top}/data/{key}", numel * dtype.itemsize)
                storages[key] = _Storage(dtype, numel, order, raw)
            if storages[key].dtype != dtype:
                raise WeightsError("one tensor data record is used with two dtypes; corrupt file")
            return storages[key]

        return _Unpickler(io.BytesIO(record(f"{top}/data.pkl")), storage).load()


def _load_legacy(data: bytes) -> object:
    f = io.BytesIO(data)
    if _Unpickler(f).load() != _MAGIC:
        raise WeightsError("neither a zip archive nor the legacy format, not a PyTorch checkpoint")
    if _Unpickler(f).load() != _PROTOCOL:
        raise WeightsError("an unknown version of the legacy PyTorch format")
    _Unpickler(f).load()  # sys_info: the data itself is always little-endian
    roots: dict[str, _Storage] = {}

    def storage(pid: object) -> _Storage:
        dtype, key, numel, view = _storage_id(pid)
        root = roots.setdefault(key, _Storage(dtype, numel))
        if root.dtype != dtype or (view is not None and not isinstance(view, tuple)):
            raise WeightsError("a tensor data reference is malformed; the file is corrupt")
        return root if view is None else _Storage(dtype, _int(view[2]), base=root,
                                                  start=_int(view[1]))

    obj = _Unpickler(f, storage).load()
    keys = _Unpickler(f).load()
    if not isinstance(keys, list):
        raise WeightsError("the list of tensor data records is malformed; the file is corrupt")
    for key in keys:
        root = roots.get(key)
        count = int.from_bytes(f.read(8), "little")
        if root is None or count != root.numel:
            raise WeightsError("the tensor data does not match its records; the file is corrupt")
        root.raw = f.read(count * root.dtype.itemsize)
        if len(root.raw) != count * root.dtype.itemsize:
            raise WeightsError("the tensor data ends early; the file is truncated")
    return obj


def _state_dict(obj: object) -> dict[str, np.ndarray]:
    for nest in _NESTS:
        if isinstance(obj, Mapping) and isinstance(obj.get(nest), Mapping):
            obj = obj[nest]
            break
    if not isinstance(obj, Mapping):
        kind = "a tensor" if isinstance(obj, _Tensor) else type(obj).__name__
        raise WeightsError(f"expected a state dict (a dictionary of tensors), found {kind}. "
                           f"{_HINT}")
    out = {}
    for key, value in obj.items():
        if isinstance(value, _Tensor):
            if not isinstance(key, str):
                raise WeightsError(f"tensor key {key!r} is not a name; not a state dict. {_HINT}")
            out[key] = value.numpy()
    if not out:
        raise WeightsError(f"the file holds no tensors; expected a state dict. {_HINT}")
    return out


def read_pth(data: bytes, name: str) -> dict[str, np.ndarray]:
    """``{key: array}`` from the bytes of a PyTorch checkpoint (zip or legacy format).

    Unwraps ``state_dict`` / ``model`` / ``state_dict_ema``; keeps only tensors, each a
    C-contiguous copy of its own dtype (bfloat16 as float32). Nothing in the file is run:
    any name a state dict does not use raises WeightsError.
    """
    try:
        obj = _load_zip(data) if data[:4] == b"PK\x03\x04" else _load_legacy(data)
        return _state_dict(obj)
    except WeightsError as exc:
        raise WeightsError(f"{name}: {exc}") from None
    except Exception as exc:  # any malformed file: report it, never run it
        raise WeightsError(f"{name}: not a readable PyTorch checkpoint, it is truncated or corrupt "
                           f"({type(exc).__name__}: {exc}). Re-download it, or convert it to "
                           ".safetensors.") from exc
