"""`com.atproto.sync.subscribeRepos` framing and cursor semantics, independent of HTTP.

A frame is two DAG-CBOR values back to back: a header (`{op: 1, t: "#commit"}`, or
`{op: -1}` for an error) and a body. Frames are built once, when the commit is written, and
stored whole in the event log, so a replay after a restart sends the same bytes the live
stream sent.

Cursor rules follow the reference PDS: no cursor means "from now on"; a cursor is the last seq
the client has seen; a cursor older than the retained log gets an `#info` frame with
`OutdatedCursor` and then everything that is left; a cursor from the future is an error
frame (`FutureCursor`) and the end of the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

from atcr.dagcbor import encode

REPLAY_BATCH = 200


def message_frame(kind: str, body: Mapping[str, Any]) -> bytes:
    """A message frame; `kind` is the body's short type (`#commit`, `#identity`, `#info` ...)."""
    return encode({"op": 1, "t": kind}) + encode(body)


def error_frame(error: str, message: str | None = None) -> bytes:
    body: dict[str, Any] = {"error": error}
    if message:
        body["message"] = message
    return encode({"op": -1}) + encode(body)


def outdated_cursor_frame() -> bytes:
    return message_frame(
        "#info", {"name": "OutdatedCursor", "message": "Requested cursor exceeded limit. Possibly missing events"}
    )


class EventSource(Protocol):
    """What the stream needs from the repository's event log."""

    @property
    def first_seq(self) -> int: ...

    @property
    def last_seq(self) -> int: ...

    async def events_after(self, after: int, limit: int = REPLAY_BATCH) -> list[tuple[int, bytes]]: ...

    async def wait_for_events(self, after: int) -> bool: ...


async def subscribe_frames(log: EventSource, cursor: int | None) -> AsyncIterator[bytes]:
    """Every frame the client should get, in order: replay from `cursor`, then live, forever.

    Ends when the log closes (the repository shuts down) or after a FutureCursor error frame.
    Backpressure is natural: the next batch is read only after the caller has sent the last
    one, so a slow client costs a database read, never an unbounded queue.
    """
    if cursor is None:
        after = log.last_seq
    elif cursor > log.last_seq:
        yield error_frame("FutureCursor", "Cursor in the future.")
        return
    elif cursor < log.first_seq - 1:
        yield outdated_cursor_frame()
        after = log.first_seq - 1
    else:
        after = cursor
    while True:
        batch = await log.events_after(after)
        if not batch:
            if not await log.wait_for_events(after):
                return
            continue
        if batch[0][0] != after + 1:
            # Events were pruned while this client was still replaying them.
            yield outdated_cursor_frame()
        for seq, frame in batch:
            yield frame
            after = seq
