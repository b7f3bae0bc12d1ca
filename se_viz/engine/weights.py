"""Weight files: safe reading, layout detection, key maps between layouts, strict loading.

Layouts (REFERENCE.md section 1):

* ``paddleclas`` - PaddleClas SE_ResNet50_vd keys (``conv1_1._conv.weight`` ...); this is
  also se_viz's own layout for ``se_resnet50_vd``.
* ``se_viz`` - se_viz's canonical ``se_resnet50`` keys (``conv1._conv.weight`` ...).
* ``timm`` - timm ``seresnet50`` keys (``layer1.0.se.fc1.weight`` ...), converted on load.
* ``cadene`` - Cadene / ``legacy_seresnet50``: recognised and refused (stride on the first
  1x1 conv, a different network).

``.pdparams`` files are pickles: they are read with a restricted unpickler that only
builds numpy arrays and plain containers, so nothing in a hostile file can run.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from ..arch import LAYOUT_ARCH
from ..errors import WeightsError
from ..paths import atomic_write
from ..results import SEParameters

SUFFIXES = (".pdparams", ".safetensors", ".pth", ".pt", ".bin")
_PADDLE_META_KEYS = ("StructuredToParameterName@@",)

# ---------------------------------------------------------------- safe unpickling

_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "tuple"): tuple,
    ("builtins", "list"): list,
    ("builtins", "dict"): dict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


def _numpy_global(module: str, name: str) -> object | None:
    """The few numpy callables that array pickles use (numpy 1 and 2 module names)."""
    if module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        from numpy._core import multiarray
        if name in ("_reconstruct", "scalar"):
            return getattr(multiarray, name)
    if module in ("numpy.core.numeric", "numpy._core.numeric") and name == "_frombuffer":
        from numpy._core import numeric
        return numeric._frombuffer
    if module == "_codecs" and name == "encode":  # protocol-2 pickles of bytes
        import codecs
        return codecs.encode
    if module.startswith("numpy") and module.endswith("dtypes") and name.endswith("DType"):
        from numpy import dtypes
        return getattr(dtypes, name, None)
    return None


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that can only build numpy arrays and plain containers."""

    def find_class(self, module: str, name: str) -> object:
        found = _ALLOWED_GLOBALS.get((module, name)) or _numpy_global(module, name)
        if found is None:
            raise WeightsError(
                f"refused: the file asks to load '{module}.{name}', which a weights file never "
                "needs; it may be malicious, so nothing in it was run. Use a .safetensors file "
                "or the original PaddleClas .pdparams.")
        return found


def safe_unpickle(data: bytes, name: str = "file") -> object:
    """Unpickle ``data`` allowing only arrays and containers; WeightsError otherwise."""
    try:
        return _SafeUnpickler(io.BytesIO(data)).load()
    except WeightsError as exc:
        raise WeightsError(f"{name}: {exc}") from None
    except Exception as exc:  # any malformed pickle: report, never run
        raise WeightsError(f"{name}: not a readable .pdparams file ({type(exc).__name__}: "
                           f"{exc}). Re-download it or use a .safetensors file.") from exc


# ---------------------------------------------------------------- reading files

def _plain_arrays(obj: object, name: str) -> dict[str, np.ndarray]:
    """Flatten a loaded pickle into {key: float array}, unwrapping Paddle's (name, array)."""
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{name}: expected a dictionary of arrays, found {type(obj).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        if key in _PADDLE_META_KEYS:
            continue
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], np.ndarray):
            value = value[1]  # Paddle pickles a Tensor as (tensor_name, array)
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise WeightsError(f"{name}: entry {key!r} is not an array; not a weights file")
        if value.dtype.kind not in "fiub":
            raise WeightsError(f"{name}: entry {key!r} has dtype {value.dtype}; expected numbers")
        out[key] = value
    return out


