"""Tests for se_viz.engine.download (pooch underneath) against a real HTTP server on 127.0.0.1
(no other network)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from se_viz.engine import download as dl
from se_viz.errors import WeightsError

PAYLOAD = random.Random(1234).randbytes(3 * (1 << 20) + 12345)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
CHUNK = 256 * 1024
VD_NAME = dl.PRETRAINED["se_resnet50_vd"].filename


class _Handler(BaseHTTPRequestHandler):
    """Serves PAYLOAD in several broken and unbroken ways, by path."""

    hits: list[str]
    stop: threading.Event

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def _head(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _send(self, body: bytes) -> None:
        try:
            self.wfile.write(body)
        except ConnectionError:  # the client gave up early, on purpose
            self.close_connection = True

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.hits.append(self.path)
        if self.path in ("/full", f"/mirror/{VD_NAME}"):
            self._head(len(PAYLOAD))
            self._send(PAYLOAD)
        elif self.path == "/nolength":
            self._head(None)
            self._send(PAYLOAD)
        elif self.path == "/cut":
            self._head(len(PAYLOAD))
            self._send(PAYLOAD[: len(PAYLOAD) // 2])
            self.wfile.flush()
            self.close_connection = True  # handler returns -> socket closed half-way
        elif self.path == "/corrupt":
            body = bytearray(PAYLOAD)
            body[len(body) // 3] ^= 0xFF
            self._head(len(body))
            self._send(bytes(body))
        elif self.path in ("/flaky", "/busy") and self.hits.count(self.path) % 2:
            if self.path == "/busy":  # the first of each pair of requests: 503
                self.send_error(503, "Service Unavailable")
                return
            self._head(len(PAYLOAD))  # or a cut
            self._send(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
        elif self.path in ("/flaky", "/busy"):
            self._head(len(PAYLOAD))
            self._send(PAYLOAD)
        elif self.path == "/hang":
            self.stop.wait(10)  # accepts, never answers
        else:
            self.send_error(404, "Not Found")


@pytest.fixture(scope="module")
def server():
    """(base_url, hits) for a threaded HTTP server on an ephemeral 127.0.0.1 port."""
    handler = type("Handler", (_Handler,), {"hits": [], "stop": threading.Event()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.hits
    finally:
        handler.stop.set()
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """Cache in tmp_path; no proxy or mirror from the outer environment."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                "SE_VIZ_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("SE_VIZ_HOME", str(tmp_path / "cache"))


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- download


def test_complete_transfer_hash_and_progress(server, tmp_path):
    base, _ = server
    calls: list[tuple[int, int | None]] = []
    dest = tmp_path / "w.bin"
    out = dl.download(f"{base}/full", dest, expected_size=len(PAYLOAD), expected_sha256=PAYLOAD_SHA,
                      progress=lambda d, t: calls.append((d, t)), chunk_size=CHUNK)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert dl.sha256_file(dest) == PAYLOAD_SHA
    assert len(calls) >= len(PAYLOAD) // CHUNK
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert _listing(tmp_path) == ["w.bin"]


def test_no_content_length_still_works(server, tmp_path):
    base, _ = server
    calls: list[tuple[int, int | None]] = []
    dest = dl.download(f"{base}/nolength", tmp_path / "w.bin",
                       progress=lambda d, t: calls.append((d, t)))
    assert dest.read_bytes() == PAYLOAD
    assert calls[-1] == (len(PAYLOAD), None)


@pytest.mark.parametrize("path, kwargs, words", [
    ("/cut", {}, "incomplete"),
    ("/corrupt", {"expected_sha256": PAYLOAD_SHA}, "sha256 mismatch"),
    ("/full", {"expected_size": len(PAYLOAD) + 1}, "expected"),
    ("/nolength", {"expected_size": len(PAYLOAD) - 1}, "more than"),
    ("/nolength", {"expected_size": len(PAYLOAD) + 1}, "incomplete"),
    ("/missing", {}, "404"),
])
def test_failures_leave_nothing(server, tmp_path, path, kwargs, words):
    base, _ = server
    folder = tmp_path / "dl"
    dest = folder / VD_NAME
    with pytest.raises(WeightsError) as info:
        dl.download(f"{base}{path}", dest, chunk_size=CHUNK, **kwargs)
    msg = str(info.value)
    assert words in msg
    assert f"{base}{path}" in msg and str(dest) in msg and "--weights" in msg
    assert _listing(folder) == []  # no dest, no .part


@pytest.mark.parametrize("path", ["/flaky", "/busy"])
def test_a_cut_or_a_5xx_is_tried_again(server, tmp_path, path):
    base, hits = server
    calls: list[tuple[int, int | None]] = []
    before = hits.count(path)
    dest = dl.download(f"{base}{path}", tmp_path / "w.bin", expected_sha256=PAYLOAD_SHA,
                       progress=lambda d, t: calls.append((d, t)), chunk_size=CHUNK)
    assert dest.read_bytes() == PAYLOAD and hits.count(path) == before + 2
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert _listing(tmp_path) == ["w.bin"]


