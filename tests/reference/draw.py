"""Seeded weights and inputs for the reference fixtures (numpy only).

Imported by ``scripts/make_reference.py`` (which runs timm in a torch venv and PaddleClas's
own network files with paddle) and by ``tests/test_reference.py`` (se_viz), so that both
sides rebuild the very same arrays from a fixture's key names, shapes and seed.

Every array is drawn from its own generator, seeded by ``(seed, crc32(key))``: the state does
not depend on the order of the keys, and one key's shape never changes another key's values.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Mapping

import numpy as np

LAYOUTS = ("timm", "paddleclas")

# The excitation (expand) weight of every attention block, and ECA's channel conv: scaled by
# ``steep`` so that gates spread over (0, 1) instead of sitting near 0.5.
STEEP = {
    "timm": re.compile(r"(.*\.)?(se\.(fc2|conv_expand|conv)|se_module\.fc2)\.weight"),
    "paddleclas": re.compile(r".*\.(scale\.excitation|mid_se\.conv2|se\.conv2)\.weight"),
}
_BN_STATS = {"timm": ("running_mean", "running_var"), "paddleclas": ("_mean", "_variance")}


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])


def _fan_in(shape: tuple, layout: str) -> int:
    if len(shape) == 2 and layout == "paddleclas":
        return int(shape[0])  # Paddle Linear weight is [in, out]
    return int(np.prod(shape[1:]))  # torch Linear [out, in]; convs [out, in/groups, k...]


def bn_prefixes(keys, layout: str) -> set[str]:
    """Module paths of the batch norms (those with a running mean) among ``keys``."""
    suffix = "." + _BN_STATS[layout][0]
    return {k[:-len(suffix)] for k in keys if k.endswith(suffix)}


def is_bn_stat(key: str, layout: str) -> bool:
    """True for a running mean or variance key of ``layout``."""
    return key.rsplit(".", 1)[-1] in _BN_STATS[layout]


def _draw_one(key: str, shape: tuple, seed: int, layout: str, bn: set[str]) -> np.ndarray:
    rng = _rng(seed, key)
    prefix, _, leaf = key.rpartition(".")
    mean_key, var_key = _BN_STATS[layout]
    if leaf == "num_batches_tracked":
        return np.zeros(shape, np.int64)
    if prefix in bn:
        if leaf == "weight":
            return rng.uniform(0.5, 1.5, shape)
        if leaf == "bias":
            return rng.uniform(-0.2, 0.2, shape)
        if leaf == mean_key:
            return rng.normal(0.0, 0.1, shape)
        if leaf == var_key:
            return rng.uniform(0.5, 1.5, shape)
    if leaf == "bias":
        return rng.uniform(-0.1, 0.1, shape)
    if leaf == "weight" and len(shape) >= 2:
        return rng.normal(0.0, np.sqrt(2.0 / _fan_in(shape, layout)), shape)
    if leaf == "weight":  # a 1-D scale outside a batch norm (none in the archs so far)
        return rng.uniform(0.5, 1.5, shape)
    raise ValueError(f"draw_state: no rule for {key!r} {shape}")


def draw_state(shapes: Mapping[str, tuple], seed: int, layout: str, steep: float
               ) -> dict[str, np.ndarray]:
    """Deterministic weights for a state dict with these keys and shapes, in ``layout``.

    Convolutions and linear layers: He-normal from the fan-in of that layout; biases
    uniform(+-0.1); BN gamma uniform [0.5, 1.5], beta [-0.2, 0.2], running mean normal(0, 0.1),
    running variance uniform [0.5, 1.5]; attention expand weights (``STEEP``) times ``steep``.
    float32 (``num_batches_tracked`` int64 zeros).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    bn = bn_prefixes(shapes, layout)
    out = {}
    for key, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        value = _draw_one(key, shape, seed, layout, bn)
        if STEEP[layout].fullmatch(key):
            value = value * steep
        out[key] = value if value.dtype == np.int64 else value.astype(np.float32)
    return out


