"""The fair queue that serves many users in turn (`FairQueue`, one `Turn` per caller) and
what a waiting user is told (`wait_text`)."""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger("se_viz.runs")  # the name the logs and benchmarks look for


@dataclass(frozen=True)
class Turn:
    """One caller's turn through a `FairQueue`: its ticket (arrival number), tag, seconds
    waited, seconds run (None: it left the line without running) and how many times its
    ``on_wait`` said it showed the caller something (returned true)."""

    ticket: int
    tag: str
    waited: float
    ran: float | None
    told: int = 0


class FairQueue:
    """A first-come, first-served turnstile: at most ``slots`` holders at once, served in
    the order they arrived (a plain lock or semaphore wakes waiters in any order).

    ``with queue.turn(on_wait, key=..., tag=...):`` blocks until it is this caller's turn.
    ``on_wait(ahead, waiting)`` is called while it waits: at once, whenever its place
    changes, at least every ``poll`` seconds, and one last time right before the turn
    starts; it returns true when it showed the caller something (counted in `Turn.told`
    and the log line, so a load test can tell what the server drew from what a page
    received). An exception it raises (a Streamlit script that is stopped because its tab
    closed, or rerun) takes the ticket out of the line before any work starts. A caller
    that left so and comes back with the same ``key`` within ``keep`` seconds (the rerun
    of the same request) gets its old place back. The turn is given back when the block
    ends, also on errors. `history` keeps the last turns (for logs and benchmarks).
    """

    def __init__(self, slots: int = 1, poll: float = 0.25, keep: float = 30.0,
                 history: int = 256) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if poll <= 0 or keep < 0:
            raise ValueError(f"poll must be > 0 and keep >= 0, got {poll} and {keep}")
        self.slots, self.poll, self.keep = int(slots), float(poll), float(keep)
        self._cond = threading.Condition()
        self._line: list[int] = []  # tickets waiting, in arrival order (sorted)
        self._left: dict[Hashable, tuple[int, float]] = {}  # key -> (ticket, when it left)
        self._serving = 0
        self._next = 0
        self.served = self.abandoned = 0
        self.history: deque[Turn] = deque(maxlen=history)

    @contextmanager
    def turn(self, on_wait: Callable[[int, int], bool | None] | None = None,
             key: Hashable | None = None, tag: str = "") -> Iterator[int]:
        """Wait for a turn (see the class); yields the ticket."""
        arrived = time.monotonic()
        told = [0]
        with self._cond:
            ticket = self._ticket(key, arrived)
            bisect.insort(self._line, ticket)
        try:
            self._wait(ticket, on_wait, told)
        except BaseException:
            self._leave(ticket, key, tag, time.monotonic() - arrived, told[0])
            raise
        started = time.monotonic()
        try:
            yield ticket
        finally:
            turn = Turn(ticket, tag, started - arrived, time.monotonic() - started, told[0])
            with self._cond:
                self._serving -= 1
                self.served += 1
                self.history.append(turn)
                waiting = len(self._line)
                self._cond.notify_all()
            log.info("queue: served ticket %d [%s] waited %.2f s, ran %.2f s, told %d; "
                     "%d waiting", ticket, tag, turn.waited, turn.ran, turn.told, waiting)

    def _ticket(self, key: Hashable | None, now: float) -> int:
        """The caller's place: its old ticket if ``key`` left recently, else a new one
        (caller holds the lock)."""
        for old in [k for k, (_, when) in self._left.items() if now - when > self.keep]:
            del self._left[old]
        if key is not None and key in self._left:
            return self._left.pop(key)[0]
        self._next += 1
        return self._next - 1

    def _wait(self, ticket: int, on_wait: Callable[[int, int], bool | None] | None,
              told_count: list[int]) -> None:
        told, told_at = None, 0.0  # ((ahead, waiting), free) on_wait was last called with
        while True:
            with self._cond:
                ahead = self._line.index(ticket)
                state = (ahead, len(self._line))
                free = ahead < self.slots - self._serving
                if free and (on_wait is None or told == (state, True)):
                    self._line.remove(ticket)  # on_wait was asked since it became free
                    self._serving += 1
                    return
                recent = told is not None and told[0] == state and \
                    time.monotonic() - told_at < self.poll
                if on_wait is None or (recent and not free):
                    self._cond.wait(self.poll - (time.monotonic() - told_at) if recent
                                    else self.poll)
                    continue
            if on_wait(*state):  # outside the lock: it may draw or raise; then look again
                told_count[0] += 1
            told, told_at = (state, free), time.monotonic()

    def _leave(self, ticket: int, key: Hashable | None, tag: str, waited: float,
               told: int) -> None:
        with self._cond:
            self._line.remove(ticket)
            if key is not None:
                self._left[key] = (ticket, time.monotonic())
            self.abandoned += 1
            self.history.append(Turn(ticket, tag, waited, None, told))
            waiting = len(self._line)
            self._cond.notify_all()
        log.info("queue: ticket %d [%s] left after %.2f s without running, told %d; "
                 "%d waiting", ticket, tag, waited, told, waiting)

    def typical_run(self, last: int = 16) -> float | None:
        """Median seconds of the last ``last`` turns that ran (None before the first)."""
        with self._cond:
            ran = sorted([t.ran for t in self.history if t.ran is not None][-last:])
        return ran[len(ran) // 2] if ran else None

    def snapshot(self) -> Mapping[str, int]:
        """waiting, serving, served and abandoned counts (a status line, a benchmark)."""
        with self._cond:
            return {"waiting": len(self._line), "serving": self._serving,
                    "served": self.served, "abandoned": self.abandoned}


def wait_text(ahead: int, waiting: int, per_turn: float | None = None) -> str:
    """What a user waiting in the queue is told (``per_turn``: typical seconds per image)."""
    eta = f" About {max(1, round((ahead + 1) * per_turn))} s to go." if per_turn else ""
    if ahead == 0:
        return "Your image is next: it runs as soon as the one before it is done." + eta
    return (f"Queued: {ahead} image(s) of other users ahead of yours ({waiting} waiting), "
            "served in the order they arrived." + eta)
