"""S3 that throttles or refuses, over real HTTP: retried with backoff, then a clear XRPC error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.integration.hold.harness import running_hold

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "ab" * 32


class FlakyS3(ThreadingHTTPServer):
    """Answers like S3 under stress: `failures` throttled answers, then success (or `status` forever)."""

    def __init__(self, failures: int, status: int = 503, code: str = "SlowDown") -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.failures = failures
        self.status = status
        self.code = code
        self.seen: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FlakyS3

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        self.server.seen.append(f"{self.command} {self.path.split('?')[0]}")
        if len(self.server.seen) <= self.server.failures:
            body = (
                f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{self.server.code}</Code>"
                "<Message>Please reduce your request rate.</Message></Error>"
            ).encode()
            self.send_response(self.server.status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", "42")
        self.send_header("ETag", '"abc"')
        self.end_headers()

    do_HEAD = do_GET = do_PUT = do_POST = do_DELETE = _answer


@pytest.fixture
def flaky() -> Iterator[FlakyS3]:
    servers: list[FlakyS3] = []

    def make(*args: object, **kw: object) -> FlakyS3:
        srv = FlakyS3(*args, **kw)  # type: ignore[arg-type]
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return srv

    yield make  # type: ignore[misc]
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def env(server: FlakyS3) -> dict[str, str]:
    return {
        "STORAGE_DRIVER": "s3",
        "S3_BUCKET": "flaky",
        "S3_ENDPOINT": server.url,
        "S3_FORCE_PATH_STYLE": "true",
        "S3_MAX_ATTEMPTS": "4",
        "S3_RETRY_BASE_DELAY": "0.01",
        "S3_RETRY_MAX_DELAY": "0.05",
    }


async def test_throttling_is_retried_until_it_passes(tmp_path: Path, valkey_url: str, flaky: object) -> None:
    server = flaky(failures=2)  # type: ignore[operator]
    async with running_hold(tmp_path, valkey_url, env=env(server)) as hold:
        r = await hold.get_blob(DIGEST, method="HEAD")
        assert r.status_code == 200 and r.headers["x-blob-size"] == "42"
        assert server.seen == ["HEAD /flaky/blobs/sha256/ab/" + "ab" * 32 + "/data"] * 3


async def test_throttling_that_never_ends_is_a_clear_503(tmp_path: Path, valkey_url: str, flaky: object) -> None:
    server = flaky(failures=10_000)  # type: ignore[operator]
    async with running_hold(tmp_path, valkey_url, env=env(server)) as hold:
        r = await hold.get_blob(DIGEST)
        assert r.status_code == 503
        assert r.json()["error"] == "StorageUnavailable" and "HeadObject" in r.json()["message"]
        assert int(r.headers["retry-after"]) > 0
        assert len(server.seen) == 4  # bounded attempts
        r = await hold.initiate()
        assert r.status_code == 503 and r.json()["error"] == "StorageUnavailable"
        assert "SlowDown" in r.json()["message"] and "Traceback" not in r.text


async def test_refusals_are_not_retried_and_name_the_cause(tmp_path: Path, valkey_url: str, flaky: object) -> None:
    server = flaky(failures=10_000, status=403, code="AccessDenied")  # type: ignore[operator]
    async with running_hold(tmp_path, valkey_url, env=env(server)) as hold:
        r = await hold.initiate()
        assert r.status_code == 502
        assert r.json() == {"error": "StorageError", "message": "storage refused CreateMultipartUpload: AccessDenied"}
        assert len(server.seen) == 1
