"""Small drawing helpers every view uses: the error funnel, charts, tables."""

from __future__ import annotations

import gc
import html
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import streamlit as st

from .. import images, labels
from ..analysis import top_channels, topk_change
from ..blocks import by_name, pick
from ..errors import SEVizError
from ..plots.predictions import topk_compare
from ..runs import wait_text
from .state import results, shared_figure

log = logging.getLogger("se_viz.app")
PROBE = "_se_viz_queue_probe"  # a session-state key that is never set
# The queue notice's colours: Streamlit's info box and the theme's primary colour (config.toml)
INFO_BACKGROUND, INFO_TEXT = "rgba(28, 131, 225, 0.1)", "rgb(0, 66, 128)"
BAR_TRACK, BAR_FILL = "rgba(43, 108, 176, 0.2)", "#2b6cb0"


@st.cache_resource(show_spinner=False)
def server_log() -> bool:
    """se_viz's log lines (queue turns, unexpected errors; with SE_VIZ_LOG_LEVEL=debug also
    each page run's time) on the server's stderr at Streamlit's level (``--logger.level``,
    info by default) unless SE_VIZ_LOG_LEVEL says another; once per process. They go to
    the root logger's handler: a new one in Streamlit's format unless there is one already
    (Paddle adds one when imported if there is none; pytest has its own)."""
    level = (os.environ.get("SE_VIZ_LOG_LEVEL", "").strip()
             or str(st.get_option("logger.level"))).upper()
    if not isinstance(logging.getLevelName(level), int):
        raise SEVizError(f"SE_VIZ_LOG_LEVEL must be debug, info, warning or error, got "
                         f"{level.lower()!r}. Fix the variable and restart.")
    logging.getLogger("se_viz").setLevel(level)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(st.get_option("logger.messageFormat")))
        root.addHandler(handler)
    return True


@st.cache_resource(show_spinner=False)
def freeze_startup_heap() -> int:
    """Hide what start-up made (modules, Paddle, Plotly, the model and its fast graph: about
    250,000 objects at full size) from the garbage collector, once per process; returns
    how many. Streamlit runs a full collection after every script run
    (``runner.postScriptGC``); over that heap one held the GIL for 130 ms here, stalling
    every other session's script, the captures' Python and the websocket sends. Afterwards
    it takes 1-4 ms. Garbage is collected first, so nothing dead is kept."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


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


def block_ui(where: Any, label: str, blocks: Any, key: str, se_only: bool = False) -> str:
    """A selectbox of the network's attention blocks (``model.info.blocks``; with
    ``se_only`` only those with a bottleneck), `se_viz.blocks.pick`'s block first shown;
    each option shows its module path. ``where``: st or a column."""
    chosen = [b for b in blocks if b.reducible or not se_only]
    options = [b.name for b in chosen]
    about = by_name(chosen)
    return where.selectbox(label, options, index=options.index(pick(chosen)), key=key,
                           format_func=lambda n: f"{n} ({about[n].path})")


def class_name(model: Any, index: int) -> str:
    """Name of class ``index``: the network's own class names, else ImageNet-1k's for a
    1000-class head, else "class i"."""
    return labels.label_for(int(index), model.info.num_classes, model.info.class_names)


def class_names(model: Any) -> list[str]:
    """Every class's name, index order (`class_name`)."""
    return [class_name(model, i) for i in range(model.info.num_classes)]


