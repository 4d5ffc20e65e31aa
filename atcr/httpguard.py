"""Inbound HTTP limits that uvicorn does not enforce by itself.

uvicorn's httptools protocol accepts headers of any size and waits forever for a client that
connects and then sends its request slowly (or never): its only timer is the keep-alive one,
between requests. `GuardedHttpToolsProtocol` adds three limits, per connection:

* **header time**: the request line and headers must arrive within ``header_timeout`` seconds
  of the connection opening (or of the next request's first byte): else ``408`` and close;
* **header size**: more than ``max_header_bytes`` of request line + headers: ``431`` and close
  (counted on the raw bytes before the parser buffers them, so memory stays bounded);
* **body stall**: once a request has a body, the client may pause at most ``body_timeout``
  seconds between chunks while the application is reading: else ``408`` (or, once the response
  has started, just close). Pauses the application causes (flow control) do not count. A body
  still arriving after the response is complete (a ``413`` sent on the declared length) is
  discarded for at most ``body_timeout`` more seconds, then the connection is closed.

A connection whose first bytes are a TLS handshake (an https:// client on this plain-HTTP
port; docker and skopeo try https first for a registry without TLS) gets uvicorn's ``400``
as before, but is logged once per process and then only at debug level, instead of uvicorn's
warning on every one.

Limits are process-wide (`configure`), so that uvicorn's multi-worker mode, which builds
the protocol in each worker from an import string, gets them too.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PROTOCOL = "atcr.httpguard:GuardedHttpToolsProtocol"

log = logging.getLogger("atcr.http")


@dataclass(frozen=True)
class InboundLimits:
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_header_bytes: int = 64 * 1024

    @classmethod
    def from_settings(cls, settings: object) -> InboundLimits:
        return cls(
            header_timeout=float(getattr(settings, "server_header_timeout", cls.header_timeout)),
            body_timeout=float(getattr(settings, "server_body_timeout", cls.body_timeout)),
            max_header_bytes=int(getattr(settings, "server_max_header_bytes", cls.max_header_bytes)),
        )


_limits = InboundLimits()


def configure(limits: InboundLimits) -> None:
    """Set the limits every connection accepted from now on uses (one setting per process)."""
    global _limits  # noqa: PLW0603 - process-wide on purpose: uvicorn workers import the class by name
    _limits = limits


def current() -> InboundLimits:
    return _limits


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}

_tls_probes = 0


def _tls_probe(client: tuple[str, int] | None) -> None:
    """Log a TLS handshake on this plain-HTTP port once per process, later ones at debug only.

    Registry clients try https first for a registry without TLS (docker, podman, skopeo with an
    insecure registry) and fall back to http: each pull would otherwise add uvicorn's
    "Invalid HTTP request received." to the log.
    """
    global _tls_probes  # noqa: PLW0603 - one counter per process, like the limits
    _tls_probes += 1
    who = f"{client[0]}:{client[1]}" if client else "a client"
    if _tls_probes == 1:
        log.warning(
            "%s started TLS on this plain-HTTP port (an https:// URL, or a client trying https before http); "
            "answered 400. Later ones are logged at debug level only.",
            who,
        )
    else:
        log.debug("%s started TLS on this plain-HTTP port (%d so far); answered 400", who, _tls_probes)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header-time, header-size and body-stall limits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard = _limits
        self._in_headers = True
        self._header_bytes = 0  # raw bytes received while the headers are incomplete
        self._parsed_bytes = 0  # request line + headers as parsed (they may complete within one read)
        self._refusal: int | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._fresh = True  # nothing received yet on this connection

    # --- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._fresh:
            self._fresh = False
            if data[:1] == b"\x16" and data[1:2] == b"\x03":  # a TLS handshake record: an https:// client
                _tls_probe(self.client)
                # uvicorn's own 400 (it warns on every one): clients that try https first and fall back
                # to http (docker, skopeo for an insecure registry) recognise "HTTP response to HTTPS".
                HttpToolsProtocol.send_400_response(self, "Invalid HTTP request received.")
                return
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._in_headers and self._header_bytes > self._guard.max_header_bytes:
            self._refuse(431)

    # --- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._parsed_bytes = 0
        self._arm_header_timer()

    def on_url(self, url: bytes) -> None:
        self._count_parsed(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_parsed(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count_parsed(self, n: int) -> None:
        self._parsed_bytes += n
        if self._parsed_bytes > self._guard.max_header_bytes:
            # Raising stops the parser; uvicorn then calls send_400_response, which sends this instead.
            self._refusal = 431
            raise ValueError("request headers too large")

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(self._refusal)
            return
        super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._header_bytes = 0
        self._cancel(self._header_timer)
        self._header_timer = None
        super().on_headers_complete()
        if self._has_body():
            self._arm_body_timer()

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        # Once the answer is out (a 413 before the body was read, say), the rest of the body is
        # discarded for at most one more `body_timeout`, however fast it keeps coming.
        if self._body_timer is not None and (self.cycle is None or not self.cycle.response_complete):
            self._arm_body_timer()

    def on_message_complete(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None
        super().on_message_complete()

    # --- timers -----------------------------------------------------------------------------

    def _has_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"", b"0")
            if name == b"transfer-encoding":
                return True
        return False

    def _arm_header_timer(self) -> None:
        if self._header_timer is None and self._guard.header_timeout > 0:
            self._header_timer = self.loop.call_later(self._guard.header_timeout, self._header_timed_out)

    def _arm_body_timer(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = None
        if self._guard.body_timeout > 0:
            self._body_timer = self.loop.call_later(self._guard.body_timeout, self._body_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._in_headers:
            self._refuse(408)

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if self.flow is not None and self.flow.read_paused:
            self._arm_body_timer()  # the application is not reading: its pace, not the client's
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            self._refuse(408)
        elif not self.transport.is_closing():
            self.transport.close()

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()

    def _cancel_timers(self) -> None:
        self._cancel(self._header_timer)
        self._cancel(self._body_timer)
        self._header_timer = self._body_timer = None

    def _refuse(self, status: int) -> None:
        """Answer `status` with Connection: close and drop the connection (no application call)."""
        self._cancel_timers()
        if self.transport.is_closing():
            return
        reason = _REASONS[status]
        body = reason + b"\n"
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
        )
        self.transport.close()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()


__all__ = ["PROTOCOL", "GuardedHttpToolsProtocol", "InboundLimits", "configure", "current"]
