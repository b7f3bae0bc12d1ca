"""The fast engine: the model's own forward, traced once with the gate recorder, run by
ONNX Runtime.

`TracedForward` runs the model inside a symbolic `GateRecorder`; ``paddle.jit.to_static``
traces it, the recorder's hooks hand out the traced gates, squeeze values (and, for the
``maps`` variant, every block's maps before and after SE), and the traced program returns
them as extra outputs, in the order of `hooks.graph_outputs` (read here by role). The
program is saved with ``paddle.jit.save``, converted by ``paddle2onnx`` and run by ONNX
Runtime. Nothing here restates the network: a change to `se_viz.engine.model` needs no
change here. Paddle's internals are read through `se_viz.engine.compat` only.

* Cache key: sha256 of the traced program (framework-generated names replaced by the
  model's own parameter names) and of every weight. Any change to the network or the
  weights gets its own graph; there is no version to bump. Graphs live in
  ``paths.graph_cache_dir()`` (the `KEEP_GRAPHS` most recently used).
* The graph's input height and width are named (`onnx_rewrite`) and its session is fixed
  to the network's own input size, so that ONNX Runtime can fuse what depends on shapes;
  images of another size run in a second session made on first use.
* A graph is used only after it matched the eager hooks on a probe input (paddle2onnx
  logs and swallows its own errors). Its default optimiser (Polygraphy) is never selected:
  it tries to pip-install packages at run time.
* A model changed after its graph was made (a sublayer swapped or its forward replaced, a
  foreign hook added, weights changed in place) is detected before every run
  (`ModelState`) and traced again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import operator
import os
import re
import tempfile
import threading
import time
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import paddle
from paddle import nn

from ..paths import atomic_write, graph_cache_dir
from ..results import Capture, FeatureMaps
from . import compat, dict_tags, onnx_rewrite
from .hooks import (MAP_SIDES, GateRecorder, capture_hooks, check_names, graph_outputs,
                    map_output, model_lock)
from .model import se_blocks
from .runtime import cpu_threads, ort_spinning
from .weights import export_state

KEEP_GRAPHS = 4   # graph files kept on disk (~110 MB each at full size), newest first
OPSET = 17
PROBE_SIZE = 64   # pixels of the probe image a new graph must reproduce
PROBE_ATOL = 1e-3  # largest gate difference accepted on the probe (float reordering: ~2e-4)
log = logging.getLogger("se_viz")


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """True when paddle2onnx, onnx and onnxruntime can be imported."""
    try:
        import onnxruntime  # noqa: F401
        import paddle2onnx  # noqa: F401
    except ImportError:
        return False
    return True


def supports(model: object) -> bool:
    """True for an se_viz network whose weights are float32 on the CPU."""
    if not getattr(getattr(model, "info", None), "blocks", None):
        return False
    return all(t.place.is_cpu_place() and t.dtype == paddle.float32
               for t in model.state_dict().values())


# ----------------------------------------------------------------------------- tracing
class TracedForward(nn.Layer):
    """``model``'s forward with a symbolic `GateRecorder` around it: what gets traced.

    Returns the tensors of `hooks.graph_outputs`: logits, gates and squeeze and, with
    ``maps``, every block's maps before and after SE.
    """

    def __init__(self, model: nn.Layer, maps: bool = False) -> None:
        super().__init__()
        self.model = model
        self.features = tuple(name for name, _, _ in se_blocks(model)) if maps else ()

    def forward(self, images: paddle.Tensor) -> list[paddle.Tensor]:
        return _record(self.model, self.features, images)


@paddle.jit.not_to_static
def _record(model: nn.Layer, features: tuple[str, ...], images: paddle.Tensor) -> list:
    """The recorder around the model's forward; plain Python for the tracer, which still
    traces every layer the model calls."""
    with GateRecorder(model, features, symbolic=True) as recorder:
        logits = model(images)
    return recorder.outputs(logits)


def trace(model: nn.Layer, maps: bool, folder: Path) -> Path:
    """Trace ``model`` into ``folder`` (``paddle.jit.save``: program.json + .pdiparams);
    returns the path prefix."""
    prefix = folder / "program"
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", "images")]
    with model_lock(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        was_training = model.training
        model.eval()
        try:
            static = paddle.jit.to_static(TracedForward(model, maps), input_spec=spec,
                                          full_graph=True)
            with quiet():  # "PIR not support input out tensor" (harmless)
                paddle.jit.save(static, str(prefix))
        finally:
            if was_training:
                model.train()
    return prefix


_PARAM = re.compile(r'"([A-Za-z][A-Za-z0-9_]*\.[A-Za-z]_\d+)"')
_SCOPE = re.compile(r'"/[^"]*/"')


def program_text(model: nn.Layer, program: Path) -> str:
    """The saved program with every framework-generated name made stable: parameters get
    the model's own state-dict keys, name scopes (``/SEResNet_1/...``) are dropped. Two
    models with the same network give the same text, whatever was built before them."""
    names = {t.name: key for key, t in model.state_dict().items()}
    text = program.read_text("utf-8")
    text = _PARAM.sub(lambda m: f'"{names.get(m[1], m[1])}"', text)
    return _SCOPE.sub('"/"', text)


def weights_digest(model: nn.Layer) -> str:
    """sha256 over every weight of ``model``: names, dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for key, arr in export_state(model).items():
        h.update(f"{key}:{arr.dtype.str}:{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def graph_key(model: nn.Layer, program: Path) -> str:
    """The cache key: the traced program, the weights and se_viz's edits of the graph."""
    h = hashlib.sha256(b"se_viz-traced-graph\n")
    h.update(("rewrites: " + ", ".join(onnx_rewrite.REWRITES) + "\n").encode())
    h.update(program_text(model, program).encode())
    h.update(weights_digest(model).encode())
    return h.hexdigest()


def to_onnx(prefix: Path) -> bytes:
    """paddle2onnx (no optimiser, opset 17) of a saved program: the ONNX bytes, its input
    dimensions named (`onnx_rewrite`). paddle2onnx logs and swallows its own errors, so an
    empty result is reported here, with its log."""
    import paddle2onnx

    with quiet() as log, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = paddle2onnx.export(str(prefix.with_suffix(".json")),
                                  str(prefix.with_suffix(".pdiparams")), save_file=None,
                                  opset_version=OPSET, optimize_tool="None", verbose=False)
    if not data:
        raise GraphError("paddle2onnx converted nothing for the traced program (its log: "
                           f"{log()[-400:]!r}); use engine='eager'")
    return onnx_rewrite.rewrite(bytes(data))


@contextlib.contextmanager
def quiet():
    """Collect what Paddle's and paddle2onnx's C++ code prints to stdout and stderr (file
    descriptors 1 and 2) while tracing and converting; yields a function returning it.
    Other threads' prints in that second end up there too."""
    import sys

    with tempfile.TemporaryFile(mode="w+b") as sink:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved = [os.dup(1), os.dup(2)]
        text: list[str] = []
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            yield lambda: "".join(text)
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text.append(sink.read().decode("utf-8", "replace"))


# ----------------------------------------------------------------------------- runtime
def ort_session(onnx: bytes, threads: int, spin: bool | None = None,
                size: tuple[int, int] | None = None):
    """An ONNX Runtime CPU session with every graph optimisation, ``threads`` intra-op
    threads and no per-initialiser warnings. ``spin`` (default `runtime.ort_spinning`):
    workers spin while a run lasts and stop right after it, or sleep when out of work.
    ``size`` (height, width): fix the input's named ``height`` and ``width``
    (`onnx_rewrite`), so that shape-dependent fusions happen; the session then takes
    images of that size only."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if size is not None:
        opts.add_free_dimension_override_by_name("height", int(size[0]))
        opts.add_free_dimension_override_by_name("width", int(size[1]))
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # no "unused initialiser" warning per weight
    if ort_spinning() if spin is None else spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    else:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])


class FastGraph:
    """An ONNX Runtime session over a traced graph; `run` returns a `Capture`.

    Its outputs are read by role (`hooks.graph_outputs`), mapped once from the ONNX output
    names in order; a graph with another number of outputs is refused. With ``size`` (the
    network's own input size), ``session`` is fixed to that size, and images of any other
    size run in a second session, made on first use."""

    def __init__(self, onnx: bytes, blocks: Sequence[tuple[str, int]], maps: bool,
                 threads: int, size: tuple[int, int] | None = None,
                 path: Path | None = None) -> None:
        self.size = tuple(size) if size else None
        self.threads = threads
        self.session = ort_session(onnx, threads, size=self.size)
        # images of another size run in a session of any size, made when first needed
        # (from the cached file, or from the bytes kept when there is none)
        self._any_size = None if self.size else self.session
        self._onnx = None if (self.size is None or path is not None) else onnx
        self._path = path
        self._lock = threading.Lock()
        self.input = self.session.get_inputs()[0].name
        self.blocks = [name for name, _ in blocks]
        self.maps = maps
        roles = graph_outputs(self.blocks if maps else ())
        names = [o.name for o in self.session.get_outputs()]
        if len(names) != len(roles):
            raise GraphError(f"the traced graph has {len(names)} outputs, expected "
                             f"{len(roles)}; use engine='eager'")
        self.output = dict(zip(roles, names))  # role -> ONNX output name
        self._roles = graph_outputs(())  # a plain capture's outputs, looked up once
        self._names = [self.output[r] for r in self._roles]
        edges = np.cumsum([0] + [int(c) for _, c in blocks])
        self._columns = {n: slice(int(a), int(b)) for n, a, b in zip(self.blocks, edges, edges[1:])}

    def run(self, batch: np.ndarray, features: Sequence[str] = ()) -> Capture:
        """Capture of one (N, 3, H, W) float32 batch: logits, every gate and squeeze (views
        into the concatenated outputs) and, for the blocks in ``features`` (maps variant),
        the maps before and after SE (the SE layer's input and output)."""
        if features and not self.maps:
            raise ValueError("this graph has no feature-map outputs; use the maps variant")
        roles = graph_outputs(features) if features else self._roles
        session = self.session if batch.shape[2:] == self.size else self.any_size()
        names = [self.output[r] for r in roles] if features else self._names
        out = dict(zip(roles, session.run(names, {self.input: batch})))
        return Capture(
            logits=out["logits"],
            gates={n: out["gates"][:, cols] for n, cols in self._columns.items()},
            squeeze={n: out["squeeze"][:, cols] for n, cols in self._columns.items()},
            features={n: FeatureMaps(out[map_output("before", n)], out[map_output("after", n)])
                      for n in features})


    def stored_at(self, path: Path | None) -> None:
        """The graph's file is now ``path``: its bytes need not be kept (None: keep them)."""
        if path is not None:
            self._path, self._onnx = path, None

    def any_size(self):
        """The session for images of any size (made once, on first use)."""
        if self._any_size is None:
            with self._lock:
                if self._any_size is None:
                    data = self._onnx if self._onnx is not None else self._path.read_bytes()
                    self._any_size = ort_session(data, self.threads)
                    self._onnx = None
        return self._any_size


class ModelState:
    """What a graph was made from, checked before every run: every sublayer's class, its
    attributes (a replaced forward), hooks, parameters, buffers and sublayers (names and
    objects), and every tensor's contents (data address, in-place version, and its first,
    middle and last values read in place: Paddle's ``set_value``, ``set_state_dict`` and
    optimiser steps move neither the address nor the version).

    The layers, their dicts and the tensors are listed once, when the graph is bound. A
    check reads the dicts' CPython version tags (`dict_tags`; one gather) and compares the
    dicts with copies made then only when a tag moved (C-level dict equality: an unchanged
    value is the same object); it reads the tensors' addresses and versions from Paddle's
    own objects (`compat.tensor_words`: three gathers; or asking each tensor, mapped in C,
    where those cannot be read) and then their sampled values (one gather). No Python frame
    per layer or tensor: about 0.1-0.2 ms for MobileNetV3 or SE-ResNet-50 right after a
    forward pass has evicted them from the caches, where walking the tree cost 1.2-1.5 ms
    (benchmarks/floor.py measures it). A change anywhere in the tree shows in a listed dict
    (a new or replaced sublayer in its parent's), so the tree is not walked again. Not
    seen: a layer's whole ``__dict__`` assigned anew, and a one-element tensor replaced by
    another of the same value (its later in-place writes then go unseen)."""

    def __init__(self, model: nn.Layer) -> None:
        self.model = weakref.ref(model)
        self.lock = model_lock(model)
        # strong references (the model itself only weakly, so a dropped model is freed)
        self.layers, self.tensors = self._walk(model)
        self.types = list(map(type, self.layers))
        self.dicts = self._dicts(self.layers)
        self.copies = self._copy(self.dicts)
        self.own_dicts = self._dicts([model])  # held for the tags; the model stays weak
        self.own = self._copy(self.own_dicts)
        self.own_type = type(model)
        self.tags = (dict_tags.TagReader(self.own_dicts + self.dicts, self.layers)
                     if dict_tags.available() else None)
        self.tag_values = self.tags.read() if self.tags else None
        self.words = compat.tensor_words(self.tensors)
        if self.words is None:  # asked per tensor on every check, as they are now
            self.ptrs = compat.data_ptrs(self.tensors)
            self.versions = compat.inplace_versions(self.tensors)
        self.sample = compat.value_reader(self.tensors, [self._sample_index(t)
                                                         for t in self.tensors])
        self.values = self.sample()

    @staticmethod
    def _sample_index(t: paddle.Tensor) -> list[int]:
        n = int(np.prod(t.shape))
        return sorted({0, n // 2, n - 1}) if n else []

    @staticmethod
    def _walk(model: nn.Layer) -> tuple[list, list]:
        """Every sublayer (not the model) and every parameter and buffer tensor, once."""
        layers, tensors, stack = [], [], [model]
        while stack:
            layer = stack.pop()
            if layer is not model:
                layers.append(layer)
            _, _, params, buffers, subs = compat.layer_parts(layer)
            tensors += [t for group in (params, buffers) for t in group.values() if t is not None]
            stack += subs.values()
        return layers, tensors

    @staticmethod
    def _dicts(layers: Sequence[nn.Layer]) -> list[dict]:
        """Each layer's ``__dict__`` and its hook, parameter, buffer and sublayer dicts."""
        return [*map(_DICT, layers), *chain.from_iterable(compat.layers_parts(layers))]

    @staticmethod
    def _copy(dicts: Sequence[dict]) -> list[dict]:
        return [d.copy() for d in dicts]  # an OrderedDict's copy keeps its order checked

    def _same_tensors(self) -> bool:
        """Same addresses and versions (Paddle's own words read by three gathers, or asked
        per tensor), then the same sampled values; never read through the sample reader
        once an address moved."""
        if self.words is not None:
            if not self.words.same():
                return False
        elif (compat.data_ptrs(self.tensors) != self.ptrs
              or compat.inplace_versions(self.tensors) != self.versions):
            return False
        return np.array_equal(self.sample(), self.values)

    def changed(self) -> bool:
        model = self.model()
        if model is None or type(model) is not self.own_type:
            return True
        if self.tags is None or not np.array_equal(self.tags.read(), self.tag_values):
            if not self._same_structure(model):
                return True
        return not self._same_tensors()

    def _same_structure(self, model: nn.Layer) -> bool:
        """The dicts compared with their copies (after a write the tags saw, or where
        there are no tags); re-armed when only scalar flags moved."""
        own = self._dicts([model])
        try:  # values with their own == (arrays, tensors) are compared only once replaced
            same = (own == self.own and self.dicts == self.copies
                    and list(map(type, self.layers)) == self.types)
        except Exception:  # noqa: BLE001 - a replaced value that cannot say it is equal
            same = False
        if not same:
            if not (_same_objects(own, self.own) and _same_objects(self.dicts, self.copies)
                    and list(map(type, self.layers)) == self.types):
                return False
            self.own, self.copies = self._copy(own), self._copy(self.dicts)
        if self.tags is not None:
            if any(a is not b for a, b in zip(own, self.own_dicts)):
                return False  # the model's own dicts replaced: the tags read the old ones
            self.tag_values = self.tags.read()
        return True


_SCALARS = (bool, int, float, str, type(None))


def _same_objects(now: Sequence[dict], then: Sequence[dict]) -> bool:
    """The dicts hold the same keys, in order, and the same objects, scalar flags aside:
    Paddle sets ``_built`` on a layer's first call and ``training`` in train()/eval();
    neither changes what the traced graph computes."""
    for a, b in zip(now, then):
        if list(a) != list(b):
            return False
        for key, value in a.items():
            old = b[key]
            if value is not old and not (isinstance(value, _SCALARS) and isinstance(old, _SCALARS)):
                return False
    return len(now) == len(then)


_DICT = operator.attrgetter("__dict__")


@dataclass(frozen=True)
class GraphInfo:
    """How a model object got its graph: ``source`` "built" (traced, converted, probed;
    stored at ``path``, None if the cache is not writable) or "disk" (traced to find the
    key, then loaded from ``path``); ``seconds`` for all of it, session included."""

    key: str
    path: Path | None
    source: str
    seconds: float
    threads: int
    maps: bool = False


class GraphError(RuntimeError):
    """The traced graph could not be made or did not reproduce the eager forward; captures
    of this model (as it is now) use the eager hooks instead (engine="auto")."""


@dataclass
class _Binding:
    graph: FastGraph | None
    state: ModelState
    info: GraphInfo | None
    error: str = ""


# model -> {maps: binding}: each variant of a model's graph is made once per model state
_BINDINGS: "weakref.WeakKeyDictionary[nn.Layer, dict[bool, _Binding]]" = \
    weakref.WeakKeyDictionary()
_BUILD_LOCK = threading.Lock()


def graph_for(model: nn.Layer, maps: bool = False) -> tuple[FastGraph, GraphInfo]:
    """The fast graph of ``model`` as it is now (``maps``: the variant with feature-map
    outputs) and how it was obtained: kept per model object, else traced and loaded from
    the disk cache, else traced, converted and probed (thread-safe). `GraphError` when no
    graph can be made for the model as it is (remembered until the model changes)."""
    binding = _BINDINGS.get(model, {}).get(maps)
    if binding is None or _stale(model, binding):
        with _BUILD_LOCK:
            variants = _BINDINGS.setdefault(model, {})
            binding = variants.get(maps)
            if binding is None or _stale(model, binding):
                binding = variants[maps] = _bind_or_fail(model, maps)
    if binding.graph is None:
        raise GraphError(binding.error)
    return binding.graph, binding.info


def _bind_or_fail(model: nn.Layer, maps: bool) -> _Binding:
    try:
        return _bind(model, maps)
    except GraphError as exc:
        log.warning("no fast graph for this model (captures use the eager hooks): %s", exc)
        return _Binding(None, ModelState(model), None, str(exc))


def _stale(model: nn.Layer, binding: _Binding) -> bool:
    """Checked under the model's lock: an eager capture's own hooks are not a change."""
    with binding.state.lock:  # model_lock(model), looked up once
        return binding.state.changed()


def bound(model: object) -> bool:
    """Whether ``model`` already has a graph (then `graph_for` checks it is still current;
    a model whose weights moved off the CPU or changed type is traced again and refused)."""
    try:
        return any(b.graph is not None for b in _BINDINGS.get(model, {}).values())
    except TypeError:  # not weak-referenceable: never bound
        return False


def forget(model: nn.Layer) -> None:
    """Drop ``model``'s graphs from memory (the disk cache stays)."""
    with _BUILD_LOCK:
        _BINDINGS.pop(model, None)


def _bind(model: nn.Layer, maps: bool) -> _Binding:
    start = time.perf_counter()
    if not supports(model):
        raise GraphError(f"the fast graph needs an se_viz network with float32 CPU weights, "
                         f"got {type(model).__name__}; use engine='eager'")
    state = ModelState(model)
    blocks = [(name, se.channels) for name, _, se in se_blocks(model)]
    threads = cpu_threads()
    with tempfile.TemporaryDirectory(prefix="se_viz_trace_") as tmp:
        try:
            prefix = trace(model, maps, Path(tmp))
        except Exception as exc:  # Paddle's tracer raises many kinds; none is fatal here
            raise GraphError("paddle.jit.to_static could not trace the model "
                             f"({type(exc).__name__}: "
                             f"{str(exc)[:300]})") from exc
        key = graph_key(model, prefix.with_suffix(".json"))
        data, path = _load_cached(key)
        source = "disk"
        if data is None:
            data, source = to_onnx(prefix), "built"
    graph = FastGraph(data, blocks, maps, threads, own_size(model), path)
    if source == "built":
        _probe(model, graph)
        path = _store(key, data)
        graph.stored_at(path)
    info = GraphInfo(key, path, source, time.perf_counter() - start, threads, maps)
    return _Binding(graph, state, info)


def own_size(model: nn.Layer) -> tuple[int, int] | None:
    """The (height, width) ``model``'s preprocessing crops images to, if it has one."""
    crop = getattr(getattr(model, "preprocessing", None), "crop", None)
    return (int(crop), int(crop)) if crop else None


def probe_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A seeded (1, 3, h, w) float32 image like a normalised photo: smooth fields of unit
    spread (bilinear from an 8 x 8 grid) with a little fine noise. White noise at full
    size drives an untrained network's activations far beyond a photo's, where float
    reordering alone moved SE-ResNeXt-50's gates by 1.3e-3 (this image: 1.8e-5)."""
    rng = np.random.default_rng(seed)
    grid = rng.normal(0.0, 1.0, (3, 8, 8))

    def axis(n: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.linspace(0.0, 7.0, n)
        low = np.minimum(pos.astype(int), 6)
        return low, pos - low

    (y, fy), (x, fx) = axis(h), axis(w)
    rows = grid[:, y] * (1 - fy)[None, :, None] + grid[:, y + 1] * fy[None, :, None]
    img = rows[:, :, x] * (1 - fx) + rows[:, :, x + 1] * fx
    img += rng.normal(0.0, 0.1, img.shape)
    return img[None].astype(np.float32)


def _probe(model: nn.Layer, graph: FastGraph) -> None:
    """Refuse a graph that does not reproduce the eager hooks on a seeded probe image (at
    the size its session is fixed to, else `PROBE_SIZE`)."""
    h, w = graph.size or (PROBE_SIZE, PROBE_SIZE)
    x = probe_image(h, w)
    features = graph.blocks[-1:] if graph.maps else ()
    got, ref = graph.run(x, features), capture_hooks(model, x, features)
    worst = max(float(np.abs(got.gates[n] - ref.gates[n]).max()) for n in ref.gates)
    scale = float(np.abs(ref.logits).max()) + 1.0
    logit_gap = float(np.abs(got.logits - ref.logits).max()) / scale
    maps_gap = max((float(np.abs(getattr(got.features[n], side) - getattr(f, side)).max()) /
                    (float(np.abs(getattr(f, side)).max()) + 1.0)
                    for n, f in ref.features.items() for side in MAP_SIDES),
                   default=0.0)
    if not (worst <= PROBE_ATOL and logit_gap <= PROBE_ATOL and maps_gap <= PROBE_ATOL):
        raise GraphError(f"the converted graph differs from the eager forward on a probe "
                           f"image (gates {worst:.2g}, logits {logit_gap:.2g}, maps "
                           f"{maps_gap:.2g}); use engine='eager'")


def _cache_name(key: str, data: bytes) -> str:
    return f"{key[:32]}.{hashlib.sha256(data).hexdigest()[:16]}.onnx"


def _load_cached(key: str) -> tuple[bytes | None, Path | None]:
    """The bytes of a cached graph whose content hash checks out; damaged files are
    removed (the caller converts again)."""
    for path in sorted(graph_cache_dir().glob(f"{key[:32]}.*.onnx")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if path.name == _cache_name(key, data):
            with contextlib.suppress(OSError):
                os.utime(path)  # most recently used: kept longest by _prune
            return data, path
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
    """Put ``data`` in the graph cache; None if the cache is not writable."""
    path = graph_cache_dir() / _cache_name(key, data)
    try:
        atomic_write(path, data)
        _prune(path.parent)
        return path
    except OSError:
        return None  # the cache only saves time: a read-only home still captures


def capture_fast(model: nn.Layer, batch: np.ndarray, batch_size: int = 16,
                 features: Sequence[str] = ()) -> Capture:
    """Capture of (N, 3, H, W) float32 ``batch`` through the fast graph, ``batch_size``
    images per run; the same fields as the hook capture. ``features``: block names whose
    maps before/after SE to keep (then the maps variant of the graph runs)."""
    if features:
        names = [b.name for b in model.info.blocks]  # no walk over the sublayers per call
        features = check_names(features, names, "feature maps")
    graph, _ = graph_for(model, maps=bool(features))
    parts = [graph.run(batch[i:i + batch_size], features)
             for i in range(0, batch.shape[0], batch_size)]
    return Capture.concat(parts)
