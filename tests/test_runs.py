"""se_viz.runs.FairQueue: first come, first served under contention, slots, what a waiter
is told, leaving the line (a closed tab, a rerun) and coming back, no deadlock."""

from __future__ import annotations

import random
import threading
import time

import pytest

from se_viz.runs import FairQueue, Turn, wait_text

TIMEOUT = 20  # seconds any one test may take before it counts as a deadlock


class Gone(Exception):
    """What a stopped Streamlit script raises inside on_wait, for these tests."""


def wait_until(predicate, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out: the queue did not move"
        time.sleep(0.002)


def start(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "a waiter never got its turn (deadlock)"


def hold(queue: FairQueue) -> tuple[threading.Event, threading.Thread]:
    """A thread that takes the one turn and keeps it until the returned event is set."""
    release, taken = threading.Event(), threading.Event()

    def holder() -> None:
        with queue.turn(tag="holder"):
            taken.set()
            release.wait(TIMEOUT)

    thread = start(holder)
    assert taken.wait(TIMEOUT)
    return release, thread


def test_waiters_are_served_in_the_order_they_arrived():
    queue = FairQueue(slots=1, poll=0.05)
    release, holder = hold(queue)
    order: list[int] = []

    def waiter(i: int) -> None:
        with queue.turn(tag=str(i)):
            order.append(i)

    threads = []
    arrival = random.Random(0).sample(range(12), 12)  # not the order the threads are named
    for n, i in enumerate(arrival):
        threads.append(start(waiter, i))
        wait_until(lambda: queue.snapshot()["waiting"] == n + 1)  # i is in the line now
    release.set()
    join_all(threads + [holder])
    assert order == arrival
    tickets = [t.ticket for t in queue.history]
    assert tickets == sorted(tickets) and len(tickets) == 13
    assert queue.snapshot() == {"waiting": 0, "serving": 0, "served": 13, "abandoned": 0}


def test_slots_bound_how_many_hold_a_turn_at_once():
    queue = FairQueue(slots=3, poll=0.05)
    inside, most = [0], [0]
    lock = threading.Lock()
    both = threading.Barrier(3, timeout=TIMEOUT)  # three can be inside together

    def worker(i: int) -> None:
        with queue.turn():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            if i < 3:
                both.wait()
            time.sleep(0.01)
            with lock:
                inside[0] -= 1

    join_all([start(worker, i) for i in range(12)])
    assert most[0] == 3
    assert queue.served == 12
    with pytest.raises(ValueError, match="slots"):
        FairQueue(slots=0)


def test_on_wait_hears_its_place_fall_to_zero_and_once_more_before_the_turn():
    queue = FairQueue(slots=1, poll=0.05)
    release, holder = hold(queue)
    told: dict[int, list[tuple[int, int]]] = {i: [] for i in range(4)}
    ran: list[int] = []

    def waiter(i: int) -> None:
        with queue.turn(lambda ahead, waiting: told[i].append((ahead, waiting))):
            told[i].append(("turn", None))
            ran.append(i)
            time.sleep(0.02)

    threads = []
    for i in range(4):
        threads.append(start(waiter, i))
        wait_until(lambda: bool(told[i]))  # told at once, on arrival
        assert told[i][0] == (i, i + 1)  # i others ahead of it, i + 1 waiting
    release.set()
    join_all(threads + [holder])
    assert ran == [0, 1, 2, 3]
    for i in range(4):
        places = [ahead for ahead, _ in told[i][:-1]]
        assert places == sorted(places, reverse=True), told[i]  # never moves back
        assert places[-1] == 0 and told[i][-1] == ("turn", None)
        assert told[i][-2][0] == 0  # asked right before its turn started


def test_on_wait_is_called_at_least_every_poll_while_nothing_changes():
    queue = FairQueue(slots=1, poll=0.05)
    release, holder = hold(queue)
    calls: list[float] = []

    def waiter() -> None:
        with queue.turn(lambda *_: calls.append(time.monotonic())):
            pass

    thread = start(waiter)
    time.sleep(0.6)
    release.set()
    join_all([thread, holder])
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert len(calls) >= 6 and max(gaps[:-1]) < 0.5, gaps  # a heartbeat, not only changes


def test_a_turn_counts_the_notices_its_on_wait_drew_and_logs_them(caplog):
    """on_wait returns whether it showed something: Turn.told and the log line count those
    calls only (what a load test compares with what each page received)."""
    queue = FairQueue(slots=1, poll=0.02)
    release, holder = hold(queue)
    calls: list[int] = []

    def on_wait(ahead: int, waiting: int) -> bool:
        calls.append(ahead)
        return len(calls) in (1, 3)  # drew twice, whatever the number of calls

    def waiter() -> None:
        with queue.turn(on_wait, tag="told"):
            pass

    with caplog.at_level("INFO", logger="se_viz.runs"):
        thread = start(waiter)
        wait_until(lambda: len(calls) >= 5)
        release.set()
        join_all([thread, holder])
    turn = next(t for t in queue.history if t.tag == "told")
    assert turn.told == 2 and len(calls) >= 5
    assert any("[told] waited" in r.message and "told 2;" in r.message for r in caplog.records)
    assert next(t for t in queue.history if t.tag == "holder").told == 0  # no on_wait at all


def test_an_exception_in_on_wait_takes_the_ticket_out_and_lets_the_next_in():
    queue = FairQueue(slots=1, poll=0.05)
    release, holder = hold(queue)
    leave = threading.Event()
    ran: list[str] = []
    errors: list[BaseException] = []

    def gone_when_asked(ahead: int, waiting: int) -> None:
        if leave.is_set():
            raise Gone("the tab was closed")

    def leaver() -> None:
        try:
            with queue.turn(gone_when_asked, tag="closed"):
                ran.append("closed")  # must never run
        except Gone as exc:
            errors.append(exc)

    def stayer() -> None:
        with queue.turn(lambda *_: None, tag="open"):
            ran.append("open")

    first = start(leaver)
    wait_until(lambda: queue.snapshot()["waiting"] == 1)
    second = start(stayer)
    wait_until(lambda: queue.snapshot()["waiting"] == 2)
    leave.set()  # noticed at the next heartbeat, while the holder still runs
    wait_until(lambda: queue.snapshot()["waiting"] == 1)
    release.set()
    join_all([first, second, holder])
    assert ran == ["open"] and len(errors) == 1
    assert queue.snapshot() == {"waiting": 0, "serving": 0, "served": 2, "abandoned": 1}
    left = [t for t in queue.history if t.tag == "closed"]
    assert left == [Turn(left[0].ticket, "closed", left[0].waited, None)]


def test_a_caller_gone_just_before_its_turn_never_runs():
    """The last call before the turn starts is the one that notices (no heartbeat yet)."""
    queue = FairQueue(slots=1, poll=10.0)  # no heartbeat within this test
    release, holder = hold(queue)
    calls: list[int] = []
    ran: list[str] = []

    def on_wait(ahead: int, waiting: int) -> None:
        calls.append(ahead)
        if len(calls) > 1:  # the first call is on arrival; the second, before the turn
            raise Gone()

    def waiter() -> None:
        try:
            with queue.turn(on_wait):
                ran.append("x")
        except Gone:
            pass

    thread = start(waiter)
    wait_until(lambda: calls == [0])
    release.set()
    join_all([thread, holder])
    assert calls == [0, 0] and ran == []
    assert queue.snapshot()["abandoned"] == 1


def test_a_rerun_with_the_same_key_keeps_its_place():
    queue = FairQueue(slots=1, poll=0.05, keep=30)
    release, holder = hold(queue)
    order: list[str] = []
    rerun = threading.Event()

    def first_run(ahead: int, waiting: int) -> None:
        if rerun.is_set():
            raise Gone("rerun")

    def session_a() -> None:
        try:
            with queue.turn(first_run, key=("a",)):
                order.append("a, first run")
        except Gone:
            with queue.turn(lambda *_: None, key=("a",)):  # the rerun asks again
                order.append("a")

    def session_b() -> None:
        with queue.turn(lambda *_: None, key=("b",)):
            order.append("b")

    a = start(session_a)
    wait_until(lambda: queue.snapshot()["waiting"] == 1)
    b = start(session_b)
    wait_until(lambda: queue.snapshot()["waiting"] == 2)
    rerun.set()
    wait_until(lambda: queue.abandoned == 1 and queue.snapshot()["waiting"] == 2)
    release.set()
    join_all([a, b, holder])
    assert order == ["a", "b"]  # a came first and, back from its rerun, is still first
    tickets = {t.tag or "holder": t.ticket for t in queue.history if t.ran is not None}
    assert len(set(tickets.values())) == len(tickets)


def test_many_waiters_leaving_at_random_never_deadlock():
    queue = FairQueue(slots=2, poll=0.01)
    rng = random.Random(7)
    plans = [rng.random() < 0.3 for _ in range(40)]  # True: leaves while waiting
    ran: list[int] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        seen = [0]

        def on_wait(ahead: int, waiting: int) -> None:
            seen[0] += 1
            if plans[i] and seen[0] > 1:
                raise Gone()
        try:
            with queue.turn(on_wait, key=i, tag=str(i)):
                time.sleep(0.002)
                with lock:
                    ran.append(i)
        except Gone:
            pass

    join_all([start(worker, i) for i in range(40)])
    snap = queue.snapshot()
    assert snap["waiting"] == 0 and snap["serving"] == 0
    assert snap["served"] + snap["abandoned"] == 40 and snap["served"] == len(ran)
    assert set(range(40)) - set(ran) <= {i for i in range(40) if plans[i]}  # stayers ran


def test_an_error_in_the_turn_gives_it_back():
    queue = FairQueue(slots=1)
    with pytest.raises(RuntimeError, match="boom"):
        with queue.turn(tag="fails"):
            raise RuntimeError("boom")
    with queue.turn():  # not stuck
        pass
    assert queue.snapshot() == {"waiting": 0, "serving": 0, "served": 2, "abandoned": 0}
    assert queue.typical_run() is not None and queue.typical_run() < 1.0


def test_what_a_waiting_user_is_told():
    assert "next" in wait_text(0, 3)
    assert "Queued: 4 image(s)" in wait_text(4, 6) and "(6 waiting)" in wait_text(4, 6)
    assert "About 2 s to go" in wait_text(3, 5, per_turn=0.5)
    assert "About 1 s to go" in wait_text(0, 1, per_turn=0.05)  # never "0 s"


def test_results_compute_a_miss_once_in_the_queue_and_a_hit_without_it(tiny_vd):
    from se_viz.runs import Photo, Results

    queue = FairQueue(slots=1, poll=0.05)
    results = Results(64, queue)
    photo = Photo.of("noise.png", _photo_bytes(0))
    told: list[tuple] = []
    first = results.image(photo, tiny_vd, lambda *a: told.append(a))
    again = results.image(photo, tiny_vd, lambda *a: told.append(("hit",) + a))
    assert again is first
    assert told == [(0, 1)]  # asked once, on arrival, and the turn started at once
    assert [(t.tag, t.ticket) for t in queue.history] == [(photo.digest[:12], 0)]


def _photo_bytes(seed: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def _notice_parts(markup: str) -> tuple[str, int | None]:
    """The text and the bar's value (aria-valuenow) of a queue notice's HTML."""
    from html.parser import HTMLParser

    class Parts(HTMLParser):
        text, bar = "", None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if attrs.get("role") == "progressbar":
                self.bar = int(attrs["aria-valuenow"])

        def handle_data(self, data):
            self.text += data

    parts = Parts()
    parts.feed(markup)
    return parts.text, parts.bar


def test_the_queue_notice_is_its_text_and_a_bar_that_fills_as_the_place_moves_forward():
    from se_viz.app.common import wait_html

    seen = [_notice_parts(wait_html(ahead, 7, 0.5, first=5)) for ahead in range(5, -1, -1)]
    for (text, _), ahead in zip(seen, range(5, -1, -1)):
        assert wait_text(ahead, 7, 0.5) in text
        assert (f"{ahead} ahead of you" if ahead else "next") in text
    bars = [bar for _, bar in seen]
    assert bars == [round(100 * (5 - a + 1) / 7) for a in range(5, -1, -1)]  # 14 ... 86
    assert bars[0] > 0 and bars[-1] < 100 and bars == sorted(bars)
    # A place further back than the first one shown (it cannot happen in a FIFO) clamps.
    assert _notice_parts(wait_html(9, 9, None, first=5))[1] == bars[0]


def test_the_queue_notice_draws_as_one_html_block_in_the_app():
    from streamlit.testing.v1 import AppTest

    def page():
        import streamlit as st

        from se_viz.app.common import QueueNotice

        notice = QueueNotice(st.empty(), lambda: 0.5, quiet=0.0)
        notice(3, 4)
        notice(3, 4)  # nothing changed: nothing drawn again
        notice(2, 4)

    at = AppTest.from_function(page).run(timeout=30)
    assert not at.exception
    assert len(at.markdown) == 1 and at.markdown[0].allow_html  # the second replaced the first
    text, bar = _notice_parts(at.markdown[0].value)
    assert wait_text(2, 4, 0.5) in text and bar == round(100 * 2 / 5)
