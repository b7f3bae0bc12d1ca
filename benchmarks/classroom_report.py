"""What benchmarks/classroom.py measures and reports: the server's and the client side's CPU
and memory (sampled), the server log's queue turns and page runs, and the per-session
numbers summed up (p50 / p95 / max, where the time went) and printed."""

from __future__ import annotations

import os
import re
import statistics
import threading
import time

SERVED = re.compile(r"queue: served ticket (\d+) \[(\w+)\] waited ([\d.]+) s, ran ([\d.]+) s, "
                    r"told (\d+)")
LEFT = re.compile(r"queue: ticket (\d+) \[(\w+)\] left after ([\d.]+) s")
SCRIPT = re.compile(r"page script ran in ([\d.]+) ms \((.*?)\)")


class Sampler(threading.Thread):
    """Samples the server's RSS and CPU, and the client side's CPU (Chromium, the Playwright
    driver and this process), every ``every`` seconds until stopped; `mark` starts the
    measured window."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        import psutil

        super().__init__(daemon=True)
        self.proc, self.every = psutil.Process(pid), every
        self.peak_rss = 0
        self.cpu: list[float] = []
        self.browser: dict[int, float] = {}  # pid -> CPU seconds last seen
        self.names: dict[int, str] = {}
        self._at_mark: dict[int, float] = {}
        self._done = threading.Event()
        self.proc.cpu_percent(None)
        self._mark = (self._server_cpu(), 0.0, time.monotonic())

    def _server_cpu(self) -> float:
        t = self.proc.cpu_times()
        return t.user + t.system

    def _sample_browser(self) -> None:
        import psutil

        me = psutil.Process()
        for child in [me] + me.children(recursive=True):
            try:
                if child.pid != self.proc.pid:  # the browser, its driver and this process
                    t = child.cpu_times()
                    self.browser[child.pid] = t.user + t.system
                    self.names.setdefault(child.pid, child.name())
            except psutil.Error:
                continue

    def browser_cpu(self) -> float:
        """CPU seconds the client side (Chromium, the Playwright driver, this process) has
        used (processes alive now or seen before)."""
        self._sample_browser()
        return sum(self.browser.values())

    def mark(self) -> None:
        self._sample_browser()
        self._at_mark = dict(self.browser)
        self.cpu.clear()
        self._mark = (self._server_cpu(), sum(self.browser.values()), time.monotonic())

    def run(self) -> None:
        while not self._done.wait(self.every):
            try:
                self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
                self.cpu.append(self.proc.cpu_percent(None))
                self._sample_browser()
            except Exception:  # the server ended: keep what was sampled
                return

    def stop(self) -> dict:
        self._done.set()
        self.join(5)
        server0, browser0, t0 = self._mark
        try:
            cpu_s = self._server_cpu() - server0
        except Exception:
            cpu_s = float("nan")
        by_name: dict[str, float] = {}
        for pid, used in self.browser.items():
            name = "chromium" if "chrom" in self.names[pid] else self.names[pid]
            by_name[name] = by_name.get(name, 0.0) + used - self._at_mark.get(pid, 0.0)
        return {"peak_rss_mib": self.peak_rss / 2**20, "cpu_s": cpu_s,
                "client_cpu_s_by_process": by_name,
                "browser_cpu_s": sum(self.browser.values()) - browser0,
                "wall_s": time.monotonic() - t0,
                "cpu_pct_mean": statistics.fmean(self.cpu) if self.cpu else 0.0,
                "cpu_pct_max": max(self.cpu, default=0.0)}


def served_order(log_text: str, digests: dict[str, str]) -> dict:
    """From the server log: photos in the order the queue served them (by ticket), tickets
    that left without running, and whether tickets were served in increasing order."""
    by_tag = {d[:12]: name for name, d in digests.items()}
    served = [(int(t), by_tag.get(tag, tag), float(w), float(r), int(n))
              for t, tag, w, r, n in SERVED.findall(log_text)]
    left = [(int(t), by_tag.get(tag, tag), float(w)) for t, tag, w in LEFT.findall(log_text)]
    tickets = [t for t, *_ in served]
    runs: dict[str, list[float]] = {}
    for ms, view in SCRIPT.findall(log_text):
        runs.setdefault(view, []).append(float(ms) / 1000)
    return {"served": served, "left": left, "fifo": tickets == sorted(tickets), "runs": runs}

def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, int(round(q * (len(values) - 1)))))]


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def spread(values: list[float]) -> dict:
    return {"p50": quantile(values, 0.5), "p95": quantile(values, 0.95),
            "max": max(values, default=None)}


def breakdown(done: list, order: dict) -> dict[str, tuple]:
    """Where the time went, (p50, max) seconds per stage: the browser's side (from the
    moment the file is handed to the page) and the server's (its log)."""
    def since_upload(field: str) -> list[float]:
        return [getattr(s, field) for s in done if getattr(s, field) is not None]

    parts = {"upload requested": since_upload("asked_s"),
             "upload done": since_upload("put_s"),
             "figure message received": since_upload("message_s"),
             "message -> drawn": [s.heatmap_s - s.message_s for s in done
                                  if s.heatmap_s is not None and s.message_s is not None],
             "server: queue wait": [w for _, _, w, _, _ in order["served"]],
             "server: decode + capture": [r for _, _, _, r, _ in order["served"]],
             "server: Block explorer page run": order["runs"].get("Block explorer", [])}
    return {k: (quantile(v, 0.5), max(v, default=None)) for k, v in parts.items()}


