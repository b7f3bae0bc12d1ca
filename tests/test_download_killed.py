"""A download killed with SIGKILL leaves no usable file, and the next run starts clean."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from se_viz.engine import download

PAYLOAD = os.urandom(1 << 20)


class _Slow(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server API
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        if self.path.endswith("slow"):
            self.wfile.write(PAYLOAD[:4096])
            self.wfile.flush()
            time.sleep(30)  # the client is killed meanwhile
        else:
            self.wfile.write(PAYLOAD)

    def log_message(self, *args):
        pass


@pytest.fixture()
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


def test_killed_download_leaves_nothing_and_next_run_is_clean(server, tmp_path, monkeypatch):
    monkeypatch.setenv("SE_VIZ_HOME", str(tmp_path))
    code = ("import sys; from se_viz.engine import download; "
            "download.fetch('se_resnet50_vd', url=sys.argv[1], timeout=60)")
    proc = subprocess.Popen([sys.executable, "-c", code, f"{server}/slow"],
                            env={**os.environ, "SE_VIZ_HOME": str(tmp_path)})
    try:
        deadline = time.monotonic() + 60
        while not list(tmp_path.glob("*.part")):
            assert time.monotonic() < deadline, "the download never started"
            assert proc.poll() is None, "the downloader exited early"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert download.cached_path("se_resnet50_vd") is None  # the partial file is never used
    assert len(list(tmp_path.glob("*.part"))) == 1
    path = download.fetch("se_resnet50_vd", url=f"{server}/full")  # the next run
    assert path.read_bytes() == PAYLOAD
    assert not list(tmp_path.glob("*.part")), "the killed run's partial file was not removed"