def _smooth_field(rng: np.random.Generator, grid: int, size: int) -> np.ndarray:
    """(3, size, size): a (3, grid, grid) normal field, bilinearly upsampled."""
    coarse = rng.normal(0.0, 1.0, (3, grid, grid))
    pos = np.linspace(0.0, grid - 1.0, size)
    lo = np.minimum(np.floor(pos).astype(int), grid - 2)
    t = pos - lo
    rows = coarse[:, lo, :] * (1 - t)[None, :, None] + coarse[:, lo + 1, :] * t[None, :, None]
    return rows[:, :, lo] * (1 - t)[None, None, :] + rows[:, :, lo + 1] * t[None, None, :]


def draw_input(seed: int, n: int = 2, size: int = 128) -> np.ndarray:
    """(n, 3, size, size) float32, normalised-looking images that differ in their global
    statistics (so gates depend on the image): per-image colour offset and contrast, a
    smooth random field and a little pixel noise."""
    images = []
    for i in range(n):
        rng = _rng(seed, f"image{i}")
        offset = rng.normal(0.0, 0.3, (3, 1, 1))
        gain = rng.uniform(0.7, 1.3)
        field = _smooth_field(rng, int(rng.integers(3, 9)), size)
        noise = rng.uniform(0.1, 0.8) * rng.normal(0.0, 1.0, (3, size, size))
        images.append(offset + gain * field + noise)
    return np.stack(images).astype(np.float32)


# ---------------------------------------------------------------- fixture files

def pack_shapes(shapes: Mapping[str, tuple]) -> tuple[np.ndarray, np.ndarray]:
    """(keys as a unicode array, shapes as int64 (K, 4) padded with -1)."""
    keys = np.array(list(shapes), dtype=str)
    table = np.full((len(shapes), 4), -1, np.int64)
    for i, shape in enumerate(shapes.values()):
        if len(shape) > 4:
            raise ValueError(f"{keys[i]}: more than 4 dimensions")
        table[i, :len(shape)] = shape
    return keys, table


def read_fixture(path) -> dict:
    """A fixture ``.npz`` as plain Python: shapes {key: tuple}, seeds, the reference's logits,
    gates (list of (N, C)), gate paths, BN statistics {key: array} and versions."""
    with np.load(path, allow_pickle=False) as z:
        keys = [str(k) for k in z["keys"]]
        shapes = {k: tuple(int(s) for s in row if s >= 0) for k, row in zip(keys, z["shapes"])}
        bn_keys = [str(k) for k in z["bn_keys"]]
        flat, bn, start = z["bn_values"], {}, 0
        for key in bn_keys:
            size = int(np.prod(shapes[key]))
            bn[key] = flat[start:start + size].reshape(shapes[key])
            start += size
        paths = [str(p) for p in z["gate_paths"]]
        return dict(arch=str(z["arch"]), reference=str(z["reference"]), layout=str(z["layout"]),
                    shapes=shapes, seed=int(z["seed"]), steep=float(z["steep"]),
                    input_seed=int(z["input_seed"]), input_size=int(z["input_size"]),
                    input_n=int(z["input_n"]), logits=z["logits"], gate_paths=paths,
                    gates=[z[f"gates_{i}"] for i in range(len(paths))], bn=bn,
                    versions=json.loads(str(z["versions"])))


def fixture_state(fx: Mapping) -> dict[str, np.ndarray]:
    """The reference's state dict for a fixture: drawn weights with its saved BN statistics."""
    state = draw_state(fx["shapes"], fx["seed"], fx["layout"], fx["steep"])
    state.update({k: np.asarray(v, np.float32) for k, v in fx["bn"].items()})
    return state


def gate_checks(gates: list[np.ndarray], hard: bool = False) -> dict[str, float]:
    """Smallest spread over blocks: std across channels (mean over images), std across the
    images (mean over channels); largest fraction of saturated gates (exactly 0 or 1 for hard
    sigmoid, < 1e-3 or > 1 - 1e-3 otherwise)."""
    eps = 0.0 if hard else 1e-3
    chan = min(float(g.std(axis=1).mean()) for g in gates)
    img = min(float(g.std(axis=0).mean()) for g in gates)
    sat = max(float(((g <= eps) | (g >= 1 - eps)).mean()) for g in gates)
    return {"min_std_channels": chan, "min_std_images": img, "max_saturated": sat}
