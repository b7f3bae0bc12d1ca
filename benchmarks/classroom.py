"""A classroom at once: N real browser sessions upload N different photos within a window.

    python benchmarks/classroom.py                    # 30 sessions, random moments in 60 s
    python benchmarks/classroom.py --burst            # 30 sessions within 1 s
    python benchmarks/classroom.py --close-one        # one of them closes its tab mid-upload
    python benchmarks/classroom.py --n 8 --window 20 --width 8 --json out.json

Starts ``streamlit run app.py`` on 127.0.0.1 (the full SE-ResNet-50 unless --width says
otherwise; untrained seeded weights, an empty SE_VIZ_HOME, nothing from the network) and
drives N Chromium sessions (one browser process, one context each). All N load the page
first (the first script run builds the model and traces its fast graph, 2-3 s); the window
starts when every page shows its welcome text. Each session then, at its own seeded
moment in the window, uploads its own photo (made here from assets/*.jpg: crops, flips,
rotations, colour shifts), waits until the gate heatmap's block labels are drawn, checks
the page shows its photo's name and exact top-5 (computed here with se_viz and the same
seeded model) and no other session's photo, and opens the Block explorer.

Reported: per session upload -> heatmap seconds and Block explorer seconds, p50/p95/max,
errors, exceptions shown, the queue text and progress bar a waiting session saw, server
peak RSS and CPU (sampled with psutil), and the order the server served the photos in
(from its log, `se_viz.runs` lines), with where the time went: the upload's HTTP request,
the wait for the first large websocket message (the heatmap's figure), its drawing, and
the server's queue wait, decode + capture and page runs (its log, SE_VIZ_LOG_LEVEL=debug).
Browser and server share this machine's cores; ``--nice 19`` lowers the browser's
priority (and its scheduling group's), closer to a classroom where every student has their
own machine, but under load from other processes it then starves. Bounded: at most 64
sessions, every wait has a timeout, loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from classroom_report import Sampler, served_order, summarise, table  # noqa: E402
CHROMIUM = "/usr/bin/chromium"
CHROME_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run",
               "--disable-quic"]
MAX_SESSIONS = 64
HEATMAP = ".js-plotly-plot text"  # the heatmap's block tick labels, as tests/test_browser.py
# The Block explorer has drawn: its 4 charts (histogram, scatter, two map mosaics) visible.
EXPLORER_DRAWN = """() => [...document.querySelectorAll('.js-plotly-plot')]
    .filter(p => p.offsetParent !== null && p.querySelector('.main-svg')).length >= 4"""
# Records, in the page, every distinct queue notice with its bar's value (aria-valuenow,
# null when the notice came without its bar).
WATCH_QUEUE = """
window.__queue = {texts: []};
const look = () => {
  for (const el of document.querySelectorAll('.se-viz-queue')) {
    const t = el.textContent;
    const log = window.__queue.texts;
    const bar = el.querySelector('[role="progressbar"]');
    if ((t.includes('Queued:') || t.includes('Your image is next'))
        && (!log.length || log[log.length - 1].text !== t))
      log.push({t: Date.now(), text: t,
                bar: bar ? Number(bar.getAttribute('aria-valuenow')) : null});
  }
};
new MutationObserver(look).observe(document, {subtree: true, childList: true,
                                              characterData: true});
