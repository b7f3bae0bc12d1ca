"""The app's server-side work without Streamlit: upload bytes -> figures, and view changes.

Mirrors what the app (``se_viz.app``, through ``se_viz.runs``) does per request: decode
the upload, capture every gate and every
block's feature maps in one pass (kept as float16, as the app keeps them), build the Plotly
figures of the Overview and the Block explorer, and serialise them to JSON the way
``st.plotly_chart`` does. A view change starts from the cached result.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import plotly.io as pio

import se_viz
from se_viz import analysis
from se_viz import plots as figures
from se_viz.images import decode_image
from se_viz.plots import maps_mosaic

from common import Plan, Row, interleaved, median_ms, spread

SECTION = "App server work (one image, 224x224)"
K = 6  # the block explorer's default k


def _json(figs: list) -> int:
    return sum(len(pio.to_json(f, validate=False)) for f in figs)  # as st.plotly_chart


def _result(model, data: bytes, name: str, engine: str = "auto") -> dict:
    """What se_viz.runs.run_image keeps: gates, squeeze, probabilities and float16 maps."""
    img = decode_image(data, name, draft_for=model.preprocessing)  # as se_viz.runs.images
    cap = se_viz.capture(model, [img], features=[b.name for b in model.info.blocks],
                         engine=engine)
    return {"gates": {b: g[0] for b, g in cap.gates.items()},
            "squeeze": {b: s[0] for b, s in cap.squeeze.items()},
            "probs": cap.probabilities[0],
            "maps": {b: f.before[0].astype(np.float16) for b, f in cap.features.items()}}


def _phone_jpeg() -> bytes:
    """A 12-megapixel JPEG made of the asset photos (benchmarks/decode_bench.py)."""
    from decode_bench import collage, jpeg

    return jpeg(collage((4032, 3024)))


def _overview(res: dict, order: str = "natural") -> list:
    gates = res["gates"]
    orders = None if order == "natural" else {
        b: analysis.channel_order(g, order) for b, g in gates.items()}
    return [figures.gate_heatmap(gates, orders)]


def _explorer(res: dict, block: str) -> list:
    """The Block explorer for ``block``: histogram, squeeze vs gate, top-k and bottom-k maps."""
    g, s = res["gates"][block], res["squeeze"][block]
    figs = [figures.gate_histogram(g, block),
            figures.squeeze_gate_scatter(s, g, block, analysis.squeeze_vs_gate(s, g))]
    for largest in (True, False):
        idx = analysis.top_channels(g, K, largest)
        before = res["maps"][block][idx].astype(np.float32)
        figs.append(maps_mosaic([("before SE", before),
                                 ("after SE", before * g[idx][:, None, None])], idx, g[idx]))
    return figs


def run(model, image_path: Path, plan: Plan) -> list[Row]:
    """Rows: decode; upload -> Overview and -> every figure of the first view, fast vs
    eager; view changes from cached results; JSON sizes."""
    data, name = image_path.read_bytes(), image_path.name
    first, other = "SE_2_1", "SE_4_6"

    def upload(engine: str) -> Callable[[], object]:
        def go() -> None:
            res = _result(model, data, name, engine)
            _json(_overview(res) + _explorer(res, first))
        return go

    phone = _phone_jpeg()
    runs_phone = {"phone": lambda: _json(_overview(_result(model, phone, "phone.jpg")))}
    cached = _result(model, data, name)
    built = _overview(cached) + _explorer(cached, first)  # the app keeps built figures
    runs: dict[str, Callable[[], object]] = {
        "decode": lambda: decode_image(data, name),
        "upload": upload("auto"), "upload_eager": upload("eager"),
    }
    views: dict[str, Callable[[], object]] = {
        "view_block": lambda: _json(_explorer(cached, other)),
        "view_order": lambda: _json(_overview(cached, "sorted")),
        "view_seen": lambda: _json(built),
    }
    t = interleaved(runs, plan.n("slow"), plan.warmup)
    t.update(interleaved(runs_phone, plan.n("slow"), plan.warmup))
    time.sleep(0.5)  # Paddle's OpenMP workers spin after a run: keep them off the views
    t.update(interleaved(views, plan.n("fast"), plan.warmup))
    m = {k: median_ms(v) for k, v in t.items()}
    heat = _json(_overview(cached))
    heat_sorted = _json(_overview(cached, "sorted"))
    grid = _json(_explorer(cached, "SE_3_4")[2:3])
    hw = cached["maps"]["SE_3_4"].shape[1:]
    return [
        Row(SECTION, "decode upload bytes", m["decode"], "ms", "",
            f"{name}, {len(data) / 1024:.0f} KiB"),
        Row(SECTION, "upload -> every figure of the page (fast path, maps included)",
            m["upload"], "ms", f"{m['upload_eager'] / m['upload']:.2f}x faster than eager",
            "decode, 1 capture with all 16 blocks' maps, heatmap + 4 explorer figures, JSON; "
            + spread(t["upload"])),
        Row(SECTION, "the same with the eager hooks", m["upload_eager"], "ms", "",
            spread(t["upload_eager"])),
        Row(SECTION, "12 MP phone JPEG (4032x3024) upload -> heatmap", m["phone"], "ms",
            "goal <= 500 ms", f"{len(phone) / 2**20:.1f} MiB; draft decode, crop, 1 capture "
            "with every block's maps, heatmap + JSON; " + spread(t["phone"])),
        Row(SECTION, "view change: another block in the explorer (cached result)",
            m["view_block"], "ms", "goal < 50 ms", "4 figures + JSON; " + spread(t["view_block"])),
        Row(SECTION, "view change: channel order sorted (cached result)", m["view_order"],
            "ms", "goal < 50 ms", "heatmap + JSON; " + spread(t["view_order"])),
        Row(SECTION, "view change back to a view seen before (figures cached too)",
            m["view_seen"], "ms", "goal < 50 ms",
            "heatmap + 4 explorer figures, JSON only; " + spread(t["view_seen"])),
        Row(SECTION, "heatmap JSON, 16 blocks (15,104 gates)", heat / 1024, "KiB",
            "goal < 200 KB (195 KiB)",
            f"sorted order (with channel ids): {heat_sorted / 1024:.0f} KiB"),
        Row(SECTION, f"feature-map mosaic JSON, {K} maps of SE_3_4 {hw[0]}x{hw[1]}, before+after",
            grid / 1024, "KiB"),
    ]
