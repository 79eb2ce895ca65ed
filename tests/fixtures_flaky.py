"""A flaky asset server on loopback: serves a folder with HTTP Range requests and, on purpose,
fails a configurable fraction of them with 503s, connection resets and slow answers.

It runs in its own process (GDAL's curl and the test share no GIL or event loop), started
once per session by the ``flaky_server`` fixture. The test steers it through a control
endpoint, so one server serves clean, flaky and "really down" phases:

* ``GET /_control?fail=0.2&modes=503,reset,slow&seed=1&slow=0.3`` sets the failure rate,
  the failure kinds (picked at random per failing request), the RNG seed and the delay of
  a slow answer (slow answers still succeed, late);
* ``GET /_stats`` returns the counts (JSON): requests, served, and each failure kind;
* every other path is ``/<namespace>/<file path>``: the first segment is ignored, so a
  test can read the same file under a fresh URL (GDAL caches /vsicurl/ content per URL).

Files whose name contains ``forbidden`` answer 403, missing files 404.

A failing request gets one of: ``503`` (with ``Retry-After: 0``), ``500``, ``garbage`` (a 200
whose JSON body is cut off), ``reset`` (the socket
closed with SO_LINGER 0: the client sees "Connection reset by peer"), or ``slow`` (the
answer comes after ``slow`` seconds). The failing requests are drawn independently with
the seeded RNG, so a rate of 0.2 means about one request in five fails, and the same
request may fail again on its retry.

Run standalone: ``python tests/fixtures_flaky.py ROOT PORT``.
"""

from __future__ import annotations

import json
import os
import random
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _State:
    """Failure settings and counters, shared by the handler threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fail = 0.0
        self.modes: tuple[str, ...] = ("503", "reset", "slow")
        self.slow = 0.3
        self.rng = random.Random(0)
        self.stats: dict[str, int] = {}

    def count(self, key: str) -> None:
        with self.lock:
            self.stats[key] = self.stats.get(key, 0) + 1

    def draw(self) -> str | None:
        """The failure kind of the next request, or None to serve it normally."""
        with self.lock:
            if self.fail <= 0 or self.rng.random() >= self.fail:
                return None
            return self.rng.choice(self.modes)


def _handler(root: Path, state: _State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            url = urllib.parse.urlsplit(self.path)
            if url.path == "/_control":
                self._control(urllib.parse.parse_qs(url.query))
                return
            if url.path == "/_stats":
                with state.lock:
                    self._send(200, json.dumps(state.stats).encode(), "application/json", body=body)
                return
            state.count("requests")
            kind = state.draw()
            if kind == "503":
                state.count("503")
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if kind == "500":
                state.count("500")
                self._send(500, b"internal error", "text/plain", body=body)
                return
            if kind == "garbage":
                state.count("garbage")
                self._send(200, b'{"type": "Catalog", "id": broken', "application/json", body=body)
                return
            if kind == "reset":
                state.count("reset")
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if kind == "slow":
                state.count("slow")
                time.sleep(state.slow)
            self._file(url.path, body=body)

        def _control(self, query: dict[str, list[str]]) -> None:
            with state.lock:
                if "fail" in query:
                    state.fail = float(query["fail"][0])
                if "modes" in query:
                    state.modes = tuple(query["modes"][0].split(","))
                if "slow" in query:
                    state.slow = float(query["slow"][0])
                if "seed" in query:
                    state.rng = random.Random(int(query["seed"][0]))
                if "reset_stats" in query:
                    state.stats = {}
            self._send(200, b"ok", "text/plain", body=True)

        def _file(self, path: str, *, body: bool) -> None:
            parts = [p for p in urllib.parse.unquote(path).split("/") if p]
            target = (root / "/".join(parts[1:])).resolve() if len(parts) > 1 else root
            if "forbidden" in target.name:
                self._send(403, b"forbidden", "text/plain", body=body)
                return
            if root.resolve() not in target.parents or not target.is_file():
                self._send(404, b"not found", "text/plain", body=body)
                return
            data = target.read_bytes()
            ctype = "application/json" if target.suffix == ".json" else "image/tiff"
            header = self.headers.get("Range")
            match = _RANGE.match(header.strip()) if header else None
            if match is None:
                self._send(200, data, ctype, body=body)
                return
            first, last = match.groups()
            size = len(data)
            if first == "":  # suffix range: the last N bytes
                start, end = max(size - int(last), 0), size - 1
            else:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            chunk = data[start : end + 1]
            self.send_response(206)
            self.send_header("Content-Type", ctype)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.send_header("Content-Length", str(len(chunk)))
            self.end_headers()
            if body:
                self.wfile.write(chunk)
            state.count("served")

        def _send(self, status: int, data: bytes, ctype: str, *, body: bool) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            if status == 200 and not self.path.startswith("/_"):
                state.count("served")

    return Handler


def serve(root: Path, port: int) -> None:
    """Serve ``root`` on 127.0.0.1:``port`` until killed."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(root, _State()))
    server.daemon_threads = True
    server.serve_forever()


@dataclass
class FlakyServer:
    """Handle on the running server: its folder, base URL and failure controls."""

    root: Path
    url: str

    def set(self, *, fail: float, modes: str = "503,reset,slow", seed: int = 0, slow: float = 0.3) -> None:
        """Fail ``fail`` (0..1) of the requests with ``modes``; resets the counters."""
        query = urllib.parse.urlencode(
            {"fail": fail, "modes": modes, "seed": seed, "slow": slow, "reset_stats": 1}
        )
        with urllib.request.urlopen(f"{self.url}/_control?{query}", timeout=5) as resp:
            resp.read()

    def stats(self) -> dict[str, int]:
        """Counts since the last :meth:`set`: requests, served, 503, reset, slow."""
        with urllib.request.urlopen(f"{self.url}/_stats", timeout=5) as resp:
            stats: dict[str, int] = json.loads(resp.read())
            return stats

    def href(self, namespace: str, path: Path) -> str:
        """The URL of a file under :attr:`root`, in ``namespace`` (a fresh namespace: a fresh URL)."""
        return f"{self.url}/{namespace}/{path.relative_to(self.root).as_posix()}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, __file__, str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flaky server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stats", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("flaky server did not start in 30 s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


try:
    import pytest

    @pytest.fixture(scope="session")
    def flaky_server() -> Iterator[FlakyServer]:
        """A flaky range-capable HTTP server on 127.0.0.1 over an empty temp folder (tests fill it)."""
        root = Path(tempfile.mkdtemp(prefix="geounet-flaky-"))
        proc, url = _start(root)
        try:
            yield FlakyServer(root=root, url=url)
        finally:
            _stop(proc)
            import shutil

            shutil.rmtree(root, ignore_errors=True)

except ImportError:  # standalone server process: pytest not needed
    pass


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    serve(Path(sys.argv[1]), int(sys.argv[2]))
