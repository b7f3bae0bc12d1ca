"""How Paddle runs in this process: CPU threads and eager mode across threads. The private
Paddle accesses this needs are in `se_viz.engine.compat`."""

from __future__ import annotations

import os

import paddle

from . import compat


def cpu_threads() -> int:
    """Threads for CPU inference: ``$SE_VIZ_THREADS`` if set to a positive integer, else
    every core this process may run on (its CPU affinity)."""
    env = os.environ.get("SE_VIZ_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - platforms without affinity
        return max(1, os.cpu_count() or 1)


def ort_spinning() -> bool:
    """Whether ONNX Runtime's worker threads spin between ops: ``$SE_VIZ_SPIN`` ("1" or
    "0"), default on. Spinning makes one capture on an otherwise idle machine ~10 % faster
    (benchmarks/vs_previous.py); beside other busy threads it made captures and those
    threads slower (benchmarks/capture_contention.py), so the app turns it off."""
    return os.environ.get("SE_VIZ_SPIN", "1").strip() != "0"


def set_cpu_threads(n: int | None = None) -> int:
    """Let Paddle's CPU kernels use ``n`` threads (default `cpu_threads()`); returns it.

    ``import paddle`` leaves Paddle at one thread; `se_viz.engine` calls this once when it
    is imported, so every core is used.
    """
    n = cpu_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n!r}")
    compat.set_num_threads(n)
    return n


def keep_eager_mode(keep: list) -> None:
    """Keep Paddle in eager (dygraph) mode in this thread and in threads started later.

    Paddle 3.x enables eager mode at import with a context manager stored in a thread-local.
    When the thread that imported Paddle ends (Streamlit imports the app in a short-lived
    script thread), the guard is garbage-collected, its exit resets the process-wide tracer
    to None, and later threads run in static-graph mode ("conv2d(): argument must be Value,
    but got EagerParamBase"). ``keep`` (a list that lives as long as the process) holds the
    guard so that this never happens; a thread that still finds eager mode off turns it on.
    """
    if not paddle.in_dynamic_mode():
        paddle.disable_static()
    guard = compat.eager_mode_guard()
    if guard is not None and all(g is not guard for g in keep):
        keep.append(guard)
