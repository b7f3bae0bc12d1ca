"""Timing helpers, result rows and the table printer shared by the benchmark suite."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Row:
    """One measured figure: ``value`` in ``unit``; ``vs`` what it is compared with."""

    section: str
    name: str
    value: float | str
    unit: str = ""
    vs: str = ""
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    """How many runs: ``warmup`` untimed, then ``repeats`` timed (more for cheap cases)."""

    warmup: int
    repeats: int
    quick: bool

    def n(self, cost: str = "fast") -> int:
        """Repeats for a case that is "fast" (< 0.1 s), "slow" (< 1 s) or "heavy"."""
        scale = {"fast": 1.0, "slow": 0.5, "heavy": 0.25}[cost]
        return max(3, int(self.repeats * scale))


def interleaved(cases: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                gap_s: float = 0.02, shuffle: bool = False) -> dict[str, list[float]]:
    """Seconds per call of every case, run in turn (a, b, c, a, b, c, ...) after warm-up.

    Interleaving puts the machine's noise on every case alike. ``gap_s`` of idle time
    before each timed call lets the previous case's worker threads stop spinning.
    ``shuffle``: a new (seeded) order every round, so that no case always runs right after
    another that leaves the same weights in the caches (two cases sharing a session).
    """
    import random

    for fn in cases.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    order, rng = list(cases.items()), random.Random(0)
    for _ in range(repeats):
        if shuffle:
            rng.shuffle(order)
        for name, fn in order:
            time.sleep(gap_s)
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ms(seconds: list[float]) -> float:
    return statistics.median(seconds) * 1e3


def spread(seconds: list[float]) -> str:
    """"n=15, p25-p75 31.0-33.2 ms": how much a median can be trusted."""
    qs = statistics.quantiles(seconds, n=4) if len(seconds) > 1 else [seconds[0]] * 3
    return f"n={len(seconds)}, p25-p75 {qs[0] * 1e3:.1f}-{qs[2] * 1e3:.1f} ms"


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"python": platform.python_version(), "platform": platform.platform(),
            "cores": len(os.sched_getaffinity(0)), "load_avg": os.getloadavg()}
    try:
        with open("/proc/cpuinfo") as f:
            lines = f.read().splitlines()
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in lines
                           if line.startswith("model name"))
        flags = next(line for line in lines if line.startswith("flags")).split()
        info["avx512"] = "avx512f" in flags
    except (OSError, StopIteration):
        pass
    return info


def table(rows: list[Row]) -> str:
    """Markdown table of the rows, one header line per section."""
    out = ["| measure | value | unit | compared with | notes |",
           "| --- | ---: | --- | --- | --- |"]
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            out.append(f"| **{section}** | | | | |")
        value = f"{r.value:.4g}" if isinstance(r.value, float) else str(r.value)
        out.append(f"| {r.name} | {value} | {r.unit} | {r.vs} | {r.note} |")
    return "\n".join(out)
