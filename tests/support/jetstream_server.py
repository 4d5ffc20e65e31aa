"""A Jetstream v1 wire test double, fed by real `subscribeRepos` firehoses (TEST-NETWORK.md).

No Jetstream server can run here, so this plays one, the way moto plays S3: it follows the
local PDS's firehose (and a hold's) from seq 0, turns each commit op, identity and account
event into v1 JSON (decoded with the SDK, not with the code under test), stamps each with a
unique, increasing ``time_us`` and keeps them in a buffer. Clients get the v1 wire:

* ``/subscribe`` with ``wantedCollections`` (full NSIDs or ``prefix.*``), ``wantedDids``,
  ``cursor`` (unix microseconds; replays the buffer; a cursor older than the buffer is
  clamped silently, as v1 does), ``maxMessageSizeBytes``, ``requireHello`` and the
  ``options_update`` client message (invalid JSON disconnects, unknown types are ignored);
  identity and account events bypass ``wantedCollections`` but respect ``wantedDids``;
* ``/xrpc/com.atproto.sync.listReposByCollection``: the relay call backfill uses, answered
  from what the firehose showed (DIDs with at least one record in the collection).

Test controls: `inject` (raw or crafted events, for duplicates, out-of-order and malformed
input), `drop_connections` (a failover), `forget_before` (the lookback window passing),
`pause`/`resume` of the upstream feed. The server runs in its own thread and event loop, so
sync tests, async tests and subprocess consumers can all use one instance.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from atproto_core.car import CAR
from atproto_core.cid import CID
from atproto_subscription.frames import Frame
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from atcr.tasks import cancel_and_wait


def _to_json_model(value: Any) -> Any:
    """libipld gives links and bytes both as bytes: a 36-byte CIDv1 is read as a link."""
    if isinstance(value, dict):
        return {k: _to_json_model(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_json_model(v) for v in value]
    if isinstance(value, bytes):
        if len(value) == 36 and value[0] == 1:
            with contextlib.suppress(Exception):
                return {"$link": str(CID.decode(value))}
        return {"$bytes": base64.b64encode(value).decode().rstrip("=")}
    return value


def _iso_us(value: str | None) -> int | None:
    if not value:
        return None
    from datetime import datetime

    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1_000_000)


@dataclass
class Buffered:
    time_us: int
    did: str
    collection: str | None  # None: identity/account (bypass wantedCollections)
    text: str
    size: int = 0


@dataclass(eq=False)
class _Client:
    conn: ServerConnection
    collections: tuple[str, ...] = ()
    dids: frozenset[str] = frozenset()
    max_size: int = 0
    hello: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, ev: Buffered) -> bool:
        if self.dids and ev.did not in self.dids:
            return False
        if self.max_size > 0 and ev.size > self.max_size:
            return False
        if ev.collection is None or not self.collections:
            return True
        for want in self.collections:
            if want.endswith(".*") and ev.collection.startswith(want[:-1]):
                return True
            if ev.collection == want:
                return True
        return False


def _max_size(raw: str | None) -> int:
    try:
        return max(0, int(raw or "0"))
    except ValueError:
        return 0  # garbage: no cap, as v1 does


class JetstreamServer:
    """The test double. `start()` returns once it listens and follows every upstream."""

    def __init__(self, upstreams: Iterable[str] = (), *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstreams = [u.rstrip("/") for u in upstreams]
        self.host = host
        self.port = port
        self.buffer: list[Buffered] = []
        self.floor_us = 0  # events older than this are "past the lookback"
        self._base = 0  # absolute index of buffer[0] (forget_before drops a prefix)
        self.connections_total = 0
        self.hellos: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self._repos: dict[tuple[str, str], set[str]] = {}  # (collection, did) -> rkeys
        self._last_us = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: Server | None = None
        self._cond: asyncio.Condition | None = None
        self._clients: set[_Client] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._paused = threading.Event()
        self._paused.set()  # set = running
        self._seq: dict[str, int] = {}
        self._ready = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle (called from any thread) ------------------------------------------------------

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/subscribe"

    @property
    def relay_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> JetstreamServer:
        self._thread = threading.Thread(target=self._run_loop, name="jetstream-test-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("jetstream test server did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> JetstreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        loop.run_until_complete(self._startup())
        self._ready.set()
        loop.run_forever()
        # Finish every connection handler here: a coroutine left for the garbage collector
        # runs its cleanup at a random later moment, in whatever the main thread is doing.
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        loop.run_until_complete(cancel_and_wait(*pending))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()

    async def _startup(self) -> None:
        self._cond = asyncio.Condition()
        self._server = await serve(
            self._handle, self.host, self.port, process_request=self._http, max_size=2**20, compression=None
        )
        sock = next(iter(self._server.sockets))
        self.port = int(sock.getsockname()[1])
        for up in self.upstreams:
            self._tasks.append(asyncio.create_task(self._follow(up)))

    async def _shutdown(self) -> None:
        await cancel_and_wait(*self._tasks)
        for client in list(self._clients):
            client.conn.transport.abort()
        await cancel_and_wait(*(t for t in asyncio.all_tasks() if t is not asyncio.current_task()))
        if self._server is not None:
            self._server.close(close_connections=False)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _call(self, fn: Callable[[], Any]) -> Any:
        assert self._loop is not None

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # -- controls ----------------------------------------------------------------------------------

    def now_us(self) -> int:
        with self._lock:
            self._last_us = max(time.time_ns() // 1000, self._last_us + 1)
            return self._last_us

    def inject(self, event: dict[str, Any] | str, *, time_us: int | None = None, did: str = "did:plc:x") -> int:
        """Append one event (a dict is stamped with `time_us`; a string is sent verbatim)."""
        t = time_us if time_us is not None else self.now_us()
        if isinstance(event, dict):
            event = {**event, "time_us": t}
            collection = (event.get("commit") or {}).get("collection") if event.get("kind") == "commit" else None
            text = json.dumps(event)
            did = str(event.get("did") or did)
        else:
            collection, text = None, event
        self._call(lambda: self._append(Buffered(t, did, collection, text, len(text.encode()))))
        return t

    def drop_connections(self) -> None:
        """Cut every client connection (the consumer must reconnect and resume).

        The TCP connection is aborted rather than closed with a handshake: the client may
        live in the very event loop that is blocked in this call.
        """

        def abort_all() -> None:
            for client in list(self._clients):
                client.conn.transport.abort()

        self._call(abort_all)

    def forget_before(self, time_us: int) -> None:
        """Drop buffered events older than `time_us`: older cursors are now clamped."""

        def cut() -> None:
            self.floor_us = time_us
            n = 0
            while n < len(self.buffer) and self.buffer[n].time_us < time_us:
                n += 1
            del self.buffer[:n]
            self._base += n

        self._call(cut)

    def pause(self) -> None:
        """Hold upstream events (they are buffered once resumed)."""
        self._paused.clear()

    def resume(self) -> None:
        self._paused.set()

    def events(self, did: str | None = None, collection: str | None = None) -> list[dict[str, Any]]:
        out = []
        for e in list(self.buffer):
            if did is not None and e.did != did:
                continue
            if collection is not None and e.collection != collection:
                continue
            with contextlib.suppress(ValueError):
                out.append(json.loads(e.text))
        return out

    def wait_for(self, predicate: Callable[[JetstreamServer], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise TimeoutError("jetstream test server: condition not met")
            time.sleep(0.02)

    # -- ingest ----------------------------------------------------------------------------------

    def _append(self, ev: Buffered) -> None:
        self.buffer.append(ev)
        assert self._cond is not None

        async def notify() -> None:
            assert self._cond is not None
            async with self._cond:
                self._cond.notify_all()

        asyncio.get_running_loop().create_task(notify())

    async def _follow(self, upstream: str) -> None:
        ws_url = upstream.replace("http://", "ws://").replace("https://", "wss://")
        while True:
            cursor = self._seq.get(upstream, 0)
            try:
                async with connect(
                    f"{ws_url}/xrpc/com.atproto.sync.subscribeRepos?cursor={cursor}", max_size=None, proxy=None
                ) as ws:
                    async for frame in ws:
                        while not self._paused.is_set():
                            await asyncio.sleep(0.02)
                        if isinstance(frame, bytes):
                            self._ingest(upstream, frame)
            except (OSError, ConnectionClosed):
                pass
            await asyncio.sleep(0.2)

    def _ingest(self, upstream: str, frame: bytes) -> None:
        parsed = Frame.from_bytes(frame)
        if not parsed.is_message:
            return
        body = parsed.body
        assert isinstance(body, dict)
        kind = parsed.header.t  # type: ignore[union-attr]
        seq = body.get("seq")
        if isinstance(seq, int):
            self._seq[upstream] = seq
        if kind == "#commit":
            did = body["repo"]
            blocks = CAR.from_bytes(body["blocks"]).blocks if body.get("blocks") else {}
            by_cid = {str(cid): block for cid, block in blocks.items()}
            for op in body.get("ops") or []:
                collection, _, rkey = op["path"].partition("/")
                commit: dict[str, Any] = {
                    "rev": body["rev"],
                    "operation": op["action"],
                    "collection": collection,
                    "rkey": rkey,
                }
                if op["action"] in ("create", "update"):
                    cid = str(CID.decode(op["cid"]))
                    commit["cid"] = cid
                    commit["record"] = _to_json_model(by_cid.get(cid, {}))
                    self._repos.setdefault((collection, did), set()).add(rkey)
                else:
                    self._repos.get((collection, did), set()).discard(rkey)
                self._emit({"did": did, "kind": "commit", "commit": commit}, did, collection)
        elif kind in ("#identity", "#account"):
            did = body["did"]
            payload = {k: v for k, v in body.items() if k in ("did", "seq", "time", "handle", "active", "status")}
            name = kind[1:]
            self._emit({"did": did, "kind": name, name: payload}, did, None)

    def _emit(self, event: dict[str, Any], did: str, collection: str | None) -> None:
        t = self.now_us()
        text = json.dumps({**event, "time_us": t})
        self._append(Buffered(t, did, collection, text, len(text.encode())))

    # -- serving -----------------------------------------------------------------------------------

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        self.requests.append(request.path)
        if parts.path == "/subscribe":
            return None
        if parts.path == "/xrpc/com.atproto.sync.listReposByCollection":
            q = parse_qs(parts.query)
            collection = (q.get("collection") or [""])[0]
            limit = int((q.get("limit") or ["500"])[0])
            after = (q.get("cursor") or [""])[0]
            dids = sorted(d for (c, d), rkeys in self._repos.items() if c == collection and rkeys and d > after)
            page = dids[:limit]
            body: dict[str, Any] = {"repos": [{"did": d} for d in page]}
            if len(dids) > limit:
                body["cursor"] = page[-1]
            return self._json(HTTPStatus.OK, body)
        return self._json(HTTPStatus.NOT_FOUND, {"error": "NotFound", "message": parts.path})

    @staticmethod
    def _json(status: HTTPStatus, body: dict[str, Any]) -> Response:
        data = json.dumps(body).encode()
        # websockets answers one plain HTTP request per connection: tell the client so.
        headers = Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(data))), ("Connection", "close")]
        )
        return Response(status.value, status.phrase, headers, data)

    async def _handle(self, conn: ServerConnection) -> None:
        self.connections_total += 1
        q = parse_qs(urlsplit(conn.request.path if conn.request else "").query)
        client = _Client(
            conn,
            collections=tuple(q.get("wantedCollections", [])),
            dids=frozenset(q.get("wantedDids", [])),
            max_size=_max_size((q.get("maxMessageSizeBytes") or [None])[0]),
        )
        if (q.get("requireHello") or [""])[0].lower() != "true":
            client.hello.set()
        cursor_raw = (q.get("cursor") or [None])[0]
        cursor: int | None = None
        with contextlib.suppress(TypeError, ValueError):
            cursor = int(cursor_raw)  # type: ignore[arg-type]
        self._clients.add(client)
        reader = asyncio.create_task(self._read_client(client))
        try:
            await client.hello.wait()
            # `index` is absolute (buffer[0] is self._base), so forget_before cannot shift it.
            if cursor is None or cursor <= 0:
                index = self._base + len(self.buffer)
            else:
                start = max(cursor, self.floor_us)  # v1 clamps an old cursor silently
                rel = next((i for i, e in enumerate(self.buffer) if e.time_us >= start), len(self.buffer))
                index = self._base + rel
            assert self._cond is not None
            while True:
                index = max(index, self._base)
                while index < self._base + len(self.buffer):
                    ev = self.buffer[index - self._base]
                    index += 1
                    if client.wants(ev):
                        await conn.send(ev.text)
                async with self._cond:
                    if index >= self._base + len(self.buffer):
                        await self._cond.wait()
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            self._clients.discard(client)

    async def _read_client(self, client: _Client) -> None:
        try:
            async for message in client.conn:
                try:
                    obj = json.loads(message)
                except ValueError:
                    await client.conn.close(1008, "invalid options_update")
                    return
                if not isinstance(obj, dict) or obj.get("type") != "options_update":
                    continue
                payload = obj.get("payload") or {}
                self.hellos.append(payload)
                client.collections = tuple(payload.get("wantedCollections") or ())
                client.dids = frozenset(payload.get("wantedDids") or ())
                client.max_size = _max_size(str(payload.get("maxMessageSizeBytes") or "0"))
                client.hello.set()
        except ConnectionClosed:
            pass
