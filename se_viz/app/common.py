"""Small drawing helpers every view uses: the error funnel, charts, tables."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import streamlit as st

from .. import images, labels
from ..analysis import top_channels, topk_change
from ..errors import SEVizError
from ..plots.predictions import topk_compare
from .state import shared_figure

log = logging.getLogger("se_viz.app")

GENERIC_ERROR = ("Something unexpected went wrong while {what}. The details were written to the "
                 "server log; the rest of the page still works. Try again or reload the page.")


@contextmanager
def guard(what: str) -> Iterator[None]:
    """Expected errors -> their message; anything else -> logged with traceback + generic text."""
    try:
        yield
    except SEVizError as exc:
        st.error(str(exc))
    except Exception:
        log.exception("unexpected error while %s", what)
        st.error(GENERIC_ERROR.format(what=what))


def chart(fig: Any, key: str, height: int | str = "content") -> None:
    st.plotly_chart(fig, width="stretch", height=height, key=f"fig_{key}")


def top_table(probs: np.ndarray, num_classes: int, k: int = 5) -> dict[str, list]:
    idx = top_channels(probs, k)
    return {"class": [labels.label_for(i, num_classes) for i in idx],
            "probability": [f"{probs[i]:.1%}" for i in idx]}


def digest_of(upload: Any) -> str:
    """sha256 of an uploaded file, computed once per upload (memo in the session, which
    keeps the 256 newest so that a long session of uploads does not grow it)."""
    memo = st.session_state.setdefault("_digests", {})
    if upload.file_id not in memo:
        memo[upload.file_id] = images.image_digest(upload.getvalue())
        while len(memo) > 256:
            memo.pop(next(iter(memo)))
    return memo[upload.file_id]


def unique(name: str, taken: set[str]) -> str:
    out, n = name, 2
    while out in taken:
        out, n = f"{name} ({n})", n + 1
    return out


def ids_text(idx: np.ndarray, most: int = 20) -> str:
    ids = ", ".join(str(int(i)) for i in idx[:most])
    return (ids or "none") + (f" ... ({len(idx)} in all)" if len(idx) > most else "")


def render_topk_change(before: np.ndarray, after: np.ndarray, model: Any, key: str,
                       cache_key: tuple) -> None:
    """Top-5 before and after an intervention (probs (K,)) as bars and as a table."""
    change = topk_change(before, after, 5)

    def name(idx: np.ndarray) -> list[str]:
        return [labels.label_for(i, model.info.num_classes) for i in idx]

    fig = shared_figure("topk", cache_key, lambda: topk_compare(
        name(change["before_idx"]), change["before_prob"],
        name(change["after_idx"]), change["after_prob"]))
    chart(fig, key, height=320)
    st.table({"before": [f"{n} ({p:.1%})" for n, p in zip(name(change["before_idx"]),
                                                         change["before_prob"])],
              "after": [f"{n} ({p:.1%})" for n, p in zip(name(change["after_idx"]),
                                                       change["after_prob"])]})
    st.caption(f"{change['kept']} of the top-5 kept; top-1 "
               + ("changed." if change["top1_changed"] else "unchanged."))


@contextmanager
def queue_notice() -> Iterator[Any]:
    """A callback for `se_viz.runs.FairQueue` waits that shows the user's place in the line
    (and a progress bar) while they wait; the notice is cleared afterwards."""
    from ..runs import wait_text

    spot = st.empty()
    first: list[int] = []

    def on_wait(ahead: int, waiting: int) -> None:
        if not first:
            first.append(max(ahead, 1))
        done = 1.0 - min(ahead, first[0]) / (first[0] + 1)
        with spot.container():
            st.info(wait_text(ahead, waiting))
            st.progress(done, text=f"{ahead} ahead of you")

    try:
        yield on_wait
    finally:
        spot.empty()
