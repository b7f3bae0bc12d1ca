"""timm's weights through huggingface_hub: a prepared Hugging Face cache folder (as timm leaves
it) and a local HTTP server standing in for the hub endpoint (HF_ENDPOINT); never the internet.
"""

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
from urllib.parse import urlsplit

import huggingface_hub.constants  # now, while HF_HUB_OFFLINE is unset: it is read once
import numpy as np
import pytest

from se_viz.engine import download as dl
from se_viz.errors import WeightsError

from .conftest import TINY, batch, make_tiny

SPEC = dl.PRETRAINED["se_resnet50"]
REPO, FILE = SPEC.hf_repo, SPEC.hf_filename
COMMIT = "0123456789abcdef0123456789abcdef01234567"
PAYLOAD = random.Random(7).randbytes(2 * (1 << 20) + 4321)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
RESOLVE = f"/{REPO}/resolve/{SPEC.hf_revision or 'main'}/{FILE}"


class _Hub(BaseHTTPRequestHandler):
    """The two requests hf_hub_download makes: HEAD (metadata) and GET (bytes, with Range)."""

    state: dict

    def log_message(self, *args: object) -> None:
        pass

    def _meta(self, length: int) -> None:
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{PAYLOAD_SHA}"')
        self.send_header("X-Linked-Etag", f'"{PAYLOAD_SHA}"')
        self.send_header("X-Linked-Size", str(len(PAYLOAD)))
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")

    def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
        self.state["hits"].append(("HEAD", self.path))
        if self.state["mode"] == "hang":
            self.state["stop"].wait(10)
            return
        if self.path != RESOLVE:
            self.send_error(404, "Entry not found")
            return
        self.send_response(200)
        self._meta(len(PAYLOAD))
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        self.state["hits"].append(("GET", self.path))
        if self.path != RESOLVE:
            self.send_error(404, "Entry not found")
            return
        body, mode = self.state["body"], self.state["mode"]
        start = int(self.headers.get("Range", "bytes=0-").split("=")[1].split("-")[0] or 0)
        self.send_response(206 if start else 200)
        self._meta(len(body) - start)
        self.end_headers()
        try:
            if mode == "cut":
                self.wfile.write(body[start:start + (len(body) - start) // 2])
                self.wfile.flush()
                self.close_connection = True
            else:
                self.wfile.write(body[start:])
        except ConnectionError:
            self.close_connection = True


@pytest.fixture()
def server(monkeypatch):
    """A hub on 127.0.0.1 as HF_ENDPOINT; ``state`` picks how it answers."""
    state = {"hits": [], "mode": "ok", "body": PAYLOAD, "stop": threading.Event()}
    handler = type("Handler", (_Hub,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    try:
        yield state
    finally:
        state["stop"].set()
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _repo() -> Path:
    return dl.hf_repo_folder(SPEC)


def _blob_files() -> list[str]:
    blobs = _repo() / "blobs"
    return sorted(p.name for p in blobs.iterdir()) if blobs.exists() else []


def place_in_hf_cache(data: bytes, cache: Path, commit: str = COMMIT) -> Path:
    """Lay a file out as huggingface_hub (and so timm) leaves it: blobs/<sha256>,
    snapshots/<commit>/model.safetensors -> ../../blobs/<sha256>, refs/main = commit."""
    repo = cache / ("models--" + REPO.replace("/", "--"))
    blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    pointer = repo / "snapshots" / commit / FILE
    pointer.parent.mkdir(parents=True)
    pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return pointer


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory) -> tuple[Path, bytes]:
    """A timm-layout safetensors of the tiny canonical model (width 8, 10 classes)."""
    from se_viz.engine.weights import export_state, save_safetensors, to_timm

    path = tmp_path_factory.mktemp("timm") / "model.safetensors"
    save_safetensors(to_timm(export_state(make_tiny("se_resnet50", seed=3))), path)
    return path, path.read_bytes()


# --------------------------------------------------------------------------- the HF cache


@pytest.mark.parametrize("how", ["HF_HUB_CACHE", "HF_HOME"])
def test_file_in_hf_cache_is_found_offline_and_gives_the_same_logits(
        timm_file, tmp_path, monkeypatch, how):
    from se_viz.engine.build import build_model
    from se_viz.engine.capture import capture

    path, data = timm_file
    if how == "HF_HUB_CACHE":
        cache = tmp_path / "elsewhere" / "hub"
        monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    else:
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        cache = tmp_path / "hf_home" / "hub"
    pointer = place_in_hf_cache(data, cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")

    assert dl.hf_cache_dir() == cache
    assert dl.cached_path("se_resnet50") == pointer
    from_hub = build_model("se_resnet50", "pretrained", **TINY)
    by_path = build_model("se_resnet50", str(path), **TINY)
    assert Path(from_hub.info.weights) == pointer and from_hub.info.pretrained
    assert from_hub.info.layout == by_path.info.layout == "timm"
    assert from_hub.info.sha256 == by_path.info.sha256
    x = batch(2, seed=1)
    a = capture(from_hub, x, engine="eager")
    b = capture(by_path, x, engine="eager")
    np.testing.assert_array_equal(a.logits, b.logits)
    assert not np.allclose(a.logits, capture(make_tiny("se_resnet50"), x, engine="eager").logits)
    assert not list(dl.cache_dir().glob("*"))  # nothing copied into se_viz's cache


def test_cached_file_is_used_without_a_request(server, timm_file, monkeypatch):
    pointer = place_in_hf_cache(timm_file[1], dl.hf_cache_dir())
    assert dl.fetch("se_resnet50") == pointer
    assert server["hits"] == []
    row = {r["arch"]: r for r in dl.describe_cache()}["se_resnet50"]
    assert row["present"] and row["path"] == str(pointer) and row["size"] == len(timm_file[1])


def test_installed_file_comes_before_the_hf_cache(timm_file, tmp_path):
    place_in_hf_cache(timm_file[1], dl.hf_cache_dir())
    installed = dl.install_file("se_resnet50", timm_file[0])
    assert installed == dl.expected_path("se_resnet50")
    assert dl.cached_path("se_resnet50") == installed


def test_offline_without_the_file_fails_fast_and_says_where(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        dl.fetch("se_resnet50")
    assert time.monotonic() - start < 2
    msg = str(info.value)
    assert "HF_HUB_OFFLINE" in msg and str(dl.expected_path("se_resnet50")) in msg
    assert "--weights" in msg and "weights install FILE --arch se_resnet50" in msg
    assert f"hf download {REPO} {FILE}" in msg


# --------------------------------------------------------------------------- the mirror endpoint


def test_mirror_endpoint_downloads_into_the_hf_cache_with_progress(server):
    calls: list[tuple[int, int | None]] = []
    path = dl.fetch("se_resnet50", progress=lambda d, t: calls.append((d, t)))
    assert path == _repo() / "snapshots" / COMMIT / FILE
    assert path.read_bytes() == PAYLOAD and path.resolve().name == PAYLOAD_SHA
    assert (_repo() / "refs" / "main").read_text() == COMMIT
    assert [h[0] for h in server["hits"]] == ["HEAD", "HEAD", "GET"]  # se_viz's probe, hub's
    done = [d for d, _ in calls]
    assert done == sorted(done) and len(set(done)) == len(done)  # hub reads 10 MiB chunks
    assert calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert _blob_files() == [PAYLOAD_SHA]  # no .incomplete left
    assert dl.fetch("se_resnet50") == path and len(server["hits"]) == 3  # cached now
    assert dl.source_url("se_resnet50").endswith(RESOLVE)
    assert dl.destination_folder("se_resnet50") == _repo()
    assert dl.destination_folder("se_resnet50_vd") == dl.cache_dir()


def test_cli_fetch_shows_a_progress_bar(server, capsys):
    from se_viz.cli import main

    assert main(["weights", "fetch", "--arch", "se_resnet50"]) == 0
    out, err = capsys.readouterr()
    assert f"saved {_repo() / 'snapshots' / COMMIT / FILE}" in out
    assert "100%" in err and "2.00M" in err  # tqdm's bar, in bytes
    assert dl.cached_path("se_resnet50").read_bytes() == PAYLOAD


def test_se_viz_mirror_still_serves_the_timm_file(server, monkeypatch, tmp_path):
    """SE_VIZ_MIRROR is a plain folder of files (pooch, into se_viz's cache)."""
    from http.server import SimpleHTTPRequestHandler

    folder = tmp_path / "files"
    folder.mkdir()
    (folder / SPEC.filename).write_bytes(PAYLOAD)

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(folder), **k)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("SE_VIZ_MIRROR", f"http://127.0.0.1:{httpd.server_address[1]}/")
        path = dl.fetch("se_resnet50")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert path == dl.expected_path("se_resnet50") and path.read_bytes() == PAYLOAD
    assert server["hits"] == []


# --------------------------------------------------------------------------- guarantees


def test_cut_transfer_leaves_nothing(server):
    server["mode"] = "cut"
    with pytest.raises(WeightsError) as info:
        dl.fetch("se_resnet50")
    msg = str(info.value)
    assert str(dl.expected_path("se_resnet50")) in msg and "--weights" in msg
    assert dl.cached_path("se_resnet50") is None
    assert _blob_files() == [] and not list((_repo() / "snapshots").rglob(FILE))
    server["mode"] = "ok"
    assert dl.fetch("se_resnet50").read_bytes() == PAYLOAD  # the next run is clean


def test_corrupted_transfer_is_caught_and_removed(server):
    body = bytearray(PAYLOAD)
    body[len(body) // 3] ^= 0xFF  # same size: huggingface_hub alone would keep it
    server["body"] = bytes(body)
    with pytest.raises(WeightsError, match="sha256 mismatch") as info:
        dl.fetch("se_resnet50")
    assert str(dl.expected_path("se_resnet50")) in str(info.value)
    assert dl.cached_path("se_resnet50") is None
    assert _blob_files() == [] and not list((_repo() / "snapshots").rglob(FILE))


def test_unreachable_endpoint_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        dl.fetch("se_resnet50")
    assert time.monotonic() - start < 2
    msg = str(info.value)
    assert "offline" in msg and "refused" in msg and str(dl.expected_path("se_resnet50")) in msg
    assert not _repo().exists()


def test_hanging_endpoint_times_out(server):
    server["mode"] = "hang"
    start = time.monotonic()
    with pytest.raises(WeightsError, match="timed out"):
        dl.fetch("se_resnet50", timeout=1)
    assert time.monotonic() - start < 3
    assert not _repo().exists()


def test_missing_file_on_the_mirror(server, monkeypatch):
    monkeypatch.setitem(dl.PRETRAINED, "se_resnet50",
                        type(SPEC)(**{**SPEC.__dict__, "hf_filename": "nope.safetensors"}))
    with pytest.raises(WeightsError, match="HTTP error 404"):
        dl.fetch("se_resnet50")
    assert not (_repo() / "blobs").exists()


def test_keyboard_interrupt_cleans_up_and_propagates(server):
    def interrupt(done: int, total: int | None) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dl.fetch("se_resnet50", progress=interrupt)
    assert _blob_files() == [] and dl.cached_path("se_resnet50") is None


def test_stale_partial_blobs_are_swept(server):
    blobs = _repo() / "blobs"
    blobs.mkdir(parents=True)
    stale, fresh = blobs / f"{PAYLOAD_SHA}.dead0001.incomplete", blobs / "x.live0002.incomplete"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"busy")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    dl.fetch("se_resnet50")
    assert sorted(_blob_files()) == sorted([PAYLOAD_SHA, fresh.name])


def test_environment_is_read_at_each_call(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example/")
    assert dl.hf_endpoint() == "https://mirror.example"
    assert dl.source_url("se_resnet50") == f"https://mirror.example{RESOLVE}"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert dl.hf_repo_folder(SPEC) == tmp_path / "c" / "models--timm--seresnet50.ra2_in1k"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert dl.hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for value, want in (("1", True), ("yes", True), ("0", False), ("", False)):
        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        assert dl.hf_offline() is want


# --------------------------------------------------------------------------- every pretrained file


class _Everything(BaseHTTPRequestHandler):
    """The hub's HEAD and GET for every hub file (``/{repo}/resolve/{revision}/{file}``) and, at
    the path of each file's own URL and under ``/files/`` (a SE_VIZ_MIRROR), its bytes."""

    routes: dict[str, bytes]
    hits: list[tuple[str, str]]

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self, with_body: bool) -> None:
        self.hits.append((self.command, self.path))
        body = self.routes.get(self.path)
        if body is None:
            self.send_error(404, "Entry not found")
            return
        self.send_response(200)
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        for key, value in (("X-Repo-Commit", COMMIT), ("ETag", etag), ("X-Linked-Etag", etag),
                           ("X-Linked-Size", len(body)), ("Content-Length", len(body))):
            self.send_header(key, str(value))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802 (http.server API)
        self._answer(False)

    def do_GET(self) -> None:  # noqa: N802
        self._answer(True)


def _body(arch: str) -> bytes:
    return hashlib.sha256(arch.encode()).digest() * 4096  # 128 KiB, different for every arch


@pytest.fixture(scope="module")
def _every_file_server():
    """One local server for the module: (base URL, routes, hits)."""
    routes: dict[str, bytes] = {}
    hits: list[tuple[str, str]] = []
    handler = type("Handler", (_Everything,), {"routes": routes, "hits": hits})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", routes, hits
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture()
def every_file(_every_file_server, monkeypatch):
    """(base URL, hits): a local server standing in for the hub (HF_ENDPOINT) and for every
    file's own host (its URL is pointed at the server, its path kept)."""
    base, routes, hits = _every_file_server
    monkeypatch.setenv("HF_ENDPOINT", base)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    for arch, spec in list(dl.PRETRAINED.items()):
        routes[f"/files/{spec.filename}"] = _body(arch)
        if spec.hf_repo:
            routes[urlsplit(dl.source_url(arch)).path] = _body(arch)
        else:
            path = urlsplit(spec.url).path
            routes[path] = _body(arch)
            monkeypatch.setitem(dl.PRETRAINED, arch, dataclasses.replace(spec, url=base + path))
    hits.clear()
    return base, hits


def test_every_pretrained_file_has_its_own_name_and_one_source():
    specs = dl.PRETRAINED.values()
    assert len({s.filename for s in specs}) == len(dl.PRETRAINED) >= 13
    for arch, spec in dl.PRETRAINED.items():
        assert spec.arch == arch and spec.url.startswith("https://")
        if spec.hf_repo:  # the URL shown to users is the hub file's
            assert spec.hf_filename and spec.url == (
                f"https://huggingface.co/{spec.hf_repo}/resolve/{spec.hf_revision or 'main'}/"
                f"{spec.hf_filename}")


@pytest.mark.parametrize("source", ["own", "mirror"])
@pytest.mark.parametrize("arch", list(dl.PRETRAINED))
def test_every_pretrained_file_is_fetched_verified_and_then_used_offline(
        every_file, monkeypatch, arch, source):
    base, hits = every_file
    if source == "mirror":
        monkeypatch.setenv("SE_VIZ_MIRROR", f"{base}/files/")
    spec, body = dl.PRETRAINED[arch], _body(arch)
    assert dl.cached_path(arch) is None
    calls: list[tuple[int, int | None]] = []
    path = dl.fetch(arch, progress=lambda d, t: calls.append((d, t)))
    assert path.read_bytes() == body and calls[-1] == (len(body), len(body))
    assert dl.cached_path(arch) == path and dl.is_pretrained_file(path)
    if spec.hf_repo and source == "own":  # huggingface_hub, into the Hugging Face cache
        assert path == dl.hf_repo_folder(spec) / "snapshots" / COMMIT / spec.hf_filename
        assert path.resolve().name == hashlib.sha256(body).hexdigest()
        assert [h[0] for h in hits] == ["HEAD", "HEAD", "GET"]
    else:  # pooch, into se_viz's cache
        assert path == dl.expected_path(arch)
        assert hits == [("GET", urlsplit(dl.source_url(arch)).path)]
    assert dl.destination_folder(arch) in path.parents
    before = len(hits)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # cached: used without any request
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    assert dl.fetch(arch) == path and len(hits) == before
    row = {r["arch"]: r for r in dl.describe_cache()}[arch]
    assert row["present"] and row["path"] == str(path) and row["size"] == len(body)


@pytest.mark.parametrize("arch", list(dl.PRETRAINED))
def test_every_pretrained_file_offline_says_what_to_do(monkeypatch, arch):
    spec = dl.PRETRAINED[arch]
    if spec.hf_repo:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        url = f"http://127.0.0.1:{_closed_port()}/{spec.filename}"
        monkeypatch.setitem(dl.PRETRAINED, arch, dataclasses.replace(spec, url=url))
    start = time.monotonic()
    with pytest.raises(WeightsError) as info:
        dl.fetch(arch)
    assert time.monotonic() - start < 2
    msg = str(info.value)
    assert dl.source_url(arch) in msg and str(dl.expected_path(arch)) in msg
    assert f"se-viz weights install FILE --arch {arch}" in msg and "--weights PATH" in msg
    assert ("HF_HUB_OFFLINE" if spec.hf_repo else "offline") in msg
    assert dl.cached_path(arch) is None and not list(dl.cache_dir().glob("*"))


def test_progress_fits_huggingface_hubs_xet_reporter():
    """A hub file stored with Xet is downloaded by hf_xet, whose reporter drives ``tqdm_class``
    with more calls than a plain download: still one bar, counting the bytes written."""
    from types import SimpleNamespace

    from huggingface_hub.utils._xet_progress_reporting import XetDownloadProgressReporter

    calls: list[tuple[int, int | None]] = []
    bar = dl._hub_bar(lambda d, t: calls.append((d, t)))
    with XetDownloadProgressReporter(reconstruction_desc=FILE, total=300, log_level=30,
                                     tqdm_class=bar) as reporter:
        for written, received in ((100, 150), (100, 200), (300, 300)):
            reporter.update_progress(SimpleNamespace(
                total_bytes_completed=written, total_transfer_bytes_completed=received,
                total_bytes_completion_rate=1.0, total_transfer_bytes_completion_rate=1.0,
                total_bytes=300))
    assert calls == [(100, 300), (300, 300)]
