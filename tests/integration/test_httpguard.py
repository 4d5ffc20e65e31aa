"""The inbound limits of atcr/httpguard.py on a real uvicorn server (short limits, loopback)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from atcr import httpguard
from tests.support.services import free_port

pytestmark = pytest.mark.integration

HEADER_TIMEOUT = BODY_TIMEOUT = 0.5
# Generous on a loaded machine; the refusals' timers are 0.5 s. A refusal that never came would
# leave `out` empty after `wait` (15 s), so the status code already proves there is no hang.
SLACK = 10.0


async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    before = httpguard.current()
    httpguard.configure(httpguard.InboundLimits(header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT,
                                                max_header_bytes=8192))
    port = free_port()
    srv = _Server(uvicorn.Config(echo, host="127.0.0.1", port=port, http=httpguard.PROTOCOL, log_level="critical",
                                 lifespan="off", interface="asgi3"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.01)
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(5)
        httpguard.configure(before)


def _complete(out: bytes) -> bool:
    """A whole response with a Content-Length is in (a refusal closes the connection instead)."""
    head, sep, body = out.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def exchange(
    port: int, data: bytes, *, trickle: list[bytes] | None = None, gap: float = 0.2, wait: float = 15.0
) -> tuple[bytes, float, int]:
    """Send `data`, then the `trickle` pieces `gap` seconds apart, stopping early once the server
    answers; returns (response, seconds from connecting to the end, trickle pieces sent).

    `wait` (how long a silent server is waited for) only bounds a hang: no result depends on it.
    """
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(data)
            for piece in trickle or []:
                readable, _, _ = select.select([sock], [], [], gap)
                if readable:  # the server answered (or closed): no more pieces
                    break
                sock.sendall(piece)
                sent += 1
        out = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                out += chunk
                if _complete(out):
                    break
    return out, time.monotonic() - started, sent


def test_normal_requests_pass(server: int) -> None:
    # A request held until a timer fired would be answered 408: the 200 proves it was not.
    out, _, _ = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(b"hello")


def test_large_headers_get_431(server: int) -> None:
    for request in (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 50_000 + b"\r\n\r\n",
                    b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(3000)) + b"\r\n"):
        out, _, _ = exchange(server, request)
        assert out.startswith(b"HTTP/1.1 431"), out[:100]


def test_idle_slow_headers_and_stalled_bodies_get_408(server: int) -> None:
    # The timers cannot fire before 0.5 s (the stopwatch starts before connecting): the lower
    # bounds hold however slow the machine; the upper ones only say "not some other, later cut".
    out, took, _ = exchange(server, b"")
    assert out.startswith(b"HTTP/1.1 408") and HEADER_TIMEOUT - 0.1 < took < HEADER_TIMEOUT + SLACK
    # Headers trickling in (one line every 0.2 s, for 20 s in all) do not extend the 0.5 s header
    # deadline: the 408 comes while the client is still sending them.
    pieces = [b"X-A: 1\r\n"] * 100
    out, took, sent = exchange(server, b"GET / HTTP/1.1\r\n", trickle=pieces)
    assert out.startswith(b"HTTP/1.1 408") and sent < len(pieces), (out[:100], sent, took)
    out, took, _ = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel")
    assert out.startswith(b"HTTP/1.1 408") and BODY_TIMEOUT - 0.1 < took < BODY_TIMEOUT + SLACK


def test_a_slow_but_moving_body_is_not_cut(server: int) -> None:
    # Its own body timeout, ten times the client's 0.2 s pauses (so a busy machine stretching a
    # pause cannot reach it), and a body that takes longer than that timeout in all.
    module_limits = httpguard.current()
    httpguard.configure(dataclasses.replace(module_limits, header_timeout=10.0, body_timeout=2.0))
    try:
        body = b"slow-but-moving!"  # 16 bytes, one every 0.2 s: 3 s in all
        out, took, sent = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n" + body[:1],
                                   trickle=[bytes([b]) for b in body[1:]])
    finally:
        httpguard.configure(module_limits)
    assert out.startswith(b"HTTP/1.1 200") and out.endswith(body), out[:200]
    assert sent == len(body) - 1 and took > 2.0


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_tls_on_the_plain_port_is_answered_and_logged_once(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """docker/skopeo try https first on a registry without TLS: each try used to log uvicorn's
    "Invalid HTTP request received." warning. Now: the same 400 (clients recognise "HTTP response
    to HTTPS client" and fall back), one warning per process, later ones at debug."""
    monkeypatch.setattr(httpguard, "_tls_probes", 0)
    seen = _Records()
    loggers = [logging.getLogger("atcr.http"), logging.getLogger("uvicorn.error")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(seen)
        lg.setLevel(logging.INFO)
    try:
        for _ in range(3):
            ctx = ssl.create_default_context()
            with socket.create_connection(("127.0.0.1", server), timeout=5) as raw, pytest.raises(ssl.SSLError):
                ctx.wrap_socket(raw, server_hostname="localhost")
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32)
        out, _, _ = exchange(server, hello)
        assert out.startswith(b"HTTP/1.1 400"), out
        out, _, _ = exchange(server, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert out.startswith(b"HTTP/1.1 200")  # plain HTTP still works
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(seen)
            lg.setLevel(level)
    messages = [(r.name, r.levelno, r.getMessage()) for r in seen.records]
    assert not [m for m in messages if "Invalid HTTP request" in m[2]], messages
    warnings = [m for m in messages if m[1] >= logging.WARNING]
    assert len(warnings) == 1 and "started TLS on this plain-HTTP port" in warnings[0][2], messages
    assert httpguard._tls_probes == 4
