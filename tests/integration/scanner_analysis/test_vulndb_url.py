"""`VulnDB.load` of an http(s) URL: through the SSRF guard, bounded in time and size (loopback server)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from atcr.http import SsrfPolicy
from scanner.analysis import VulnDB, VulnDBError
from tests.support import imagebuild as ib

pytestmark = pytest.mark.integration

RECORDS = [ib.osv(f"OSV-{i}", "PyPI", f"pkg{i}", [{"introduced": "0"}, {"fixed": "1.0"}]) for i in range(3)]


class _Handler(http.server.BaseHTTPRequestHandler):
    zip_bytes = b""
    release = threading.Event()

    def do_GET(self) -> None:
        if self.path == "/all.zip":
            self._send(200, self.zip_bytes)
        elif self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"PK")
            self.wfile.flush()
            self.release.wait(60)
        elif self.path == "/big":
            self._send(200, b"x" * 200_000)
        else:
            self._send(404, b"not found")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def osv_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _Handler.zip_bytes = ib.write_osv_zip(tmp_path_factory.mktemp("osv") / "all.zip", RECORDS).read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        _Handler.release.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_load_from_url_equals_load_from_zip(osv_server: str, tmp_path: Path) -> None:
    policy = SsrfPolicy(allowed_hosts=frozenset({osv_server}))
    db = VulnDB.load(f"http://{osv_server}/all.zip", policy=policy)
    local = VulnDB.load(ib.write_osv_zip(tmp_path / "all.zip", RECORDS))
    assert db.records == 3 and db.version == local.version


def test_the_ssrf_guard_refuses_loopback_by_default(osv_server: str) -> None:
    with pytest.raises(VulnDBError, match="all.zip"):
        VulnDB.load(f"http://{osv_server}/all.zip")


def test_http_errors_timeouts_and_size_are_vulndb_errors(osv_server: str) -> None:
    policy = SsrfPolicy(allowed_hosts=frozenset({osv_server}))
    with pytest.raises(VulnDBError, match="HTTP 404"):
        VulnDB.load(f"http://{osv_server}/missing.zip", policy=policy)
    with pytest.raises(VulnDBError, match="larger than"):
        VulnDB.load(f"http://{osv_server}/big", policy=policy, max_bytes=100_000)
    started = time.monotonic()
    with pytest.raises(VulnDBError, match="timed out"):
        VulnDB.load(f"http://{osv_server}/stall", policy=policy, timeout=1.0)
    assert time.monotonic() - started < 30  # bounded by the timeout, not by the server


def test_called_from_inside_an_event_loop(osv_server: str) -> None:
    import asyncio

    async def inside() -> VulnDB:
        return VulnDB.load(f"http://{osv_server}/all.zip", policy=SsrfPolicy(allowed_hosts=frozenset({osv_server})))

    assert asyncio.run(inside()).records == 3