setInterval(look, 100);
"""


# ----------------------------------------------------------------------------- photos
def make_photos(n: int, seed: int, folder: Path, px: tuple[int, int] = (640, 4032)
                ) -> list[Path]:
    """N distinct JPEGs photo_00.jpg ... from assets/*.jpg: a random crop, flip, rotation,
    colour and brightness shift each, and a long side between ``px`` (a phone's photo is
    4032 pixels wide); seeded: different bytes, different results."""
    from PIL import Image, ImageEnhance, ImageOps

    sources = [Image.open(p).convert("RGB") for p in sorted((ROOT / "assets").glob("*.jpg"))]
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = sources[i % len(sources)]
        w, h = img.size
        cw, ch = int(w * rng.uniform(0.55, 0.95)), int(h * rng.uniform(0.55, 0.95))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        out = img.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            out = ImageOps.mirror(out)
        out = out.rotate(rng.choice((0, 90, 180, 270)) + rng.uniform(-12, 12), expand=True,
                         resample=Image.BILINEAR, fillcolor=tuple(rng.randint(0, 255)
                                                                  for _ in range(3)))
        out = ImageEnhance.Color(out).enhance(rng.uniform(0.4, 1.6))
        out = ImageEnhance.Brightness(out).enhance(rng.uniform(0.7, 1.3))
        scale = rng.uniform(*px) / max(out.size)
        out = out.resize((max(1, int(out.width * scale)), max(1, int(out.height * scale))))
        path = folder / f"photo_{i:02d}.jpg"
        out.save(path, "JPEG", quality=rng.randint(80, 95))
        paths.append(path)
    return paths


def expected_top5(paths: list[Path], width: int) -> dict[str, list[tuple[str, str]]]:
    """photo name -> the app's top-5 rows (label, f"{p:.1%}"), from the same seeded model and
    the same graph (with feature maps) as the app."""
    import se_viz
    from se_viz import labels

    model = se_viz.build_model("se_resnet50_vd", width=width)
    out = {}
    for path in paths:
        cap = se_viz.capture(model, [se_viz.load_image(path)], features=[b.name for b in model.info.blocks])
        idx, p = cap.top_k(5)
        out[path.name] = [(labels.label_for(i, 1000), f"{q:.1%}") for i, q in zip(idx[0], p[0])]
    return out


# ----------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(width: int, home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, SE_VIZ_HOME=str(home), SE_VIZ_LOG_LEVEL="debug")  # page run times
    env.pop("SE_VIZ_MIRROR", None)
    env.pop("SE_VIZ_WIDTH", None)
    if width != 64:
        env["SE_VIZ_WIDTH"] = str(width)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"streamlit exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return proc, url
        except OSError:
            time.sleep(0.3)
    stop_server(proc)
    raise SystemExit("streamlit did not become healthy in 120 s")


def stop_server(proc: subprocess.Popen) -> None:
    """Ctrl-C (a clean Streamlit shutdown), then terminate, then kill."""
    import signal

    for stop in (lambda: proc.send_signal(signal.SIGINT), proc.terminate, proc.kill):
        if proc.poll() is not None:
            return
        stop()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue


# ----------------------------------------------------------------------------- sessions
@dataclass
class Session:
    """What one browser session did and saw (times: seconds since the epoch / durations)."""

    index: int
    photo: str
    offset: float
    close: bool = False
    uploaded_at: float = 0.0
    asked_s: float | None = None  # upload -> the browser sent the file's HTTP request
    put_s: float | None = None  # upload -> the file's HTTP upload finished
    message_s: float | None = None  # upload -> the first large websocket message (figure)
    heatmap_s: float | None = None
    explorer_s: float | None = None
    name_ok: bool = False
    top5_ok: bool = False
    seen_top5: str = ""
    others_seen: list[str] = field(default_factory=list)
    exceptions: int = 0
    errors_shown: int = 0
    js_errors: list[str] = field(default_factory=list)
    queue_texts: list[str] = field(default_factory=list)
    queue_messages: int = 0  # websocket messages with a queue notice the page received
    queue_bars: list = field(default_factory=list)  # each notice's bar value (None: no bar)
    error: str = ""


async def open_page(browser, url: str, s: Session, timeout_ms: int):
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    await context.add_init_script(WATCH_QUEUE)
    page = await context.new_page()
    page.on("pageerror", lambda exc: s.js_errors.append(str(exc)[:200]))

    def on_frame(payload) -> None:  # the message with the heatmap's figure
        data = payload.encode() if isinstance(payload, str) else payload
        if b"Queued:" in data or b"Your image is next" in data:
            s.queue_messages += 1
        if s.uploaded_at and s.message_s is None and b"SE_2_1" in data \
                and b"heatmap" in data:
            s.message_s = time.time() - s.uploaded_at

    def on_request(request, field: str) -> None:
        if s.uploaded_at and getattr(s, field) is None and "upload_file" in request.url:
            setattr(s, field, time.time() - s.uploaded_at)

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    page.on("request", lambda r: on_request(r, "asked_s"))
    page.on("requestfinished", lambda r: on_request(r, "put_s"))
    await page.goto(url, timeout=timeout_ms)
    await page.get_by_text("Drop one or more photos").wait_for(timeout=timeout_ms)
    await page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=timeout_ms)
    return context, page


async def settle(sampler: "Sampler", quiet: float = 0.15, most: float = 120.0) -> float:
    """Wait until the browser has finished loading: under ``quiet`` of a core for 2 s in a
    row (or ``most`` seconds); returns the seconds waited."""
    start, calm = time.monotonic(), 0
    while calm < 2 and time.monotonic() - start < most:
        before = sampler.browser_cpu()
        await asyncio.sleep(1.0)
        calm = calm + 1 if sampler.browser_cpu() - before < quiet else 0
    return time.monotonic() - start


async def until(condition, seconds: float) -> bool:
    """Poll ``condition`` every 50 ms for up to ``seconds``; whether it came true."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def drive(page, context, s: Session, path: Path, start: float, expected: list,
                others: list[str], timeout_ms: int) -> None:
    """Upload at start + offset, wait for the heatmap, check what is shown, open the explorer."""
    await asyncio.sleep(max(0.0, start + s.offset - time.time()))
    uploader = page.locator('[data-testid="stSidebar"] input[type="file"]').first
    s.uploaded_at = time.time()
    await uploader.set_input_files(str(path))
    if s.close:  # leave once the server has the photo: while queued if it is told so
        await until(lambda: s.put_s is not None, timeout_ms / 1000)
        await until(lambda: s.queue_messages > 0, 3.0)
        s.error = "closed while queued" if s.queue_messages else "closed (was not queued)"
        await context.close()
        return
    await page.locator(HEATMAP, has_text="SE_2_1").first.wait_for(timeout=timeout_ms)
    s.heatmap_s = time.time() - s.uploaded_at
    await page.get_by_role("heading", name=s.photo, exact=True).wait_for(timeout=timeout_ms)
    s.name_ok = True
    s.seen_top5 = await page.locator('[data-testid="stTable"]').first.inner_text()
    s.top5_ok = all(label in s.seen_top5 and prob in s.seen_top5 for label, prob in expected)
    title = await page.locator(".js-plotly-plot").filter(has_text="SE_2_1").first.inner_text()
    s.name_ok = s.name_ok and s.photo in title
    main = await page.locator('[data-testid="stMain"]').inner_text()
    s.others_seen = [o for o in others if o in main]
    queue = await page.evaluate("window.__queue")
    s.queue_texts = [q["text"] for q in queue["texts"]]
    s.queue_bars = [q["bar"] for q in queue["texts"]]
    t = time.time()
    await page.get_by_role("tab", name="Block explorer").click()
    await page.get_by_text("Most amplified (top-k gates)").first.wait_for(timeout=timeout_ms)
    await page.wait_for_function(EXPLORER_DRAWN, timeout=timeout_ms)
    s.explorer_s = time.time() - t


def lower_browser_priority(nice: int) -> str:
    """Give the browser ``nice`` (and its whole scheduling group: Playwright starts Chromium
    in a session of its own, so on a kernel with autogroups its processes compete with
    the server's as one group whatever their own nice). Returns what was done."""
    import psutil

    done = set()
    for proc in psutil.Process().children(recursive=True):
        try:
            if "chrom" not in proc.name():
                continue
            proc.nice(max(proc.nice(), nice))
            group = Path(f"/proc/{proc.pid}/autogroup")
            if group.exists():
                group.write_text(str(nice))
                done.add(group.read_text().split()[0])
        except (psutil.Error, OSError):
            continue
    return f"nice {nice}, groups {sorted(done) or 'none'}"


async def run_sessions(url: str, paths: list[Path], expected: dict, offsets: list[float],
                       close: int | None, timeout_s: float, nice: int,
                       sampler: Sampler) -> list[Session]:
    from playwright.async_api import async_playwright

    sessions = [Session(i, p.name, offsets[i], close=i == close) for i, p in enumerate(paths)]
    names = [p.name for p in paths]
    ms = int(timeout_s * 1000)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROME_ARGS)
        try:
            if nice:
                lower_browser_priority(nice)
            opened = await asyncio.gather(*(open_page(browser, url, s, ms) for s in sessions))
            if nice:  # again, for the renderers of the pages
                print(f"browser: {lower_browser_priority(nice)}", file=sys.stderr, flush=True)
            calm = await settle(sampler)
            print(f"pages loaded; browser quiet after {calm:.0f} s", file=sys.stderr, flush=True)
            start = time.time() + 1.0
            sampler.mark()
            print(f"{len(opened)} pages ready; uploads start", file=sys.stderr, flush=True)

            async def one(s: Session, context, page) -> None:
                try:
                    await drive(page, context, s, paths[s.index], start, expected[s.photo],
                                [n for n in names if n != s.photo], ms)
                except Exception as exc:  # a timeout or a closed page: reported per session
                    s.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                if not s.close:
                    try:
                        s.exceptions = await page.locator('[data-testid="stException"]').count()
                        s.errors_shown = await page.locator(
                            '[data-testid="stAlertContentError"]').count()
                    except Exception as exc:
                        s.error = s.error or f"{type(exc).__name__}"

            await asyncio.wait_for(asyncio.gather(*(one(s, c, p) for s, (c, p)
                                                    in zip(sessions, opened))),
                                   timeout=timeout_s + max(offsets) + 120)
        finally:
            await browser.close()
    return sessions


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="browser sessions (at most 64)")
    ap.add_argument("--window", type=float, default=60.0, help="seconds the uploads spread over")
    ap.add_argument("--burst", action="store_true", help="every upload within --burst-s")
    ap.add_argument("--burst-s", type=float, default=1.0, help="the burst's window (s)")
    ap.add_argument("--close-one", action="store_true",
                    help="one session closes its tab right after uploading")
    ap.add_argument("--width", type=int, default=64, help="64: SE-ResNet-50; 8: narrow demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nice", type=int, default=0,
                    help="CPU niceness of the browser and its scheduling group (0-19)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per wait")
    ap.add_argument("--photos", type=Path, help="folder for the photos (default: temporary)")
    ap.add_argument("--px", type=int, nargs=2, default=(640, 4032), metavar=("MIN", "MAX"),
                    help="range of the photos' long side in pixels")
    ap.add_argument("--json", type=Path, help="write the summary and sessions here")
    args = ap.parse_args(argv)
    if not 1 <= args.n <= MAX_SESSIONS:
        ap.error(f"--n must be between 1 and {MAX_SESSIONS}")
    args.window = args.burst_s if args.burst else args.window
    args.mode = ("burst" if args.burst else "window") + ("+close-one" if args.close_one else "")
    args.load_before = os.getloadavg()
    from se_viz.images import image_digest

    work = Path(tempfile.mkdtemp(prefix="se_viz_classroom_"))
    paths = make_photos(args.n, args.seed, args.photos or work / "photos", tuple(args.px))
    digests = {p.name: image_digest(p.read_bytes()) for p in paths}
    if len(set(digests.values())) != len(paths):
        raise SystemExit("the generated photos are not all different")
    expected = expected_top5(paths, args.width)
    rng = random.Random(args.seed + 1)
    offsets = [rng.uniform(0, args.window) for _ in paths]
    close = sorted(range(args.n), key=offsets.__getitem__)[args.n // 2] if args.close_one \
        else None
    log = work / "server.log"
    proc, url = start_server(args.width, work / "home", log)
    print(f"server pid {proc.pid} at {url}, log {log}", file=sys.stderr, flush=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        os.nice(args.nice)  # this process and the Playwright driver; not the server
        sessions = asyncio.run(run_sessions(url, paths, expected, offsets, close, args.timeout,
                                            args.nice, sampler))
        time.sleep(2.0)  # let the server log what the closed session left
    finally:
        try:
            server = sampler.stop()
        finally:
            stop_server(proc)
    log_text = log.read_text(errors="replace")
    order = served_order(log_text, digests)
    summary = summarise(sessions, order, server, args)
    summary["tracebacks_in_log"] = log_text.count("Traceback")
    summary["server_log"] = str(log)
    print(table(sessions, summary))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "expected": expected,
                                         "photos": [str(p) for p in paths],
                                         "sessions": [asdict(s) for s in sessions]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
