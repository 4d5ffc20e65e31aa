"""A reverse proxy on 127.0.0.1 that forwards to an upstream (the test PDS) and counts XRPC calls.

Tests point a client at the proxy instead of the PDS to count what it asks the PDS for
(per XRPC method, and per (method, collection) for record queries), and switch it "down"
without touching the session-wide PDS:

* ``mode = "up"``: forward;
* ``mode = "hang"``: accept the request and never answer (until the mode changes or the proxy stops);
* ``mode = "error"``: answer 503 at once;
* ``await proxy.stop()``: close the port (connections are refused); ``await proxy.start()`` reopens it.

Runs in the test's event loop (uvicorn serving a bare ASGI callable).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any
from urllib.parse import parse_qs

import httpx
import uvicorn

from tests.support.services import free_port

_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection", "content-length"}


class CountingProxy:
    def __init__(self, upstream: str, port: int | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port or free_port()
        self.mode = "up"
        self.calls: Counter[str] = Counter()
        self.by_collection: Counter[tuple[str, str]] = Counter()
        self.requests: list[tuple[str, str, int]] = []  # (HTTP method, path, request body bytes)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._release = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        self.requests.clear()
        self.calls.clear()
        self.by_collection.clear()

    def count(self, method: str, collection: str | None = None) -> int:
        if collection is None:
            return self.calls[method]
        return self.by_collection[(method, collection)]

    def set_mode(self, mode: str) -> None:
        assert mode in ("up", "hang", "error")
        self.mode = mode
        if mode != "hang":
            self._release.set()
            self._release = asyncio.Event()

    async def start(self) -> CountingProxy:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.upstream, trust_env=False, timeout=60.0)
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            log_config=None,
            log_level="warning",
            lifespan="off",
            interface="asgi3",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.get_running_loop().create_task(self._server.serve())
        for _ in range(500):
            if self._server.started:
                return self
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        raise RuntimeError("counting proxy did not start")

    async def stop(self) -> None:
        """Close the listening port; hanging requests are released with a 503."""
        self._release.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(self._task, timeout=10)
        self._server = None
        self._task = None
        self._release = asyncio.Event()

    async def aclose(self) -> None:
        await self.stop()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> CountingProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        query: bytes = scope.get("query_string", b"")
        if path.startswith("/xrpc/"):
            method = path[len("/xrpc/") :]
            self.calls[method] += 1
            collection = parse_qs(query.decode()).get("collection", [""])[0]
            if collection:
                self.by_collection[(method, collection)] += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append((scope["method"], path, len(body)))
        if self.mode == "hang":
            await self._release.wait()
        if self.mode != "up" or self._client is None:
            await self._respond(send, 503, b'{"error":"Unavailable","message":"proxy is down"}')
            return
        headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k.decode().lower() not in _HOP]
        url = path + ("?" + query.decode() if query else "")
        resp = await self._client.request(scope["method"], url, headers=headers, content=body)
        out_headers = [
            (k.encode(), v.encode()) for k, v in resp.headers.items() if k.lower() not in _HOP | {"content-encoding"}
        ]
        await send({"type": "http.response.start", "status": resp.status_code, "headers": out_headers})
        await send({"type": "http.response.body", "body": resp.content})

    @staticmethod
    async def _respond(send: Any, status: int, body: bytes) -> None:
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": body})
