"""SE-only weight files: a network's SE blocks refit at another reduction ratio r.

``se-viz refit`` writes ``se_r{R}.safetensors``: for every SE block (ECA blocks have no
bottleneck and are left out) the four SE arrays under the block's module path, in the
Linear form (``bb_0_0.scale.squeeze.weight`` (C, h), ``...squeeze.bias`` (h,),
``...excitation.weight`` (h, C), ``...excitation.bias`` (C,); "squeeze"/"excitation" name
the reducing and expanding layers whatever the network calls them), a few MB instead of a
whole network. Its metadata says what it belongs to:

    format          "se_viz.se_weights/1"
    arch, width     the network layout and first-stage width
    reduction       r of these SE blocks; base_reduction: r of the base network
    base            identity of the base weights: their file's sha256, or for the seeded
                    untrained network "seeded:<seed>:width<w>:r<r>:classes<k>"
    base_weights    the base file's name (informative), refit_key (the run's settings)

`apply_se_weights` puts such a file into a built base network (its own SE blocks are
replaced by blocks of width int(C / r), with their own activation and gate); a file made for other base weights, another arch
or with other shapes is refused with a `WeightsError` that says what to do.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np

from paddle import nn

from ..arch import hidden_width
from ..errors import WeightsError
from ..results import SEParameters
from ..version import __version__
from .attention import SEModule
from .model import attention_layers
from .networks import build_like
from .weights import conv_from_linear, read_bytes, read_file, save_safetensors

SE_FORMAT = "se_viz.se_weights/1"
_LAYERS = (("squeeze", "weight", "w1"), ("squeeze", "bias", "b1"),
           ("excitation", "weight", "w2"), ("excitation", "bias", "b2"))


def se_paths(blocks: object) -> dict[str, str]:
    """Block name -> module path, for the blocks an SE-only file holds (the reducible ones)."""
    return {b.name: b.path for b in blocks if b.reducible}


def base_identity(info: object) -> str:
    """What identifies the weights a network was built from: the file's sha256, or for the
    seeded untrained network its seed, width, r and classes (they fix every number)."""
    if getattr(info, "sha256", None):
        return str(info.sha256)
    seed = info.extra.get("seed", 0)
    return f"seeded:{seed}:width{info.width}:r{info.reduction:g}:classes{info.num_classes}"


def se_arrays(params: Mapping[str, SEParameters], paths: Mapping[str, str]
              ) -> dict[str, np.ndarray]:
    """Block name -> SEParameters as the file's {key: float32 array} (Linear form);
    ``paths``: block name -> module path (`se_paths`)."""
    return {f"{paths[b]}.{layer}.{kind}": np.ascontiguousarray(getattr(p, attr), np.float32)
            for b, p in params.items() for layer, kind, attr in _LAYERS}


def se_params_of(arrays: Mapping[str, np.ndarray], paths: Mapping[str, str]
                 ) -> dict[str, SEParameters]:
    """The inverse of `se_arrays`: block name -> SEParameters."""
    return {b: SEParameters(*(np.asarray(arrays[f"{p}.{layer}.{kind}"], np.float32)
                              for layer, kind, _ in _LAYERS)) for b, p in paths.items()}


def save_se_weights(path: str | os.PathLike, params: Mapping[str, SEParameters], *,
                    base: object, reduction: float, extra: Mapping[str, str] | None = None
                    ) -> str:
    """Write the SE-only file for ``params`` (every block), refit on the network whose
    ModelInfo is ``base``, at ratio ``reduction``; atomically. Returns its sha256."""
    paths = se_paths(base.blocks)
    missing = [b for b in paths if b not in params]
    if missing:
        raise ValueError(f"SE parameters missing for {', '.join(missing)}")
    meta = {"format": SE_FORMAT, "arch": base.arch, "width": str(base.width),
            "reduction": f"{float(reduction):g}", "base_reduction": f"{base.reduction:g}",
            "base": base_identity(base), "base_weights": Path(str(base.weights)).name,
            "se_viz_version": __version__, **dict(extra or {})}
    save_safetensors(se_arrays(params, paths), path, meta)
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_se_weights(source: str | os.PathLike | bytes, name: str | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, str], str, str]:
    """(arrays, metadata, sha256, name) of an SE-only file: a path or uploaded bytes
    (read as safetensors only). WeightsError unless it is one."""
    if isinstance(source, (bytes, bytearray)):
        name = name or "upload.safetensors"
        arrays, meta, digest = read_bytes(bytes(source), name)
    else:
        path = Path(source)
        name = name or path.name
        if path.suffix.lower() != ".safetensors":
            raise WeightsError(f"{name}: SE weights are .safetensors files written by "
                               "'se-viz refit' (OUT/se_r8.safetensors)")
        arrays, meta, digest = read_file(path)
    if meta.get("format") != SE_FORMAT:
        raise WeightsError(f"{name} is not an SE-only file of 'se-viz refit' (no "
                           f"'{SE_FORMAT}' format tag). Pass it as weights=, not se_weights=, "
                           "or refit with 'se-viz refit DIR --reduction R --out OUT'.")
    return arrays, meta, digest, name


def _check_fits(model: nn.Layer, meta: Mapping[str, str], name: str) -> float:
    """The file's r, or WeightsError when it was refit for another network."""
    info = model.info
    if info.se_weights:
        raise WeightsError(f"the network already has refit SE blocks ({info.se_weights}); "
                           "build it again from the base weights to load another SE file.")
    if meta.get("arch") != info.arch or meta.get("width") != str(info.width):
        raise WeightsError(f"{name} was refit for {meta.get('arch')} (width "
                           f"{meta.get('width')}), not {info.arch} (width {info.width}): use "
                           f"--arch {meta.get('arch')}, or refit on this network.")
    if meta.get("base") != base_identity(info):
        raise WeightsError(
            f"{name} was refit on other base weights ({_short(meta.get('base'))}, file "
            f"'{meta.get('base_weights')}'), not on these ({_short(base_identity(info))}): "
            "load the base weights it was refit on, or run 'se-viz refit' on these.")
    if meta.get("base_reduction") != f"{info.reduction:g}":
        raise WeightsError(f"{name} was refit on a base network at r = "
                           f"{meta.get('base_reduction')}, this one has r = "
                           f"{info.reduction:g}: build the base with reduction="
                           f"{meta.get('base_reduction')}.")
    try:
        r = float(meta.get("reduction", ""))
        hidden_width(8, r)
    except ValueError:
        raise WeightsError(f"{name}: its reduction ratio {meta.get('reduction')!r} is not a "
                           "number >= 1; the file is damaged. Refit again.") from None
    return r


