"""Stream sources: Jetstream v1 (`/subscribe`, JSON) and the raw firehose (`subscribeRepos`).

A source owns its connection: it connects, reads, turns frames into normalized events and
hands them to the consumer's queue as `Delivery` values. When the connection fails it
reconnects by itself, with exponential backoff and jitter, moving to the next URL of its
list, and resumes from its own position (the last event it read). It never raises for a
network failure or a bad message: those are counted, logged once per streak, and survived.

The queue is bounded, so a slow processor pauses reading, and TCP pushes back on the server
instead of this process buffering without limit.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from atcr.http import USER_AGENT
from jetstream.errors import MalformedEvent, SourceError, StreamRefused
from jetstream.events import CommitEvent, Event, parse_jetstream, wants_collection
from jetstream.firehose import CommitVerifier, parse_frame

# Jitter only (not security): a private generator, so the global one (which tests and
# libraries seed or watch) is never touched from background threads.
_jitter = random.Random()  # noqa: S311

log = logging.getLogger("jetstream.source")

STABLE_AFTER = 10.0
"""Seconds a connection must stay up (or deliver an event) before the backoff starts over."""

POSITION_EVERY = 1.0
"""Seconds between cursor-only deliveries when a firehose sends nothing we keep."""


@dataclass
class Delivery:
    """Events from one source, and the position (cursor) reached once they are applied."""

    source: str
    events: list[Event]
    position: int | None
    gap: bool = False  # events before this delivery were skipped by the server
    resync: list[str] = field(default_factory=list)  # DIDs whose records must be listed again


@dataclass
class SourceStatus:
    """What `/status` shows of one source."""

    name: str
    kind: str
    urls: tuple[str, ...]
    url: str | None = None
    connected: bool = False
    connected_since: float | None = None
    reconnects: int = 0
    failures_in_row: int = 0
    last_error: str | None = None
    next_retry_in: float | None = None
    position: int | None = None
    malformed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "url": self.url,
            "urls": list(self.urls),
            "connected": self.connected,
            "connected_since": self.connected_since,
            "reconnects": self.reconnects,
            "failures_in_row": self.failures_in_row,
            "last_error": self.last_error,
            "next_retry_in": self.next_retry_in,
            "position": self.position,
            "malformed": self.malformed,
        }


class Backoff:
    """Exponential delays with "equal jitter": half fixed, half random, capped."""

    def __init__(self, base: float, cap: float, rng: Callable[[], float] | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or _jitter.random

    def next(self) -> float:
        delay = min(self.cap, self.base * float(2**self.attempt))
        self.attempt = min(self.attempt + 1, 62)
        return delay / 2 + self._rng() * delay / 2

    def short(self) -> float:
        """A delay below the base: for moving on to the next URL of a list."""
        return self.base * self._rng()

    def reset(self) -> None:
        self.attempt = 0


PositionLoader = Callable[[], Awaitable[int | None]]
MalformedHook = Callable[[str, MalformedEvent], None]


class Source(abc.ABC):
    """The reconnect loop shared by both kinds of source."""

    kind = "source"

    def __init__(
        self,
        name: str,
        urls: Sequence[str],
        *,
        load_position: PositionLoader,
        backoff_min: float,
        backoff_max: float,
        on_malformed: MalformedHook | None = None,
        on_connection_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        if not urls:
            raise SourceError(f"{name}: no URLs")
        self.name = name
        self.urls = tuple(urls)
        self.status = SourceStatus(name=name, kind=self.kind, urls=self.urls)
        self._load_position = load_position
        self._backoff = Backoff(backoff_min, backoff_max)
        self._on_malformed = on_malformed
        self._on_connection_change = on_connection_change
        self._index = 0
        self._position: int | None = None  # where to resume: newest position read (maybe not applied)
        self._seen: int | None = None  # newest position an event (or the saved cursor) vouches for
        self._position_loaded = False
        self._ws: ClientConnection | None = None

    # -- to be provided by each kind --------------------------------------------------------

    @abc.abstractmethod
    def connect_url(self, base: str, position: int | None) -> str:
        """The URL to open for `base`, resuming at `position`."""

    async def on_open(self, ws: ClientConnection) -> None:  # noqa: B027 - optional hook, not abstract
        """Called once the stream is open (Jetstream sends its hello here)."""

    @abc.abstractmethod
    async def read(self, ws: ClientConnection, out: asyncio.Queue[Delivery], seen: int | None) -> None:
        """Read until the stream ends. `seen` is the newest position an event vouched for
        before this connection (None on a first start): what a gap is measured from."""

    max_size: int = 1024 * 1024

    # -- the loop -----------------------------------------------------------------------------

    async def start_position(self) -> int | None:
        if not self._position_loaded:
            self._position = self._seen = await self._load_position()
            self._position_loaded = True
        return self._position

    def _malformed(self, exc: MalformedEvent) -> None:
        self.status.malformed += 1
        log.warning("%s: skipped a malformed event: %s", self.name, exc)
        if self._on_malformed is not None:
            self._on_malformed(self.name, exc)

    def _set_connected(self, connected: bool) -> None:
        self.status.connected = connected
        self.status.connected_since = time.time() if connected else None
        if self._on_connection_change is not None:
            self._on_connection_change(self.name, connected)

    async def run(self, out: asyncio.Queue[Delivery]) -> None:
        """Connect, read and reconnect until cancelled."""
        while True:
            url = self.urls[self._index]
            opened_at: float | None = None
            try:
                position = await self.start_position()
                vouched = self._seen
                target = self.connect_url(url, position)
                async with connect(
                    target,
                    max_size=self.max_size,
                    open_timeout=10,
                    ping_interval=20,
                    ping_timeout=30,
                    close_timeout=2,
                    user_agent_header=USER_AGENT,
                    proxy=None,
                ) as ws:
                    opened_at = time.monotonic()
                    self._ws = ws
                    self.status.url = url
                    self.status.next_retry_in = None
                    self._set_connected(True)
                    log.info("%s: connected to %s (cursor %s)", self.name, url, position)
                    await self.on_open(ws)
                    await self.read(ws, out, vouched)
                raise SourceError("the server closed the stream")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure means "reconnect"; the kind is reported
                reason = describe(exc)
            finally:
                self._ws = None
                if self.status.connected:
                    self._set_connected(False)
            if opened_at is not None and time.monotonic() - opened_at >= STABLE_AFTER:
                self.note_event()
            self.status.reconnects += 1
            self.status.failures_in_row += 1
            self.status.last_error = reason
            # Try every URL once before waiting long: a dead instance should cost one short delay.
            self._index = (self._index + 1) % len(self.urls)
            full_round = self.status.failures_in_row % len(self.urls) == 0
            delay = self._backoff.next() if full_round or len(self.urls) == 1 else self._backoff.short()
            self.status.next_retry_in = round(delay, 2)
            streak = self.status.failures_in_row
            level = logging.WARNING if streak == 1 else logging.INFO if streak % 10 == 0 else logging.DEBUG
            log.log(level, "%s: %s: %s; retrying in %.1fs (failure %d in a row)", self.name, url, reason, delay, streak)
            await asyncio.sleep(delay)

    def note_event(self) -> None:
        """A delivered event (or a long-lived connection) proves the connection works: the
        next failure starts a new streak with the shortest delay."""
        self._backoff.reset()
        self.status.failures_in_row = 0


def describe(exc: BaseException) -> str:
    """One line for a connection failure; never a traceback (failing offline is normal in dev)."""
    if isinstance(exc, InvalidStatus):
        return f"server answered HTTP {exc.response.status_code}"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else None
        if code == 1009:
            return "message too large (closed with 1009)"
        return f"connection closed ({code})" if code else "connection lost"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    if isinstance(exc, WebSocketException | SourceError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


# --- Jetstream ------------------------------------------------------------------------------


class JetstreamSource(Source):
    """Jetstream v1: `wantedCollections`, `wantedDids`, cursor in unix microseconds.

    The cursor means the same on every instance, so failover just reconnects elsewhere with
    the same cursor, rewound by `rewind_us` to cover events the old instance sent but this
    process had not yet read. A first event much newer than the cursor means the instance
    clamped an old cursor to its lookback window: the delivery is flagged as a gap.
    """

    kind = "jetstream"

    def __init__(
        self,
        urls: Sequence[str],
        *,
        load_position: PositionLoader,
        collections: Sequence[str],
        dids: Sequence[str] = (),
        max_message_bytes: int,
        rewind_us: int,
        gap_us: int,
        backoff_min: float,
        backoff_max: float,
        name: str = "jetstream",
        on_malformed: MalformedHook | None = None,
        on_connection_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        super().__init__(
            name,
            urls,
            load_position=load_position,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            on_malformed=on_malformed,
            on_connection_change=on_connection_change,
        )
        self.collections = tuple(collections)
        self.dids = tuple(dids)
        self.max_message_bytes = max_message_bytes
        # The server drops events above its cap; ours only has to fit the envelope around it.
        self.max_size = max_message_bytes + 64 * 1024
        self.rewind_us = rewind_us
        self.gap_us = gap_us

    def connect_url(self, base: str, position: int | None) -> str:
        params: list[tuple[str, str]] = [("wantedCollections", c) for c in self.collections]
        params.append(("maxMessageSizeBytes", str(self.max_message_bytes)))
        params.append(("requireHello", "true"))
        if position is not None:
            params.append(("cursor", str(max(0, position - self.rewind_us))))
        parts = urlsplit(base)
        return urlunsplit((parts.scheme, parts.netloc, parts.path or "/subscribe", urlencode(params), ""))

    def options_update(self) -> str:
        return json.dumps(
            {
                "type": "options_update",
                "payload": {
                    "wantedCollections": list(self.collections),
                    "wantedDids": list(self.dids),
                    "maxMessageSizeBytes": self.max_message_bytes,
                },
            }
        )

    async def on_open(self, ws: ClientConnection) -> None:
        if self._position is None:
            # Live from now: if this connection drops before its first event, the next one
            # must resume from here, not from "now" again, or the events between are lost.
            self._position = time.time_ns() // 1000
        # requireHello: nothing flows until the filter arrives, so filters computed after
        # connecting (or too long for a URL, e.g. thousands of DIDs) lose no events.
        await ws.send(self.options_update())

    async def set_filter(self, collections: Sequence[str] | None = None, dids: Sequence[str] | None = None) -> None:
        """Change what the stream sends, on the open connection (and on every later one)."""
        if collections is not None:
            self.collections = tuple(collections)
        if dids is not None:
            self.dids = tuple(dids)
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await ws.send(self.options_update())

    async def read(self, ws: ClientConnection, out: asyncio.Queue[Delivery], seen: int | None) -> None:
        first = True
        dids = frozenset(self.dids)
        async for message in ws:
            try:
                event = parse_jetstream(message)
            except MalformedEvent as exc:
                self._malformed(exc)
                continue
            if event is None:
                continue
            gap = False
            if first:
                first = False
                self.note_event()
                if seen is not None and event.time_us > seen + self.gap_us:
                    gap = True
                    log.warning(
                        "%s: first event is %.0fs newer than the cursor: events were skipped",
                        self.name,
                        (event.time_us - seen) / 1e6,
                    )
            if isinstance(event, CommitEvent) and not wants_collection(event.collection, self.collections):
                continue  # a server that ignored the filter
            if dids and event.did not in dids:
                continue
            if self._position is None or event.time_us > self._position:
                self._position = event.time_us
            if self._seen is None or event.time_us > self._seen:
                self._seen = event.time_us
            self.status.position = self._position
            await out.put(Delivery(self.name, [event], event.time_us, gap=gap))


# --- firehose -------------------------------------------------------------------------------


def firehose_url(base: str) -> str:
    """`https://host` or `wss://host/...` -> the subscribeRepos endpoint on that host."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if not path.endswith("/xrpc/com.atproto.sync.subscribeRepos"):
        path = "/xrpc/com.atproto.sync.subscribeRepos"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def firehose_source_name(url: str) -> str:
    """`fh:<host:port>`: the firehose's status name and the key of its cursor."""
    return f"fh:{urlsplit(firehose_url(url)).netloc}"