def summarise(sessions: list, order: dict, server: dict, args) -> dict:
    """Everything the run showed; ``sessions`` are classroom.Session records."""
    done = [s for s in sessions if not s.close]
    lat = [s.heatmap_s for s in done if s.heatmap_s is not None]
    upload_order = [s.photo for s in sorted(done, key=lambda s: s.uploaded_at)]
    served = [name for _, name, *_ in order["served"] if name in upload_order]
    inversions = sum(1 for i, a in enumerate(served) for b in served[i + 1:]
                     if upload_order.index(a) > upload_order.index(b))
    return {
        "sessions": len(sessions), "mode": args.mode, "width": args.width,
        "window_s": args.window, "seed": args.seed, "nice": args.nice,
        "heatmap_s": spread(lat),
        "explorer_s": spread([s.explorer_s for s in done if s.explorer_s is not None]),
        "breakdown_p50_max": breakdown(done, order),
        "got_heatmap": len(lat), "expected_heatmaps": len(done),
        "errors": [f"{s.photo}: {s.error}" for s in done if s.error],
        "exceptions_shown": sum(s.exceptions for s in done),
        "errors_shown": sum(s.errors_shown for s in done),
        "js_errors": sum(len(s.js_errors) for s in done),
        "own_result": sum(s.name_ok and s.top5_ok and not s.others_seen for s in done),
        "saw_queue_text": sum(bool(s.queue_texts) for s in done),
        "sent_queue_text": sum(s.queue_messages > 0 for s in done),
        "saw_progress": sum(bool(s.queue_bars) and None not in s.queue_bars for s in done),
        "served_fifo": order["fifo"], "served": len(order["served"]),
        # (ticket, photo, waited s, ran s, notices the server drew) in the order served
        "turns": order["served"],
        "told_by_server": sum(told > 0 for *_, told in order["served"]),
        "left_queue": order["left"], "inversions_vs_upload_order": inversions,
        "server": server, "cores": len(os.sched_getaffinity(0)),
        "load_avg_before": args.load_before, "load_avg_after": os.getloadavg(),
    }


def table(sessions: list, summary: dict) -> str:
    """One row per session (in upload order), then the summary lines."""
    rows = ["| # | photo | at s | upload->heatmap s | explorer s | own | queue seen | error |",
            "| ---: | --- | ---: | ---: | ---: | --- | --- | --- |"]
    for s in sorted(sessions, key=lambda s: s.offset):
        own = "closed" if s.close else (
            "yes" if s.name_ok and s.top5_ok and not s.others_seen else "NO")
        rows.append(f"| {s.index} | {s.photo} | {s.offset:.2f} | {fmt(s.heatmap_s)} | "
                    f"{fmt(s.explorer_s)} | {own} | {len(s.queue_texts)} | {s.error} |")
    h, e, srv, n = (summary["heatmap_s"], summary["explorer_s"], summary["server"],
                    summary["expected_heatmaps"])
    rows += [
        "",
        f"upload -> heatmap: p50 {fmt(h['p50'])} s, p95 {fmt(h['p95'])} s, max "
        f"{fmt(h['max'])} s ({summary['got_heatmap']}/{n} got it)",
        f"Block explorer after the heatmap: p50 {fmt(e['p50'])} s, p95 {fmt(e['p95'])} s, "
        f"max {fmt(e['max'])} s",
        f"own name + top-5 and no other photo: {summary['own_result']}/{n}; errors "
        f"{len(summary['errors'])}; exceptions shown {summary['exceptions_shown']}; error "
        f"boxes {summary['errors_shown']}; JS errors {summary['js_errors']}",
        f"queue notice drawn by the server for {summary['told_by_server']}, received by "
        f"{summary['sent_queue_text']}, drawn for "
        f"{summary['saw_queue_text']}, with its bar every time for {summary['saw_progress']}; "
        f"{summary['served']} turns served in ticket order: {summary['served_fifo']}; "
        f"inversions vs the browser's upload order {summary['inversions_vs_upload_order']}; "
        f"left the queue unrun: {summary['left_queue']}",
        "where the time went (p50 / max s): " + "; ".join(
            f"{k} {fmt(a)} / {fmt(b)}" for k, (a, b) in summary["breakdown_p50_max"].items()),
        f"server: peak RSS {srv['peak_rss_mib']:.0f} MiB; CPU {srv['cpu_s']:.1f} s in the "
        f"{srv['wall_s']:.1f} s from the first upload (mean {srv['cpu_pct_mean']:.0f} %, max "
        f"{srv['cpu_pct_max']:.0f} % of one core); client CPU (browser, driver, benchmark) "
        f"{srv['browser_cpu_s']:.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in srv["client_cpu_s_by_process"].items())
        + "); "
        f"load avg before {summary['load_avg_before'][0]:.2f}, after "
        f"{summary['load_avg_after'][0]:.2f} ({summary['cores']} cores, browser nice "
        f"{summary['nice']})",
    ]
    return "\n".join(rows)