def top_table(probs: np.ndarray, model: Any, k: int = 5) -> dict[str, list]:
    idx = top_channels(probs, k)
    return {"class": [class_name(model, i) for i in idx],
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
    """Top-5 before and after an intervention (probs (K,)) as bars and as a table;
    ``cache_key`` (image, network, intervention) with the class names keys the figure."""
    change = topk_change(before, after, 5)

    def name(idx: np.ndarray) -> list[str]:
        return [class_name(model, i) for i in idx]

    fig = shared_figure("topk", (*cache_key, model.info.class_names), lambda: topk_compare(
        name(change["before_idx"]), change["before_prob"],
        name(change["after_idx"]), change["after_prob"]))
    chart(fig, key, height=320)
    st.table({"before": [f"{n} ({p:.1%})" for n, p in zip(name(change["before_idx"]),
                                                         change["before_prob"])],
              "after": [f"{n} ({p:.1%})" for n, p in zip(name(change["after_idx"]),
                                                       change["after_prob"])]})
    st.caption(f"{change['kept']} of the top-5 kept; top-1 "
               + ("changed." if change["top1_changed"] else "unchanged."))


def wait_html(ahead: int, waiting: int, per_turn: float | None, first: int) -> str:
    """The queue notice as one HTML block: `se_viz.runs.wait_text` in an info box that
    screen readers announce (``role="status"``) and a bar that fills as the place moves
    forward from ``first`` (the place first shown): (first - ahead + 1) / (first + 2), so
    it never reads empty or full while the user is still waiting."""
    percent = round(100 * (first - min(ahead, first) + 1) / (first + 2))
    after = f"{ahead} ahead of you" if ahead else "next"
    return (f'<div class="se-viz-queue" role="status" style="background:{INFO_BACKGROUND};'
            f'color:{INFO_TEXT};border-radius:0.5rem;padding:0.75rem 1rem;margin:0.25rem 0">'
            f'<div>{html.escape(wait_text(ahead, waiting, per_turn))}</div>'
            f'<div class="se-viz-queue-bar" role="progressbar" aria-valuemin="0" '
            f'aria-valuemax="100" aria-valuenow="{percent}" aria-label="Place in the queue" '
            f'style="height:0.5rem;border-radius:0.25rem;background:{BAR_TRACK};'
            f'margin:0.5rem 0 0.25rem">'
            f'<div style="width:{percent}%;height:100%;border-radius:0.25rem;'
            f'background:{BAR_FILL}"></div></div>'
            f'<small>{after}</small></div>')


class QueueNotice:
    """``on_wait(ahead, waiting)`` for `se_viz.runs.FairQueue`: draws the user's place in
    the line and a progress bar into ``spot`` while they wait behind others (nothing while
    they are next for under ``quiet`` seconds, so a short wait flashes no notice, and
    nothing new when nothing changed). Every call is also a Streamlit yield point: a session
    whose tab closed (Streamlit stops its script) or that reruns raises here, which takes
    its ticket out of the line before its work starts.
    The notice is one element, text and bar together: Streamlit's own progress bar is a
    component the browser fetches the first time one is drawn, and on a busy server that
    took longer than a whole wait, so waiters were told their place without the bar.
    `running` is what the spot shows while the turn runs: a spinner saying ``label``.
    While waiting there is no spinner: its animation, in every waiting tab, costs the
    browser far more than the notice does (and says less)."""

    def __init__(self, spot: Any, per_turn: Callable[[], float | None],
                 label: str | None = None, quiet: float = 0.3) -> None:
        self.spot, self.per_turn, self.label, self.quiet = spot, per_turn, label, quiet
        self.drawn: tuple[int, int] | None = None
        self.first: int | None = None
        self.since: float | None = None

    def __call__(self, ahead: int, waiting: int) -> bool:
        """Draw the notice if it changed; whether it drew."""
        self.since = self.since or time.monotonic()
        short = ahead == 0 and self.drawn is None and time.monotonic() - self.since < self.quiet
        if (ahead, waiting) == self.drawn or short:
            st.session_state.get(PROBE)  # reading session state checks for stop / rerun
            return False
        self.first = self.first or max(ahead, 1)
        self.spot.markdown(wait_html(ahead, waiting, self.per_turn(), self.first),
                           unsafe_allow_html=True)
        self.drawn = (ahead, waiting)
        return True

    @contextmanager
    def running(self) -> Iterator[None]:
        """While the turn runs: the notice gives way to a spinner (Streamlit shows it after
        half a second, so a quick turn shows none)."""
        if self.label is None:
            yield
            return
        with self.spot.container(), st.spinner(self.label):
            yield


@contextmanager
def queue_notice(label: str | None = None) -> Iterator[QueueNotice]:
    """A `QueueNotice` for the waits of one computation (``label``: its spinner's text);
    the notice is cleared afterwards."""
    spot = st.empty()
    try:
        yield QueueNotice(spot, results().queue.typical_run, label)
    finally:
        spot.empty()