def _read_safetensors(data: bytes, name: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.numpy import load

    try:
        arrays = load(data)
        meta = _safetensors_metadata(data)
    except (SafetensorError, ValueError, OSError, TypeError) as exc:
        raise WeightsError(f"{name}: not a valid .safetensors file ({exc}). Check that the "
                           "download finished, or convert the file with "
                           "'python -m se_viz weights convert'.") from exc
    return dict(arrays), meta


def _safetensors_metadata(data: bytes) -> dict[str, str]:
    import json
    import struct

    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    return dict(header.get("__metadata__") or {})


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    """A PyTorch checkpoint (.pth/.pt/.bin), read without torch and without running it."""
    from .torchfile import read_pth

    return read_pth(path.read_bytes(), path.name)


def read_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """Read a weights file: (arrays, metadata, sha256 hex). Format chosen by suffix."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise WeightsError(f"{path.name}: unsupported weights format '{suffix}'; use "
                           f"{', '.join(SUFFIXES[:2])} (or a PyTorch .pth state dict)")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(f"weights file not found: {path}. Check the path, or run "
                           "'python -m se_viz weights fetch' to download the default.") from None
    except OSError as exc:
        raise WeightsError(f"cannot read weights file {path}: {exc.strerror or exc}") from None
    if not data:
        raise WeightsError(f"{path.name}: the file is empty (an interrupted download?). "
                           "Delete it and download it again.")
    digest = hashlib.sha256(data).hexdigest()
    if suffix == ".pdparams":
        return _plain_arrays(safe_unpickle(data, path.name), path.name), {}, digest
    if suffix == ".safetensors":
        arrays, meta = _read_safetensors(data, path.name)
        return arrays, meta, digest
    return _read_torch(path), {}, digest


def read_bytes(data: bytes, name: str = "upload.safetensors"
               ) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """Read uploaded bytes; only ever as safetensors (never unpickled)."""
    if not data:
        raise WeightsError(f"{name}: the file is empty")
    arrays, meta = _read_safetensors(data, name)
    return arrays, meta, hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- layouts and key maps

def detect_layout(keys: object) -> str:
    """'paddleclas', 'se_viz', 'timm', 'cadene' or 'unknown' from a file's key names."""
    keys = set(keys)
    if "conv1_1._conv.weight" in keys:
        return "paddleclas"
    if "conv1._conv.weight" in keys:
        return "se_viz"
    if any(k.startswith("bb_") for k in keys):
        return "paddleclas"
    if any(".se.fc1." in k for k in keys) or "layer1.0.conv1.weight" in keys:
        return "timm"
    if any(k.startswith("layer0.") for k in keys) or any("se_module" in k for k in keys):
        return "cadene"
    return "unknown"


_BN = {"weight": "weight", "bias": "bias", "_mean": "running_mean", "_variance": "running_var"}
_BN_BACK = {v: k for k, v in _BN.items()}


def linear_from_conv(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.reshape(w.shape[0], w.shape[1]).T)


def conv_from_linear(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T[:, :, None, None])


def _transpose(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)


def timm_key(key: str) -> tuple[str, Callable[[np.ndarray], np.ndarray] | None]:
    """timm name for an se_viz ``se_resnet50`` key, and the transform se_viz -> timm."""
    if m := re.fullmatch(r"conv1\._conv\.weight", key):
        return "conv1.weight", None
    if m := re.fullmatch(r"conv1\._batch_norm\.(\w+)", key):
        return f"bn1.{_BN[m[1]]}", None
    if m := re.fullmatch(r"bb_(\d)_(\d+)\.(.+)", key):
        prefix, rest = f"layer{int(m[1]) + 1}.{m[2]}", m[3]
        if c := re.fullmatch(r"conv(\d)\._conv\.weight", rest):
            return f"{prefix}.conv{int(c[1]) + 1}.weight", None
        if c := re.fullmatch(r"conv(\d)\._batch_norm\.(\w+)", rest):
            return f"{prefix}.bn{int(c[1]) + 1}.{_BN[c[2]]}", None
        if rest == "short._conv.weight":
            return f"{prefix}.downsample.0.weight", None
        if c := re.fullmatch(r"short\._batch_norm\.(\w+)", rest):
            return f"{prefix}.downsample.1.{_BN[c[1]]}", None
        if c := re.fullmatch(r"scale\.(squeeze|excitation)\.(weight|bias)", rest):
            fc = "fc1" if c[1] == "squeeze" else "fc2"
            return f"{prefix}.se.{fc}.{c[2]}", (conv_from_linear if c[2] == "weight" else None)
    if key == "out.weight":
        return "fc.weight", _transpose
    if key == "out.bias":
        return "fc.bias", None
    raise KeyError(f"no timm name for se_viz key {key}")


def to_timm(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """se_viz ``se_resnet50`` state dict -> timm ``seresnet50`` key names and shapes."""
    out = {}
    for key, value in state.items():
        name, fn = timm_key(key)
        out[name] = fn(value) if fn else np.asarray(value)
    return out


_TIMM_INVERSE = {conv_from_linear: linear_from_conv, _transpose: _transpose}


def from_timm(state: Mapping[str, np.ndarray], target_keys: list[str]) -> dict[str, np.ndarray]:
    """timm ``seresnet50`` arrays -> se_viz keys, for the se_viz keys ``target_keys``.

    ``num_batches_tracked`` is dropped; keys the target has no place for stay under their
    timm name so that strict loading reports them.
    """
    src = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    out: dict[str, np.ndarray] = {}
    for key in target_keys:
        name, fn = timm_key(key)
        if name in src:
            value = src.pop(name)
            out[key] = _TIMM_INVERSE[fn](value) if fn and value.ndim in (2, 4) else value
    out.update(src)
    return out


# ---------------------------------------------------------------- strict loading

def _shape_hint(key: str, got: tuple, want: tuple) -> str:
    if key == "out.weight" and len(got) == 2:
        return f" (the file has {got[1]} classes: pass num_classes={got[1]})"
    if key.endswith("scale.squeeze.weight") and len(got) == 2 and got[1]:
        return f" (the file's SE reduction ratio is about {got[0] / got[1]:g}: pass reduction)"
    return ""


def check_state(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple],
                name: str, layout: str) -> None:
    """Raise WeightsError naming the first offending keys unless keys and shapes match."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or wrong):
        return
    looks = (f"looks like the '{layout}' layout (for {LAYOUT_ARCH[layout]})"
             if layout in LAYOUT_ARCH else f"looks like the '{layout}' layout")
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), first: {', '.join(missing[:3])}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), first: {', '.join(unexpected[:3])}")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatch(es), first: {k} is "
                     f"{list(state[k].shape)} in the file but {list(expected[k])} in the model"
                     + _shape_hint(k, tuple(state[k].shape), tuple(expected[k])))
    raise WeightsError(f"{name} does not fit this model: " + "; ".join(parts)
                       + f". The file {looks}.")


_SE_WEIGHT = re.compile(r".*\.scale\.(squeeze|excitation)\.weight")


def se_shaped(key: str, value: np.ndarray, want: tuple | None) -> np.ndarray:
    """An SE weight in the form ``want`` asks for: Linear [in, out] <-> conv [out, in, 1, 1]
    (other arrays, and arrays already in that form, are returned as they are)."""
    if want is None or not _SE_WEIGHT.fullmatch(key) or len(want) == value.ndim:
        return value
    if value.ndim == 2 and len(want) == 4:
        return conv_from_linear(value)
    if value.ndim == 4 and len(want) == 2 and value.shape[2:] == (1, 1):
        return linear_from_conv(value)
    return value


RESNET50_ARCHS = ("se_resnet50_vd", "se_resnet50")  # the two layouts with key maps above


def from_torch_names(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A torch (timm) state dict in Paddle's naming: BN ``running_mean``/``running_var`` ->
    ``_mean``/``_variance``, ``num_batches_tracked`` dropped, 2-D (Linear) weights
    transposed to Paddle's [in, out]. Module names stay as they are: se_viz's timm-layout
    networks use timm's."""
    out = {}
    for key, value in arrays.items():
        if key.endswith("num_batches_tracked"):
            continue
        key = re.sub(r"\.running_mean$", "._mean", re.sub(r"\.running_var$", "._variance", key))
        out[key] = _transpose(value) if value.ndim == 2 else value
    return out


def is_torch_state(arrays: Mapping[str, np.ndarray]) -> bool:
    return any(k.endswith(("running_mean", "running_var", "num_batches_tracked"))
               for k in arrays)


def convert_for(arch: str, arrays: Mapping[str, np.ndarray], expected: Mapping[str, tuple]
                ) -> tuple[dict[str, np.ndarray], str]:
    """``arrays`` mapped onto ``arch``'s keys and shapes as far as they go (no checks):
    (state dict, the layout the file had)."""
    if arch in RESNET50_ARCHS:
        layout = detect_layout(arrays)
        if layout == "timm" and arch == "se_resnet50":
            arrays = from_timm(arrays, list(expected))
        return {k: se_shaped(k, np.asarray(v, dtype=np.float32), expected.get(k))
                for k, v in arrays.items()}, layout
    if is_torch_state(arrays):
        return {k: np.asarray(v, dtype=np.float32) for k, v in from_torch_names(arrays).items()
                }, "timm"
    return {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}, "paddleclas"


def _fit(state: Mapping[str, np.ndarray], expected: Mapping[str, tuple]
         ) -> tuple[float, float]:
    """How well a converted file fits a network: (shared key names, shared (key, shape)
    pairs), each over the union of keys. Names say the family and layout, shapes tell
    apart networks that share names (seresnet50 and seresnext50_32x4d)."""
    union = max(1, len(set(state) | set(expected)))
    names = sum(1 for k in state if k in expected)
    same = sum(1 for k, v in state.items() if tuple(v.shape) == tuple(expected.get(k, ())))
    return names / union, same / union


def looks_like(arrays: Mapping[str, np.ndarray], but_not: str | None = None
               ) -> tuple[str, float] | None:
    """The network a weights file fits best, by key names, then shapes: (arch, share of
    matching key names), or None when no network has most of its names. The classifier's
    size is read from the file, so fine-tuned heads still match."""
    best = _best_match(arrays, but_not)
    return (best[0], best[1][0]) if best else None


def _best_match(arrays: Mapping[str, np.ndarray], but_not: str | None
                ) -> tuple[str, tuple[float, float]] | None:
    from ..arch import ARCHS
    from .networks import signature

    best = None
    for arch in ARCHS:
        if arch == but_not:
            continue
        expected = signature(arch, classes_in_file(arrays, arch))
        score = _fit(convert_for(arch, arrays, expected)[0], expected)
        if best is None or score > best[1]:
            best = (arch, score)
    return best if best and best[1][0] >= 0.8 else None


def classes_in_file(arrays: Mapping[str, np.ndarray], arch: str) -> int | None:
    """The number of classes of ``arch``'s classifier in a weights file, or None if the
    file has no such classifier."""
    from .networks import head_key

    key, torch_key = head_key(arch)
    for k, torch_layout in ((torch_key, True), (key, False)):
        value = arrays.get(k)
        if value is not None and value.ndim == 2:
            return int(value.shape[0] if torch_layout and is_torch_state(arrays)
                       else value.shape[1])
    return None


def load_arrays(model: object, arrays: Mapping[str, np.ndarray], name: str = "weights"
                ) -> str:
    """Strictly load ``arrays`` (the network's own layout, or for SE-ResNet-50 any of its
    layouts) into ``model``; return the layout the file had. WeightsError, naming the
    network the file looks like, for a file of another network."""
    current = model.state_dict()
    expected = {k: tuple(v.shape) for k, v in current.items()}
    arch = model.info.arch
    state, layout = convert_for(arch, arrays, expected)
    try:
        check_state(state, expected, name, layout)
    except WeightsError as exc:
        other = _best_match(arrays, but_not=arch)
        if other is None or _fit(state, expected) >= other[1]:
            raise
        raise WeightsError(f"{name} holds weights of {other[0]}, not {arch} "
                           f"({other[1][1]:.0%} of its keys and shapes fit {other[0]}): "
                           f"use arch '{other[0]}' (--arch {other[0]}). Details: {exc}") from None
    for key, param in current.items():
        param.set_value(state[key])
    return layout


def export_state(model: object) -> dict[str, np.ndarray]:
    """The model's state dict as contiguous float32 numpy arrays, in se_viz's layout: SE
    weights as Linear [in, out] whatever the model's SE implementation, so that a file
    written from it loads into either."""
    out = {}
    for key, value in model.state_dict().items():
        arr = np.ascontiguousarray(value.numpy(), dtype=np.float32)
        out[key] = linear_from_conv(arr) if _SE_WEIGHT.fullmatch(key) and arr.ndim == 4 else arr
    return out


def init_seeded(model: object, seed: int = 0) -> None:
    """Deterministic initialisation from numpy (see `_init_resnet50` and `_init_any`)."""
    if model.info.arch in RESNET50_ARCHS:
        return _init_resnet50(model, seed)
    return _init_any(model, seed)


def _init_any(model: object, seed: int) -> None:
    """Any network: convolutions He-normal (fan-in), BN identity (gamma 1, beta 0, mean 0,
    var 1), Linear uniform(+-1/sqrt(fan_in)), biases 0; drawn in state-dict order."""
    rng = np.random.default_rng(seed)
    current = model.state_dict()
    for name, param in current.items():
        shape = tuple(param.shape)
        prefix = name.rsplit(".", 1)[0]
        bn = f"{prefix}._mean" in current
        if bn:
            value = np.zeros(shape) if name.endswith(("bias", "_mean")) else np.ones(shape)
        elif len(shape) >= 3:
            value = rng.normal(0.0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)
        elif len(shape) == 2:  # Paddle Linear [in, out]
            value = rng.uniform(-1.0 / np.sqrt(shape[0]), 1.0 / np.sqrt(shape[0]), shape)
        else:
            value = np.zeros(shape)
        param.set_value(value.astype(np.float32))


def _init_resnet50(model: object, seed: int = 0) -> None:
    """Deterministic initialisation from numpy (independent of Paddle's global RNG), the
    same numbers for both SE implementations.

    Convolutions: He-normal; the last BN of each bottleneck: gamma 0.5 (keeps the
    untrained residual stream bounded); other BN: gamma 1, beta 0, mean 0, var 1;
    Linear (SE layers in their Linear form, the head): uniform(+-1/sqrt(fan_in)).
    """
    rng = np.random.default_rng(seed)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    state = {}
    for name, shape in shapes.items():
        if _SE_WEIGHT.fullmatch(name) and len(shape) == 4:
            shape = (shape[1], shape[0])  # drawn in the Linear form [in, out]
        if name.endswith("_conv.weight"):
            value = rng.normal(0.0, np.sqrt(2.0 / int(np.prod(shape[1:]))), shape)
        elif name.endswith("_batch_norm.weight"):
            value = np.full(shape, 0.5 if ".conv2." in name else 1.0)
        elif name.endswith(("_batch_norm.bias", "_batch_norm._mean")):
            value = np.zeros(shape)
        elif name.endswith("_batch_norm._variance"):
            value = np.ones(shape)
        elif name.endswith(".weight"):  # Linear [in, out]
            value = rng.uniform(-1.0 / np.sqrt(shape[0]), 1.0 / np.sqrt(shape[0]), shape)
        elif name.endswith(".bias"):
            w = shapes[name[:-4] + "weight"]
            fan_in = w[1] if len(w) == 4 else w[0]
            value = rng.uniform(-1.0 / np.sqrt(fan_in), 1.0 / np.sqrt(fan_in), shape)
        else:  # pragma: no cover - every SEResNet key is handled above
            raise KeyError(f"no initialiser for {name}")
        state[name] = value.astype(np.float32)
    for key, param in model.state_dict().items():
        param.set_value(se_shaped(key, state[key], shapes[key]))


def save_safetensors(arrays: Mapping[str, np.ndarray], path: str | os.PathLike,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Write arrays to ``path`` atomically (se_viz.paths.atomic_write)."""
    from safetensors.numpy import save

    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                metadata={k: str(v) for k, v in (metadata or {}).items()})
    return atomic_write(path, data)


def se_parameters(model: object, blocks: Sequence[str] | None = None
                  ) -> dict[str, SEParameters]:
    """Block name -> its SE weights as float32 numpy copies in the Linear form (w1 (C, h),
    b1 (h,), w2 (h, C), b2 (C,)), whatever the model's SE implementation; all SE blocks
    (ECA blocks have no such weights), or only ``blocks``."""
    from .model import attention_layers

    out = {}
    for b, se in attention_layers(model):
        if (blocks is not None and b.name not in blocks) or not b.reducible:
            continue
        arrays = []
        for layer in (se.reduce, se.expand):
            w = np.ascontiguousarray(layer.weight.numpy(), dtype=np.float32)
            arrays += [linear_from_conv(w) if w.ndim == 4 else w,
                       np.ascontiguousarray(layer.bias.numpy(), dtype=np.float32)]
        out[b.name] = SEParameters(*arrays)
    return out