def _short(identity: str | None) -> str:
    text = str(identity)
    return f"sha256 {text[:12]}" if not text.startswith("seeded:") else text


def _check_shapes(model: nn.Layer, arrays: Mapping[str, np.ndarray], r: float,
                  name: str) -> None:
    expected = {}
    for b, se in attention_layers(model):
        if not b.reducible:
            continue
        c, h = se.channels, hidden_width(se.channels, r)
        expected.update({f"{b.path}.squeeze.weight": (c, h), f"{b.path}.squeeze.bias": (h,),
                         f"{b.path}.excitation.weight": (h, c),
                         f"{b.path}.excitation.bias": (c,)})
    missing = [k for k in expected if k not in arrays]
    extra = [k for k in arrays if k not in expected]
    wrong = [k for k in expected if k in arrays and tuple(arrays[k].shape) != expected[k]]
    if missing or extra or wrong:
        what = (f"{len(missing)} missing array(s), first {missing[0]}" if missing else
                f"{len(extra)} unexpected array(s), first {extra[0]}" if extra else
                f"{wrong[0]} is {list(arrays[wrong[0]].shape)} in the file but "
                f"{list(expected[wrong[0]])} at r = {r:g}")
        raise WeightsError(f"{name} does not fit this network's SE blocks at r = {r:g}: "
                           f"{what}. The file is damaged or not from 'se-viz refit'; "
                           "refit again.")


def apply_se_weights(model: nn.Layer, arrays: Mapping[str, np.ndarray],
                     meta: Mapping[str, str], digest: str, name: str) -> nn.Layer:
    """Replace ``model``'s SE blocks (in place) by the file's blocks at its r; returns it.
    ``model.info`` then has reduction r, se_weights ``name``, ``extra["se_sha256"]`` and
    blocks with the new hidden widths."""
    r = _check_fits(model, meta, name)
    _check_shapes(model, arrays, r, name)
    subs = dict(model.named_sublayers())
    blocks = []
    for b, old in attention_layers(model):
        if not b.reducible:
            blocks.append(b)
            continue
        new = SEModule(old.channels, hidden_width(old.channels, r), act=old.act_name,
                       gate=old.gate_spec, impl=old.impl, names=old.names)
        params = se_params_of(arrays, {b.name: b.path})[b.name]
        for layer, (w, bias) in ((new.reduce, (params.w1, params.b1)),
                                 (new.expand, (params.w2, params.b2))):
            layer.weight.set_value(conv_from_linear(w) if len(layer.weight.shape) == 4 else w)
            layer.bias.set_value(bias)
        parent, _, attr = b.path.rpartition(".")
        setattr(subs[parent] if parent else model, attr, new)
        blocks.append(replace(b, hidden=new.hidden, width_rule=f"int(C / r), r = {r:g} (refit)"))
    extra = {**model.info.extra, "se_sha256": digest, "se_metadata": dict(meta)}
    model.info = replace(model.info, reduction=r, se_weights=name, extra=extra,
                         blocks=tuple(blocks))
    model.eval()
    return model


def load_se_file(model: nn.Layer, se_weights: str | os.PathLike) -> nn.Layer:
    """`apply_se_weights` of the SE-only file at ``se_weights``."""
    arrays, meta, digest, _ = read_se_weights(se_weights)
    return apply_se_weights(model, arrays, meta, digest, str(se_weights))


def refit_model(base: nn.Layer, se_file: bytes | str | os.PathLike,
                name: str | None = None) -> nn.Layer:
    """A new network: a copy of ``base`` (its weights, preprocessing and info) with the SE
    blocks of ``se_file`` (a path, or the bytes of an upload); ``base`` is not changed."""
    arrays, meta, digest, name = read_se_weights(se_file, name)
    info = base.info
    _check_fits(base, meta, name)  # before anything is copied
    model = build_like(info)
    source = base.state_dict()
    for key, param in model.state_dict().items():
        param.set_value(np.array(source[key].numpy(), copy=True))
    model.preprocessing = getattr(base, "preprocessing", None)
    model.info = info
    return apply_se_weights(model, arrays, meta, digest, name)
