"""Fast capture: the model as an ONNX graph whose outputs are the logits, every SE gate and
every squeeze vector (each concatenated over the blocks into one output: 2 outputs instead
of 32 cost 1 % less), run by ONNX Runtime (4-6x Paddle eager on a CPU, same numbers).
A second variant of the graph also outputs every block's feature maps before SE (the maps
after SE are those times the gates), for captures that ask for feature maps.

The graph is written directly from the model's weights (BatchNorm folded into the
convolutions), once per weights: it is kept in memory per model object and on disk under
``download.graph_cache_dir()``. The forward-hook capture in `se_viz.hooks` stays the
reference; ``tests/test_fast.py`` holds the two to <= 1e-4 on the gates and the same top-5.

The cache key is the sha256 of the weights (plus the graph format, variant and layout),
computed once per model object and variant. Before every run a cheap sample of the weights
(4 values per tensor, about 0.3 ms at full size) is compared with the one taken when the
graph was built, so a model whose
weights were changed in place gets a new graph instead of stale numbers.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import paddle

from .download import GRAPHS_KEPT, graph_cache_dir
from .hooks import Capture, FeatureMaps
from .model import BN_EPS, SEResNet, cpu_threads, se_blocks
from .weights import export_state

GRAPH_FORMAT = 3   # bump whenever build_onnx changes what it writes: old cache files are ignored
KEEP_GRAPHS = GRAPHS_KEPT  # graph files kept on disk (~110 MB each at full size), newest first
OPSET = 17
GATES, SQUEEZE = "gates", "squeeze"  # (N, sum of C) outputs, blocks in forward order
MAPS_PREFIX = "maps/"
BLOCKS_KEY = "se_viz.blocks"  # model metadata: JSON [[name, channels], ...] in forward order


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True when onnx and onnxruntime can be imported (the fast path's only dependencies)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def supports(model: object) -> bool:
    """True for an se_viz `SEResNet` whose weights are float32 on the CPU."""
    if not isinstance(model, SEResNet):
        return False
    return all(t.place.is_cpu_place() and t.dtype == paddle.float32
               for t in model.state_dict().values())


ENGINES = ("auto", "eager", "fast")


def use_fast(model: object, engine: str = "auto", needs_hooks: bool = False) -> bool:
    """Whether `se_viz.capture` should take the fast graph.

    engine "auto" (``$SE_VIZ_ENGINE`` may override it with "eager" or "fast"): yes when
    nothing needs hooks (``needs_hooks``: an intervention; feature maps come from the
    graph's maps variant), the model is supported and onnxruntime is installed. "eager":
    never. "fast": yes, or ValueError.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "auto":
        engine = os.environ.get("SE_VIZ_ENGINE", "").strip().lower() or "auto"
        if engine not in ENGINES:
            raise ValueError(f"SE_VIZ_ENGINE must be one of {', '.join(ENGINES)}, "
                             f"got {engine!r}; unset it or use SE_VIZ_ENGINE=eager")
    if engine == "eager":
        return False
    if engine == "fast" and needs_hooks:
        raise ValueError("engine='fast' cannot apply interventions; use engine='auto' or "
                         "'eager' for them")
    ok = not needs_hooks and (model in _BINDINGS or (available() and supports(model)))
    if engine == "fast" and not ok:
        raise ValueError("engine='fast' needs onnx and onnxruntime installed and an se_viz "
                         "SEResNet with float32 CPU weights; use engine='eager'")
    return ok


# ----------------------------------------------------------------------------- the graph
class _Graph:
    """Collects ONNX nodes and initialisers; every method returns its output's name."""

    def __init__(self) -> None:
        from onnx import numpy_helper
        self._tensor = numpy_helper.from_array
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(self._tensor(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str | None = None, **attrs) -> str:
        from onnx import helper
        self._n += 1
        out = name or f"{op_type.lower()}_{self._n}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=f"n{self._n}", **attrs))
        return out


def _folded(state: dict[str, np.ndarray], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight and bias of ``prefix`` (a ConvBN) with its BatchNorm folded in, float64 math."""
    w = state[f"{prefix}._conv.weight"].astype(np.float64)
    gamma, beta, mean, var = (state[f"{prefix}._batch_norm.{k}"].astype(np.float64)
                              for k in ("weight", "bias", "_mean", "_variance"))
    scale = gamma / np.sqrt(var + BN_EPS)
    return w * scale[:, None, None, None], beta - mean * scale


def _conv_bn(g: _Graph, state: dict, layer, prefix: str, x: str, relu: bool) -> str:
    """ConvBN layer ``layer`` (named ``prefix``) on ``x``: [AvgPool] -> Conv(+bias) [-> Relu]."""
    if layer._pool2d_avg is not None:  # vd shortcut: 2x2 average, partial windows averaged
        pool = layer._pool2d_avg
        x = g.op("AveragePool", [x], kernel_shape=[pool.ksize] * 2, strides=[pool.stride] * 2,
                 pads=[pool.padding] * 4, ceil_mode=int(pool.ceil_mode),
                 count_include_pad=int(not pool.exclusive))
    conv = layer._conv
    w, b = _folded(state, prefix)
    pad = int(conv._padding)
    y = g.op("Conv", [x, g.const(f"{prefix}.w", w), g.const(f"{prefix}.b", b)],
             kernel_shape=list(conv._kernel_size), strides=list(conv._stride), pads=[pad] * 4)
    return g.op("Relu", [y]) if relu else y


def _se(g: _Graph, state: dict, path: str, x: str) -> tuple[str, str, str]:
    """SE block on ``x``: (x * gate, the flattened squeeze (N, C), the flattened gate (N, C)).

    The two fully connected layers are 1x1 convolutions on (N, C, 1, 1) so that ONNX
    Runtime keeps the whole block in its blocked (NCHWc) layout.
    """
    w1, b1 = state[f"{path}.squeeze.weight"], state[f"{path}.squeeze.bias"]
    w2, b2 = state[f"{path}.excitation.weight"], state[f"{path}.excitation.bias"]
    pooled = g.op("GlobalAveragePool", [x])
    h = g.op("Conv", [pooled, g.const(f"{path}.w1", w1.T[:, :, None, None]),
                      g.const(f"{path}.b1", b1)], kernel_shape=[1, 1])
    s = g.op("Sigmoid", [g.op("Conv", [g.op("Relu", [h]),
                                       g.const(f"{path}.w2", w2.T[:, :, None, None]),
                                       g.const(f"{path}.b2", b2)], kernel_shape=[1, 1])])
    return g.op("Mul", [x, s]), g.op("Flatten", [pooled]), g.op("Flatten", [s])


def build_onnx(model: SEResNet, state: dict[str, np.ndarray] | None = None, maps: bool = False):
    """An ``onnx.ModelProto`` computing ``model``: input "images" (N, 3, H, W) float32;
    outputs "logits" (N, K), "gates" and "squeeze" (N, sum of C): every block's (N, C)
    values side by side in forward order, the blocks and their C in the model metadata
    ``se_viz.blocks``; with ``maps`` also one (N, C, H', W') output per block of its input
    to SE ("maps/SE_2_1", ...)."""

    from onnx import TensorProto, helper

    state = export_state(model) if state is None else state
    g = _Graph()
    x = "images"
    stem = [("conv1_1", model.conv1_1), ("conv1_2", model.conv1_2), ("conv1_3", model.conv1_3)] \
        if model.arch == "se_resnet50_vd" else [("conv1", model.conv1)]
    for prefix, layer in stem:
        x = _conv_bn(g, state, layer, prefix, x, relu=True)
    mp = model.pool2d_max
    x = g.op("MaxPool", [x], kernel_shape=[mp.ksize] * 2, strides=[mp.stride] * 2,
             pads=[mp.padding] * 4, ceil_mode=int(mp.ceil_mode))
    outputs, blocks, squeezes, gates = [], [], [], []
    for (name, se_path, _), (_, path, block) in zip(se_blocks(model), model.blocks):
        y = _conv_bn(g, state, block.conv0, f"{path}.conv0", x, relu=True)
        y = _conv_bn(g, state, block.conv1, f"{path}.conv1", y, relu=True)
        y = _conv_bn(g, state, block.conv2, f"{path}.conv2", y, relu=False)
        if maps:
            g.op("Identity", [y], name=MAPS_PREFIX + name)
        y, squeeze, gate = _se(g, state, se_path, y)
        squeezes.append(squeeze)
        gates.append(gate)
        short = x if block.short is None else \
            _conv_bn(g, state, block.short, f"{path}.short", x, relu=False)
        x = g.op("Relu", [g.op("Add", [short, y])])
        c = block.scale.channels
        blocks.append((name, c))
        if maps:
            outputs.append((MAPS_PREFIX + name, ["N", c, f"H_{name}", f"W_{name}"]))
    feats = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    head = [g.const("out.w", state["out.weight"]), g.const("out.b", state["out.bias"])]
    g.op("Gemm", [feats, *head], name="logits")
    g.op("Concat", gates, name=GATES, axis=1)
    g.op("Concat", squeezes, name=SQUEEZE, axis=1)
    num_classes = int(state["out.bias"].shape[0])
    total = sum(c for _, c in blocks)
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        g.nodes, "se_viz_" + model.arch, [value("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [value("logits", TensorProto.FLOAT, ["N", num_classes]),
         value(GATES, TensorProto.FLOAT, ["N", total]),
         value(SQUEEZE, TensorProto.FLOAT, ["N", total])]
        + [value(n, TensorProto.FLOAT, shape) for n, shape in outputs], g.inits)
    proto = helper.make_model(graph, producer_name="se_viz",
                              opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 8
    helper.set_model_props(proto, {BLOCKS_KEY: json.dumps(blocks)})
    return proto


# ----------------------------------------------------------------------------- weights identity
def weights_digest(model: SEResNet, state: dict[str, np.ndarray] | None = None,
                   maps: bool = False) -> str:
    """sha256 over the graph format and variant, the layout and every weight (names,
    shapes, bytes)."""
    state = export_state(model) if state is None else state
    variant = "maps" if maps else "gates"
    h = hashlib.sha256(f"se_viz-graph-{GRAPH_FORMAT}-{variant}:{model.arch}".encode())
    for key in sorted(state):
        arr = state[key]
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


class _Sample:
    """A few values of every weight tensor, read in place; `changed()` costs about 0.3 ms.

    Holds the tensors (not the model), and reads memory only while each tensor's data
    pointer is the one the view was made for.
    """

    def __init__(self, model: SEResNet) -> None:
        self.tensors = list(model.state_dict().values())
        self.ptrs = [t.data_ptr() for t in self.tensors]
        self.views = [self._view(t) for t in self.tensors]
        self.index = [np.linspace(0, v.size - 1, 4).astype(np.intp) for v in self.views]
        self.values = self._read()

    @staticmethod
    def _view(t) -> np.ndarray:
        n = int(np.prod(t.shape))
        return np.ctypeslib.as_array((ctypes.c_float * n).from_address(t.data_ptr()))

    def _read(self) -> np.ndarray:
        return np.concatenate([v[i] for v, i in zip(self.views, self.index)])

    def changed(self) -> bool:
        if [t.data_ptr() for t in self.tensors] != self.ptrs:
            return True
        return not np.array_equal(self._read(), self.values)


# ----------------------------------------------------------------------------- runtime
@dataclass(frozen=True)
class GraphInfo:
    """How a model object got its graph: ``source`` "built" (and stored at ``path``, None
    if the cache is not writable) or "disk" (loaded from ``path``); ``seconds`` to hash
    the weights and build or load the graph, runtime session included; ``maps``: the
    variant that also outputs feature maps."""

    key: str
    path: Path | None
    source: str
    seconds: float
    threads: int
    maps: bool = False


class FastGraph:
    """An ONNX Runtime session over `build_onnx`'s graph; `run` returns a `Capture`."""

    def __init__(self, model_bytes_or_path: bytes | str, threads: int) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Spin while running (many small ops at batch 1), stop right after: the app's
        # Python work after a capture gets the cores back.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(model_bytes_or_path, opts,
                                            providers=["CPUExecutionProvider"])
        self.outputs = [o.name for o in self.session.get_outputs()]
        meta = self.session.get_modelmeta().custom_metadata_map
        blocks = json.loads(meta.get(BLOCKS_KEY, "[]"))
        self.blocks = [str(name) for name, _ in blocks]
        edges = np.cumsum([0] + [int(c) for _, c in blocks])
        self._columns = {n: slice(int(a), int(b)) for n, a, b in zip(self.blocks, edges, edges[1:])}
        self.has_maps = any(n.startswith(MAPS_PREFIX) for n in self.outputs)

    def run(self, batch: np.ndarray, features: Sequence[str] = ()) -> Capture:
        """Capture of one (N, 3, H, W) float32 batch: logits, every gate and squeeze (views
        into the concatenated outputs), and for the blocks in ``features`` (needs the maps
        variant) the maps before and after SE (before * gate, as the block computes it)."""
        if features and not self.has_maps:
            raise ValueError("this graph has no feature-map outputs; build it with maps=True")
        wanted = ["logits", GATES, SQUEEZE] + [MAPS_PREFIX + n for n in features]
        out = dict(zip(wanted, self.session.run(wanted, {"images": batch})))
        gates = {n: out[GATES][:, cols] for n, cols in self._columns.items()}
        maps = {n: FeatureMaps(out[MAPS_PREFIX + n],
                               out[MAPS_PREFIX + n] * gates[n][:, :, None, None])
                for n in self.blocks if n in features}
        return Capture(logits=out["logits"], gates=gates,
                       squeeze={n: out[SQUEEZE][:, cols] for n, cols in self._columns.items()},
                       features=maps)


@dataclass
class _Binding:
    graph: FastGraph
    sample: _Sample
    info: GraphInfo


# model -> {maps: binding}: each variant of a model's graph is built or loaded once
_BINDINGS: "weakref.WeakKeyDictionary[SEResNet, dict[bool, _Binding]]" = \
    weakref.WeakKeyDictionary()
_BUILD_LOCK = threading.Lock()


def graph_dir() -> Path:
    """Where graphs are cached on disk: ``download.graph_cache_dir()``."""
    return graph_cache_dir()


def graph_for(model: SEResNet, maps: bool = False) -> tuple[FastGraph, GraphInfo]:
    """The fast graph of ``model``'s current weights (``maps``: the variant with feature-map
    outputs) and how it was obtained: kept per model object, else loaded from the disk
    cache, else built (thread-safe)."""
    binding = _BINDINGS.get(model, {}).get(maps)
    if binding is not None and not binding.sample.changed():
        return binding.graph, binding.info
    with _BUILD_LOCK:
        variants = _BINDINGS.setdefault(model, {})
        binding = variants.get(maps)
        if binding is None or binding.sample.changed():
            binding = variants[maps] = _bind(model, maps)
        return binding.graph, binding.info


def prepare(model: object, maps: bool = True, engine: str = "auto") -> GraphInfo | None:
    """Build or load ``model``'s fast graph now (at start-up, behind a spinner) so that the
    first capture does not wait for it; None when captures of it would not use the graph."""
    if not use_fast(model, engine):
        return None
    return graph_for(model, maps)[1]


def forget(model: SEResNet) -> None:
    """Drop ``model``'s graph from memory (the disk cache stays)."""
    with _BUILD_LOCK:
        _BINDINGS.pop(model, None)


def _bind(model: SEResNet, maps: bool) -> _Binding:
    start = time.perf_counter()
    if not supports(model):
        raise ValueError(f"the fast graph needs an se_viz SEResNet with float32 CPU weights, "
                         f"got {type(model).__name__}; use engine='eager'")
    sample = _Sample(model)
    state = export_state(model)
    key = weights_digest(model, state, maps)
    threads = cpu_threads()
    graph, path = _load_cached(key, threads)
    source = "disk"
    if graph is None:
        data = build_onnx(model, state, maps).SerializeToString()
        path = _store(key, data)
        graph, source = FastGraph(data, threads), "built"
    info = GraphInfo(key, path, source, time.perf_counter() - start, threads, maps)
    return _Binding(graph, sample, info)


def _cache_name(key: str, data: bytes) -> str:
    return f"{key[:32]}.{hashlib.sha256(data).hexdigest()[:16]}.onnx"


def _load_cached(key: str, threads: int) -> tuple[FastGraph | None, Path | None]:
    """A session from a cached graph file whose content hash checks out; damaged files
    are removed (they are rebuilt by the caller)."""
    for path in sorted(graph_dir().glob(f"{key[:32]}.*.onnx")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if path.name == _cache_name(key, data):
            with contextlib.suppress(OSError):
                os.utime(path)  # most recently used: kept longest by _prune
            return FastGraph(data, threads), path
        path.unlink(missing_ok=True)
    return None, None


def _prune(folder: Path) -> None:
    """Remove all but the `KEEP_GRAPHS` most recently used graph files."""
    def used(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0
    for old in sorted(folder.glob("*.onnx"), key=used, reverse=True)[KEEP_GRAPHS:]:
        old.unlink(missing_ok=True)


def _store(key: str, data: bytes) -> Path | None:
    """Write ``data`` atomically into the graph cache; None if the cache is not writable."""
    folder = graph_dir()
    path = folder / _cache_name(key, data)
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        _prune(folder)
        return path
    except OSError:
        return None  # the cache only saves time: a read-only home still captures
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def capture_fast(model: SEResNet, batch: np.ndarray, batch_size: int = 16,
                 features: Sequence[str] = ()) -> Capture:
    """Capture of (N, 3, H, W) float32 ``batch`` through the fast graph, ``batch_size``
    images per run; the same fields as the hook capture. ``features``: block names whose
    maps before/after SE to keep (then the maps variant of the graph runs)."""
    features = tuple(features)
    graph, _ = graph_for(model, maps=bool(features))
    unknown = [f for f in features if f not in graph.blocks]
    if unknown:
        raise ValueError(f"unknown block name(s) for feature maps: {', '.join(unknown)}; "
                         f"use names like {graph.blocks[0]} ... {graph.blocks[-1]}")
    parts = [graph.run(batch[i:i + batch_size], features)
             for i in range(0, batch.shape[0], batch_size)]
    return Capture.concat(parts)