def test_a_cut_every_time_gives_up_after_the_retries(server, tmp_path):
    base, hits = server
    cut, missing = hits.count("/cut"), hits.count("/missing")
    with pytest.raises(WeightsError, match="incomplete"):
        dl.download(f"{base}/cut", tmp_path / "w.bin", retries=2)
    assert hits.count("/cut") == cut + 3
    with pytest.raises(WeightsError, match="404"):  # a 4xx is final
        dl.download(f"{base}/missing", tmp_path / "w.bin", retries=2)
    assert hits.count("/missing") == missing + 1 and _listing(tmp_path) == []


def test_hanging_server_times_out(server, tmp_path):
    base, _ = server
    start = time.monotonic()
    with pytest.raises(WeightsError, match="timed out"):
        dl.download(f"{base}/hang", tmp_path / "w.bin", timeout=1)
    assert time.monotonic() - start < 3
    assert _listing(tmp_path) == []


def test_connection_refused_is_fast(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/w.bin"
    dest = tmp_path / VD_NAME
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        dl.download(url, dest, timeout=5)
    assert time.monotonic() - start < 2
    msg = str(info.value)
    assert url in msg and str(dest) in msg and "offline" in msg
    assert _listing(tmp_path) == []


def test_unresolvable_and_slow_dns_fail_fast(monkeypatch, tmp_path):
    def gaierror(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", gaierror)
    with pytest.raises(WeightsError, match="could not resolve"):
        dl.download("https://weights.example.invalid/w.bin", tmp_path / "w.bin")

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: time.sleep(3))
    start = time.monotonic()
    with pytest.raises(WeightsError, match="within"):
        dl.download("https://weights.example.invalid/w.bin", tmp_path / "w.bin", timeout=0.3)
    assert time.monotonic() - start < 1.5
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/w.bin", "file:///etc/passwd", "not a url"])
def test_other_schemes_refused(tmp_path, url):
    with pytest.raises(WeightsError, match="only http"):
        dl.download(url, tmp_path / "sub" / "w.bin")
    assert _listing(tmp_path) == []


def test_failed_redownload_keeps_good_dest(server, tmp_path):
    base, _ = server
    dest = tmp_path / VD_NAME
    dest.write_bytes(b"good old weights")
    for path in ("/cut", "/missing"):
        with pytest.raises(WeightsError):
            dl.download(f"{base}{path}", dest)
    assert dest.read_bytes() == b"good old weights"
    assert _listing(tmp_path) == [VD_NAME]


def test_keyboard_interrupt_cleans_up_and_propagates(server, tmp_path):
    base, _ = server

    def interrupt(done: int, total: int | None) -> None:
        if done > CHUNK:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dl.download(f"{base}/full", tmp_path / "w.bin", progress=interrupt, chunk_size=CHUNK)
    assert _listing(tmp_path) == []


# ----------------------------------------------------------------------------- cache and fetch


def test_cache_dir_and_paths(monkeypatch, tmp_path):
    assert dl.cache_dir() == tmp_path / "cache"
    assert not dl.cache_dir().exists()  # not created by reading it
    assert dl.expected_path("se_resnet50") == tmp_path / "cache" / "seresnet50.ra2_in1k.safetensors"
    monkeypatch.delenv("SE_VIZ_HOME")
    assert dl.cache_dir() == Path.home() / ".cache" / "se_viz"


def test_pretrained_entries():
    vd, timm = dl.PRETRAINED["se_resnet50_vd"], dl.PRETRAINED["se_resnet50"]
    assert (vd.layout, timm.layout) == ("paddleclas", "timm")
    assert vd.url.endswith("/SE_ResNet50_vd_pretrained.pdparams") and "79.52" in vd.description
    assert timm.url.startswith("https://huggingface.co/timm/seresnet50.ra2_in1k/")
    assert "80.26" in timm.description


def test_unknown_arch_lists_known_ones():
    for call in (dl.fetch, dl.expected_path, dl.cached_path):
        with pytest.raises(WeightsError, match="se_resnet50_vd"):
            call("resnet18")


def test_fetch_downloads_once(server):
    base, hits = server
    before = hits.count("/full")
    path = dl.fetch("se_resnet50_vd", url=f"{base}/full", timeout=5)
    assert path == dl.expected_path("se_resnet50_vd") and path.read_bytes() == PAYLOAD
    assert dl.cached_path("se_resnet50_vd") == path
    assert dl.fetch("se_resnet50_vd", url=f"{base}/full") == path
    assert hits.count("/full") == before + 1
    assert _listing(dl.cache_dir()) == [VD_NAME]


def test_fetch_honours_mirror(server, monkeypatch):
    base, hits = server
    monkeypatch.setenv("SE_VIZ_MIRROR", f"{base}/mirror/")
    assert dl.fetch("se_resnet50_vd").read_bytes() == PAYLOAD
    assert f"/mirror/{VD_NAME}" in hits
    assert dl.describe_cache()[0]["url"] == f"{base}/mirror/{VD_NAME}"


def test_fetch_verifies_known_size_and_hash(server, monkeypatch):
    base, _ = server
    spec = dl.PRETRAINED["se_resnet50_vd"]
    wrong = dataclasses.replace(spec, size=len(PAYLOAD), sha256="0" * 64)
    monkeypatch.setitem(dl.PRETRAINED, "se_resnet50_vd", wrong)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        dl.fetch("se_resnet50_vd", url=f"{base}/full")
    assert _listing(dl.cache_dir()) == []
    right = dataclasses.replace(spec, size=len(PAYLOAD), sha256=PAYLOAD_SHA)
    monkeypatch.setitem(dl.PRETRAINED, "se_resnet50_vd", right)
    assert dl.fetch("se_resnet50_vd", url=f"{base}/full").read_bytes() == PAYLOAD


def test_cached_path_ignores_partials_and_wrong_size(monkeypatch):
    folder = dl.cache_dir()
    folder.mkdir(parents=True)
    (folder / f".{VD_NAME}.abc123.part").write_bytes(b"half")
    assert dl.cached_path("se_resnet50_vd") is None
    dl.expected_path("se_resnet50_vd").write_bytes(b"")
    assert dl.cached_path("se_resnet50_vd") is None
    dl.expected_path("se_resnet50_vd").write_bytes(b"data")
    assert dl.cached_path("se_resnet50_vd") == dl.expected_path("se_resnet50_vd")
    spec = dataclasses.replace(dl.PRETRAINED["se_resnet50_vd"], size=999)
    monkeypatch.setitem(dl.PRETRAINED, "se_resnet50_vd", spec)
    assert dl.cached_path("se_resnet50_vd") is None


def test_cleanup_partials(tmp_path):
    assert dl.cleanup_partials() == 0  # missing cache folder is fine
    folder = tmp_path / "c"
    folder.mkdir()
    for name in (f".{VD_NAME}.x1.part", ".other.y2.part", "keep.pdparams"):
        (folder / name).write_bytes(b"x")
    old = time.time() - 3600
    os.utime(folder / ".other.y2.part", (old, old))
    assert dl.cleanup_partials(folder, older_than=60) == 1  # a fresh one may be in progress
    assert dl.cleanup_partials(folder) == 1
    assert _listing(folder) == ["keep.pdparams"]


def test_cleanup_partials_removes_staging_folders_of_dead_writers(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    folder = tmp_path / "c"
    gone = folder / f".{VD_NAME}.{dead}.abcd1234.part"
    mine = folder / f".{VD_NAME}.{os.getpid()}.efgh5678.part"
    for d in (gone, mine):
        d.mkdir(parents=True)
        (d / "tmpXYZ").write_bytes(b"half")
    assert dl.cleanup_partials(folder, older_than=60) == 1  # ours may still be in progress
    assert _listing(folder) == [mine.name]


def test_fetch_sweeps_stale_partials(server):
    base, _ = server
    folder = dl.cache_dir()
    folder.mkdir(parents=True)
    stale = folder / f".{VD_NAME}.killed.part"
    stale.write_bytes(b"half")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    dl.fetch("se_resnet50_vd", url=f"{base}/full")
    assert _listing(folder) == [VD_NAME]


def test_install_file(tmp_path):
    src = tmp_path / "downloads" / "my.pdparams"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD[:1000])
    dest = dl.install_file("se_resnet50_vd", src)
    assert dest == dl.expected_path("se_resnet50_vd") and dest.read_bytes() == PAYLOAD[:1000]
    assert src.exists() and _listing(dl.cache_dir()) == [VD_NAME]
    assert dl.install_file("se_resnet50_vd", dest) == dest  # installing onto itself is a no-op
    info = {row["arch"]: row for row in dl.describe_cache()}
    assert info["se_resnet50_vd"]["present"] and info["se_resnet50_vd"]["size"] == 1000
    assert not info["se_resnet50"]["present"] and info["se_resnet50"]["size"] is None


def test_install_file_refuses_bad_input(tmp_path, monkeypatch):
    with pytest.raises(WeightsError, match="does not exist"):
        dl.install_file("se_resnet50_vd", tmp_path / "nope.pdparams")
    empty = tmp_path / "empty.pdparams"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        dl.install_file("se_resnet50_vd", empty)
    src = tmp_path / "w.pdparams"
    src.write_bytes(b"not the real file")
    spec = dataclasses.replace(dl.PRETRAINED["se_resnet50_vd"], sha256=PAYLOAD_SHA)
    monkeypatch.setitem(dl.PRETRAINED, "se_resnet50_vd", spec)
    with pytest.raises(WeightsError, match="sha256 mismatch"):
        dl.install_file("se_resnet50_vd", src)
    assert _listing(dl.cache_dir()) == []
