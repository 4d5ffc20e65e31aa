"""Serving pieces every service shares: health routes, logging, and the uvicorn runner.

`serve_all` runs several ASGI apps in one event loop (that is `atcr dev`) and owns signal
handling itself, so one Ctrl-C stops every server, in dependency order, and then the
embedded Valkey.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import uvicorn
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

from atcr import httpguard
from atcr.errors import AtcrError

ReadinessCheck = Callable[[], Awaitable[None]]

log = logging.getLogger("atcr")


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    for noisy in ("httpx", "httpcore", "botocore", "boto3", "urllib3", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def health_routes(checks: Mapping[str, ReadinessCheck], *, timeout: float = 2.0) -> list[HTTPRouteHandler]:
    """`/livez` (the process answers) and `/readyz` (every dependency answers within `timeout`)."""

    @get("/livez", include_in_schema=False, sync_to_thread=False)
    def livez() -> Response[dict[str, str]]:
        return Response({"status": "ok"})

    @get("/readyz", include_in_schema=False)
    async def readyz() -> Response[dict[str, Any]]:
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check(), timeout=timeout)
                results[name] = "ok"
            except Exception as exc:  # any failure means "not ready"; the reason is reported
                ok = False
                results[name] = f"failing: {type(exc).__name__}"
        status = "ready" if ok else "not ready"
        return Response({"status": status, "checks": results}, status_code=200 if ok else 503)

    return [livez, readyz]


def http_protocol() -> str:
    """The guarded httptools protocol, or plain h11 (header size limit only) without httptools."""
    try:
        import httptools  # noqa: F401
    except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
        return "h11"
    return httpguard.PROTOCOL


def uvicorn_options(log_level: str) -> dict[str, Any]:
    """What every service's uvicorn runs with, single process (`serve_all`) or workers (cli).

    `proxy_headers=False`: uvicorn would otherwise rewrite the client address from
    `X-Forwarded-For` on its own for connections from its `forwarded_allow_ips` (127.0.0.1 by
    default), so a client next to the service could pick any address and escape every
    per-address limit. Which headers to believe is decided in one place, the AppView's own
    policy (appview/clientaddr.py, `ATCR_TRUST_FORWARDED_FOR`); the server stays out of it.
    """
    return {
        "log_level": log_level.lower(),
        "access_log": False,
        "server_header": False,
        "proxy_headers": False,
        "timeout_keep_alive": 30,
        # Header-time, header-size and body-stall limits (atcr/httpguard.py).
        "http": http_protocol(),
        "h11_max_incomplete_event_size": httpguard.current().max_header_bytes,
    }


def _bind(spec: ServedApp) -> socket.socket:
    """Bind before serving so a busy port is one clear error, not a half-started stack."""
    family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this; without it small responses wait ~40 ms on delayed ACKs.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((spec.host, spec.port))
    except OSError as exc:
        sock.close()
        raise AtcrError(f"{spec.name}: cannot listen on {spec.host}:{spec.port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class ServedApp:
    name: str
    app: Any
    host: str
    port: int


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to `serve_all`."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return

    def capture_signals(self) -> Any:  # uvicorn >= 0.29
        import contextlib

        return contextlib.nullcontext()


async def serve_all(
    apps: Sequence[ServedApp],
    *,
    log_level: str = "info",
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve every app until SIGINT/SIGTERM/SIGHUP, then stop them one after another.

    `apps` are stopped in the order given, each only once the one before has finished its
    shutdown (lifespan included): list a service before the services it depends on. In
    `atcr dev` the AppView goes first (it flushes its batched pull counts to the hold), then
    the hold (it moves its pending counts from Valkey into its stats records), then the
    consumer; the caller stops the embedded Valkey after this returns. A second signal makes
    every server still running exit at once, without waiting for open requests or shutdown.
    """
    servers = []
    for spec in apps:
        config = uvicorn.Config(
            spec.app,
            host=spec.host,
            port=spec.port,
            lifespan="on",
            timeout_graceful_shutdown=10,
            **uvicorn_options(log_level),
        )
        servers.append(_QuietServer(config))

    sockets = [_bind(spec) for spec in apps]
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            log.warning("second stop signal: exiting now, without waiting for shutdown")
            for srv in servers:
                srv.should_exit = srv.force_exit = True
            return
        log.info("shutting down, one service after another (Ctrl-C again to exit at once)")
        stop.set()

    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)

    tasks = [
        asyncio.create_task(srv.serve(sockets=[sock]), name=f"serve-{spec.name}")
        for srv, spec, sock in zip(servers, apps, sockets, strict=True)
    ]

    async def wait_started() -> None:
        while not all(srv.started for srv in servers):
            if any(t.done() for t in tasks):
                return
            await asyncio.sleep(0.05)
        if on_ready is not None:
            on_ready()

    watcher = asyncio.create_task(wait_started())
    stopping = asyncio.create_task(stop.wait())
    try:
        # A signal, or one server ending on its own (a startup failure), ends them all.
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for spec, srv, task in zip(apps, servers, tasks, strict=True):
            srv.should_exit = True
            await asyncio.wait([task])
            if len(apps) > 1:
                log.info("%s stopped", spec.name)
        for task in tasks:
            exc = task.exception()
            if exc is not None:
                raise exc
    finally:
        for sock in sockets:
            sock.close()
        watcher.cancel()
        stopping.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)
