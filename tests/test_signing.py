"""Re-signing expired asset hrefs mid-job, against a loopback storage that expires its tokens.

The server behaves like Planetary Computer's blob storage behind its SAS token API: ``GET
/token`` hands out a token (``{"token": "...", "msft:expiry": ...}``) valid until the test
expires it (explicitly, not by a clock: a loaded machine must not expire a token mid-read
that the test expects to be live); an asset request (with range requests, as GDAL's /vsicurl/ makes them) without a
live token is refused with HTTP 403 ``AuthenticationFailed``. The signer registered here
asks that token API, as ``planetary_computer.sign_url`` asks Planetary Computer's.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import urllib.request
from collections.abc import Callable, Iterator
from functools import partial
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from fixtures_stac import BRANDENBURG_ID, StacAssets
from RangeHTTPServer import RangeRequestHandler

from geounet import read, scenes, search, signing
from geounet.errors import ReadError
from geounet.geo import Window


class Storage(RangeRequestHandler):
    """Files of ``directory`` for requests carrying a live ``?token=``; tokens from ``/token``."""

    tokens: set[str]
    issued: list[str]
    path: str  # BaseHTTPRequestHandler's; RangeHTTPServer ships no types

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path == "/token":
            token = secrets.token_hex(8)
            self.tokens.add(token)
            self.issued.append(token)
            body = json.dumps({"token": f"token={token}", "msft:expiry": "soon"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        token = (parse_qs(parts.query).get("token") or [""])[0]
        if token not in self.tokens:
            self.send_error(403, "AuthenticationFailed", "Signature not valid in the specified time frame")
            return
        self.path = parts.path
        super().do_GET()

    def do_HEAD(self) -> None:
        self.do_GET()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def storage(stac_assets: StacAssets) -> Iterator[tuple[str, list[str], Callable[[], None]]]:
    """(url, tokens issued so far, expire every live token)."""
    handler: type[Storage] = type("Handler", (Storage,), {"tokens": set(), "issued": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(stac_assets.root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    signing.register("loopback-sas", partial(sign_with, url))
    yield url, handler.issued, handler.tokens.clear
    server.shutdown()
    server.server_close()


def sign_with(url: str, href: str) -> str:
    with urllib.request.urlopen(f"{url}/token", timeout=5) as resp:
        token = json.loads(resp.read())["token"]
    return f"{href}?{token}"


def test_expired_token_mid_job_is_re_signed_and_the_read_retried(
    stac_api: str, stac_assets: StacAssets, storage: tuple[str, list[str], Callable[[], None]], data_dir: Path
) -> None:
    url, issued, expire = storage
    [scene] = search.scenes(
        stac_api, collections=["sentinel-2-l1c"], bbox=(12.55, 52.46, 12.65, 52.5), bands=["B04"]
    )
    assert scene.id == BRANDENBURG_ID
    hrefs = {b.name: b.href.replace(stac_assets.url, url) for b in scene.bands}
    signed = dataclasses.replace(
        scene,
        bands=tuple(dataclasses.replace(b, href=sign_with(url, hrefs[b.name])) for b in scene.bands),
        signer="loopback-sas",
    )
    jp2 = data_dir / "s2-brandenburg-20170216" / "IMG_DATA" / "T33UUU_20170216T102101_B04.jp2"
    grid = scenes.native_grid([signed])
    expected = read.read_window(jp2, grid.full_window(), bands=[1])
    windows = [Window(0, 0, 64, 64), Window(300, 500, 64, 64)]
    first, _ = scenes.composite([signed], windows[0], grid=grid)
    assert len(issued) == 1
    expire()  # the token of the search expires during the job
    second, valid = scenes.composite([signed], windows[1], grid=grid)
    assert len(issued) == 2 and valid.all()  # refused once, re-signed, retried
    for got, window in zip((first, second), windows, strict=True):
        np.testing.assert_array_equal(got[0], expected[0][window.to_slices()])
    assert signing.current(signed.bands[0].href).endswith(f"token={issued[-1]}")
    unsigned = dataclasses.replace(signed, signer=None)
    expire()
    with pytest.raises(ReadError, match="cannot be read"):  # without a signer the refusal is the job's error
        scenes.composite([unsigned], Window(700, 700, 32, 32), grid=grid)


def test_unsigned_hrefs_and_unknown_signers() -> None:
    assert signing.unsigned("http://h/a.tif?token=1") == "http://h/a.tif"
    with pytest.raises(Exception, match="signer 'nope' is unknown"):
        signing.resign("http://h/a.tif", "nope")
