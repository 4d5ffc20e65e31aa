"""A reverse proxy on 127.0.0.1, in its own thread, that injects faults for reliability tests.

It stands in front of a real service (moto S3, the PDS, a hold, the PLC directory, two
AppView replicas) and lets a synchronous test decide, request by request, what happens:

* forward (the default), round-robin over several upstreams (a load balancer);
* answer an error at once (``Rule(status=503, body=...)``), e.g. S3 ``SlowDown``;
* hang until released or for ``delay`` seconds (a dead or slow server);
* forward and then *lose the answer* (``lose_answer=True``: the upstream did the work, the
  client sees a 502), the ambiguous failure that makes retries double-count;
* stop listening (``stop()``: connection refused) and start again on the same port.

Rules match on a predicate over the request; ``times`` bounds how often a rule fires.
``rewrite`` may change an upstream's answer (a PLC document pointing at a proxied PDS).
Every request is counted by ``(method, path)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from tests.support.services import free_port

_HOP = {
    "host", "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection",
    "content-length", "expect",
}


@dataclass(frozen=True)
class Req:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Rule:
    match: Callable[[Req], bool]
    status: int | None = None  # answer this at once (unless lose_answer)
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # wait until released (or `delay` seconds), then answer 503
    delay: float = 0.0  # wait this long, then go on (forward, or answer `status`)
    lose_answer: bool = False  # forward, then answer 502 instead of the upstream's answer
    times: int | None = None  # fire at most this often
    respond: Callable[[Req], tuple[int, dict[str, str], bytes]] | None = None  # answer computed per request
    hits: int = 0


Rewrite = Callable[[Req, int, list[tuple[str, str]], bytes], bytes]


class _Server(uvicorn.Server):
    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


class FaultProxy:
    def __init__(self, upstreams: str | list[str], *, port: int | None = None, rewrite: Rewrite | None = None) -> None:
        ups = [upstreams] if isinstance(upstreams, str) else list(upstreams)
        self.upstreams = [u.rstrip("/") for u in ups]
        self._cycle = itertools.cycle(range(len(self.upstreams)))
        self.port = port or free_port()
        self.rewrite = rewrite
        self.rules: list[Rule] = []
        self.seen: Counter[tuple[str, str]] = Counter()
        self.answered: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._release: asyncio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- control (from the test's thread) ---------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
        self.release()

    def fail_all(self, status: int = 503, body: bytes = b'{"error":"Unavailable","message":"proxy says down"}') -> Rule:
        return self.add(Rule(lambda _r: True, status=status, body=body, headers={"content-type": "application/json"}))

    def hang_all(self) -> Rule:
        return self.add(Rule(lambda _r: True, hang=True))

    def release(self) -> None:
        """Let hanging requests go (they answer 503)."""
        loop, ev = self._loop, self._release
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)

    def count(self, method: str | None = None, prefix: str = "") -> int:
        with self._lock:
            return sum(n for (m, p), n in self.seen.items() if (method is None or m == method) and p.startswith(prefix))

    def reset_counts(self) -> None:
        with self._lock:
            self.seen.clear()
            self.answered.clear()

    def start(self) -> FaultProxy:
        if self._thread is not None:
            return self
        self._started.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"faultproxy-{self.port}", daemon=True)
        self._thread.start()
        if not self._started.wait(15):
            raise RuntimeError(f"fault proxy on {self.port} did not start: {self._error!r}")
        if self._error is not None:
            raise RuntimeError(f"fault proxy on {self.port} failed: {self._error!r}")
        return self

    def stop(self) -> None:
        """Close the port (clients get connection refused); `start()` reopens it."""
        self.release()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
        self._thread = None
        self._server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the server (in its own thread and loop) --------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._started.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._release = asyncio.Event()
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=100)
        # A proxy must not keep cookies: a jar would hand one client's cookies to the next.
        jar = http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self._client = httpx.AsyncClient(timeout=120.0, trust_env=False, limits=limits, cookies=jar)
        config = uvicorn.Config(
            self._app, host="127.0.0.1", port=self.port, log_config=None, log_level="error", lifespan="off",
            access_log=False, timeout_graceful_shutdown=1, backlog=2048, interface="asgi3", proxy_headers=False, server_header=False, date_header=False,
        )
        self._server = _Server(config)
        watcher = asyncio.create_task(self._announce())
        try:
            await self._server.serve()
        finally:
            watcher.cancel()
            await self._client.aclose()
            self._started.set()

    async def _announce(self) -> None:
        while self._server is not None and not self._server.started:
            await asyncio.sleep(0.01)
        self._started.set()

    def _pick(self, req: Req) -> Rule | None:
        with self._lock:
            self.seen[(req.method, req.path)] += 1
            for rule in self.rules:
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                if rule.match(req):
                    rule.hits += 1
                    return rule
        return None

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        req = Req(scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"), headers, body)
        rule = self._pick(req)
        if rule is not None:
            if rule.hang:
                assert self._release is not None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._release.wait(), timeout=rule.delay or None)
                await self._respond(send, 503, b'{"error":"Unavailable"}', {"content-type": "application/json"})
                return
            if rule.delay:
                await asyncio.sleep(rule.delay)
            if rule.respond is not None:
                status, headers, content = rule.respond(req)
                await self._respond(send, status, content, headers, head=req.method == "HEAD")
                return
            if rule.status is not None and not rule.lose_answer:
                await self._respond(send, rule.status, rule.body, rule.headers, head=req.method == "HEAD")
                return
        status, out_headers, content = await self._forward(req, scope)
        if rule is not None and rule.lose_answer:
            await self._respond(send, 502, b"upstream answer lost", {"content-type": "text/plain"})
            return
        await self._respond(send, status, content, out_headers, head=req.method == "HEAD")

    async def _forward(self, req: Req, scope: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        upstream = self.upstreams[next(self._cycle)]
        url = upstream + scope.get("raw_path", req.path.encode()).decode("latin-1")
        if req.query:
            url += "?" + req.query
        fwd = [(k, v) for k, v in req.headers.items() if k not in _HOP]
        try:
            resp = await self._client.request(req.method, url, headers=fwd, content=req.body or None)
        except httpx.HTTPError as exc:
            return 502, [("content-type", "text/plain")], f"bad gateway: {type(exc).__name__}".encode()
        # multi_items: several Set-Cookie headers must stay several headers.
        out = [(k.lower(), v) for k, v in resp.headers.multi_items() if k.lower() not in _HOP | {"content-encoding"}]
        content = resp.content
        if req.method == "HEAD" and "content-length" in resp.headers:
            out.append(("content-length", resp.headers["content-length"]))
        if self.rewrite is not None:
            content = self.rewrite(req, resp.status_code, out, content)
        return resp.status_code, out, content

    async def _respond(
        self, send: Any, status: int, body: bytes, headers: dict[str, str] | list[tuple[str, str]], *,
        head: bool = False,
    ) -> None:
        with self._lock:
            self.answered[status] += 1
        hdrs = [(k.lower(), v) for k, v in (headers.items() if isinstance(headers, dict) else headers)]
        if not head or not any(k == "content-length" for k, _ in hdrs):
            hdrs = [(k, v) for k, v in hdrs if k != "content-length"] + [("content-length", str(len(body)))]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hdrs],
            }
        )
        await send({"type": "http.response.body", "body": b"" if head else body})


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll until `predicate()` holds; returns the seconds it took."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(interval)
    return time.monotonic() - started


__all__ = ["FaultProxy", "Req", "Rule", "wait_until"]