class FirehoseSource(Source):
    """`com.atproto.sync.subscribeRepos` of one host (a relay, a PDS or a hold).

    Positions are the host's sequence numbers. With a verifier, a commit whose signature or
    MST proof fails is dropped (and counted as malformed), never applied.
    """

    kind = "firehose"

    def __init__(
        self,
        url: str,
        *,
        load_position: PositionLoader,
        collections: Sequence[str],
        dids: Sequence[str] = (),
        max_message_bytes: int,
        backoff_min: float,
        backoff_max: float,
        verifier: CommitVerifier | None = None,
        on_malformed: MalformedHook | None = None,
        on_connection_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        endpoint = firehose_url(url)
        super().__init__(
            firehose_source_name(url),
            [endpoint],
            load_position=load_position,
            backoff_min=backoff_min,
            backoff_max=backoff_max,
            on_malformed=on_malformed,
            on_connection_change=on_connection_change,
        )
        self.collections = tuple(collections)
        self.dids = frozenset(dids)
        self.max_size = max_message_bytes
        self.verifier = verifier

    def connect_url(self, base: str, position: int | None) -> str:
        return base if position is None else f"{base}?{urlencode({'cursor': position})}"

    async def read(self, ws: ClientConnection, out: asyncio.Queue[Delivery], seen: int | None) -> None:
        last_sent = time.monotonic()
        async for frame in ws:
            if isinstance(frame, str):
                self._malformed(MalformedEvent("text frame on a binary stream"))
                continue
            try:
                msg = parse_frame(frame, self.collections, self.dids)
                if msg.proof is not None and self.verifier is not None and msg.events:
                    await self.verifier.verify(msg.proof)
            except StreamRefused:
                raise
            except MalformedEvent as exc:
                self._malformed(exc)
                continue
            if msg.seq is not None:
                self._position = self._seen = msg.seq
                self.status.position = msg.seq
            if msg.outdated_cursor:
                log.warning("%s: the host no longer has events since our cursor: events were skipped", self.name)
            now = time.monotonic()
            if msg.events or msg.resync or msg.outdated_cursor or now - last_sent >= POSITION_EVERY:
                if msg.events:
                    self.note_event()
                last_sent = now
                await out.put(
                    Delivery(
                        self.name,
                        msg.events,
                        msg.seq,
                        gap=msg.outdated_cursor,
                        resync=[msg.resync] if msg.resync else [],
                    )
                )
