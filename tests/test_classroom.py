"""A small classroom in real Chromium: benchmarks/classroom.py with 8 sessions, the narrow
model (SE_VIZ_WIDTH=8), uploads spread over 20 s and then all within a fraction of a
second. Every session must see its own photo's name and top-5 (recomputed here with se_viz,
not taken from the benchmark's own verdict) and no other photo, no exception anywhere,
the server must serve in arrival order, and in the burst someone waiting must have been
told so. No timing is asserted: the numbers are the benchmark's business.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
WIDTH = 8
N = 8

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]


def run_classroom(tmp_path: Path, *args: str, width: int = WIDTH) -> dict:
    pytest.importorskip("playwright.async_api")
    out = tmp_path / "classroom.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "classroom.py"), "--n", str(N),
         "--width", str(width), "--timeout", "150", "--photos", str(tmp_path / "photos"),
         "--json", str(out), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def expected_top5(photos: list[Path], width: int = WIDTH
                  ) -> dict[str, list[tuple[str, str]]]:
    """The narrow model's top-5 rows as the app prints them, computed here."""
    import se_viz
    from se_viz import labels

    model = se_viz.build_model("se_resnet50_vd", width=width)
    cap = se_viz.capture(model, [se_viz.load_image(p) for p in photos],
                         features=[b.name for b in model.info.blocks], batch_size=1)
    idx, probs = cap.top_k(5)
    return {p.name: [(labels.label_for(i, 1000), f"{q:.1%}") for i, q in zip(idx[n], probs[n])]
            for n, p in enumerate(photos)}


def check_every_session(report: dict, width: int = WIDTH) -> None:
    summary, sessions = report["summary"], report["sessions"]
    photos = [Path(p) for p in report["photos"]]
    assert len({p.read_bytes() for p in photos}) == N  # N different photos
    expected = expected_top5(photos, width)
    names = [p.name for p in photos]
    for s in sessions:
        assert s["error"] == "", s
        assert s["heatmap_s"] is not None and s["explorer_s"] is not None, s
        assert s["name_ok"], s  # its photo's heading and heatmap title
        table = s["seen_top5"]
        for label, prob in expected[s["photo"]]:
            assert label in table and prob in table, (s["photo"], label, prob, table)
        assert s["others_seen"] == [] and all(
            other not in table for other in names if other != s["photo"])
        assert s["exceptions"] == 0 and s["errors_shown"] == 0 and s["js_errors"] == []
    assert summary["got_heatmap"] == N and summary["own_result"] == N
    assert summary["tracebacks_in_log"] == 0
    served = summary["served"]
    assert served == N and summary["served_fifo"], summary  # in arrival (ticket) order
    assert summary["left_queue"] == []


def test_eight_sessions_over_twenty_seconds_each_get_their_own_heatmap(tmp_path):
    report = run_classroom(tmp_path, "--window", "20")
    check_every_session(report)


def test_a_burst_of_eight_is_served_in_arrival_order_and_waiters_are_told(tmp_path):
    """All eight at the same moment, with phone-sized photos (3000-4032 pixels) and the
    full-size SE-ResNet-50, so that turns overlap and sessions wait. (With the narrow model,
    decoding was most of a turn; since large JPEGs decode in draft mode, turns got short
    enough that in one suite run of two no page waited long enough to be told.)"""
    report = run_classroom(tmp_path, "--burst", "--burst-s", "0", "--px", "3000", "4032",
                           width=64)
    check_every_session(report, width=64)
    sessions = {s["photo"]: s for s in report["sessions"]}
    turns = report["summary"]["turns"]  # (ticket, photo, waited s, ran s, notices drawn)
    waited = {photo: w for _, photo, w, _, _ in turns}
    for _, photo, seconds, _, drawn in turns:
        # A wait a person notices gets a notice: the server draws it at once when others
        # are ahead, 0.3-0.4 s into the wait when the user is next (QueueNotice.quiet) ...
        if seconds >= 0.6:
            assert drawn > 0, (photo, seconds, turns)
        # ... and the page receives it unless it was replaced first: Streamlit sends what
        # is at a place on the page when it next flushes that session, and with eight
        # browsers on these two cores a flush can be over a second late (a 1.15 s wait
        # with two notices drawn received neither; `--nice 19` on the browsers, received
        # = drawn), so only a wait of more than twice that must have reached the page.
        if seconds >= 2.5:
            assert sessions[photo]["queue_messages"] > 0, (photo, seconds, turns)
    # ... and drawn, though a busy browser may draw a short notice and its removal as one
    told = [s for s in sessions.values() if s["queue_texts"]]
    assert told, f"no page waiting in the burst drew the queue notice: {waited}"
    for s in told:  # each waiter's place only ever moves forward
        places = [0 if "Your image is next" in t else int(re.search(r"Queued: (\d+)", t)[1])
                  for t in s["queue_texts"]]
        assert places == sorted(places, reverse=True), s["queue_texts"]
    # The bar is part of the notice (one element): every notice drawn came with it, and it
    # only ever fills as the place moves forward.
    for s in told:
        bars = s["queue_bars"]
        assert len(bars) == len(s["queue_texts"]) and None not in bars, s
        assert all(0 < b < 100 for b in bars) and bars == sorted(bars), s
