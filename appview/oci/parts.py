"""Cutting a blob upload into hold parts while its bytes arrive.

Holds store a blob as a multipart upload whose parts must be at least 5 MiB (S3's minimum)
except the last. Buffering each whole part before sending it made every part wait for its last
byte, and the end of each request wait for a full part to cross a second network leg. Instead,
a part is opened as soon as `stream_after` bytes (the 5 MiB minimum) are buffered, and from then
on each chunk is passed to the hold as it arrives, until the part is full or the request body
ends. Only a request that never gathered the minimum leaves bytes over, for the caller to keep
(in Valkey) until more bytes or the end of the upload come.

A part that reaches `part_size` is closed only once `stream_after` more bytes have arrived
(enough to open the next part); if the body ends first, the full part takes those last bytes
too. So no request that opened a part leaves a remainder behind to wait in Valkey for the
closing PUT, and no part exceeds `part_size + stream_after` (well under the hold's 64 MiB).

Parts reach the hold strictly one after another (its running hash needs them in order); a part
whose request is still finishing overlaps only with buffering the next part's first bytes.
Memory per upload stays near `stream_after` plus a few chunks in flight, whatever the blob size.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from appview.errors import BlobUploadInvalid

PART_SIZE = 16 * 1024 * 1024  # a part is closed at this size; the hold accepts up to 64 MiB
STREAM_AFTER = 5 * 1024 * 1024  # S3's minimum part size: any part opened is at least this long
SLACK_CHUNKS = 8  # chunks (<= 256 KiB each from the server) queued ahead of the hold


class ByteQueue:
    """A byte queue that copies each byte once: chunks are kept as received and joined on take."""

    def __init__(self, initial: bytes = b"") -> None:
        self._chunks: collections.deque[bytes] = collections.deque([initial] if initial else [])
        self._size = len(initial)

    def __len__(self) -> int:
        return self._size

    def append(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._size += len(chunk)

    def take(self, n: int) -> bytes:
        """The first `n` bytes (n <= len)."""
        out: list[bytes] = []
        need = n
        while need:
            head = self._chunks[0]
            if len(head) <= need:
                out.append(self._chunks.popleft())
                need -= len(head)
            else:
                out.append(head[:need])
                self._chunks[0] = head[need:]
                need = 0
        self._size -= n
        return out[0] if len(out) == 1 else b"".join(out)


class OutgoingPart:
    """One part on its way to the hold: `body()` yields what the splitter feeds, in order."""

    def __init__(self, number: int, offset: int) -> None:
        self.number = number  # 1-based, counting the parts this splitter opened
        self.offset = offset  # where the part starts in the blob
        self.size = 0  # bytes fed so far; final once `body()` is exhausted
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(SLACK_CHUNKS)  # fed by the splitter only

    async def body(self) -> AsyncIterator[bytes]:
        while (chunk := await self.queue.get()) is not None:
            yield chunk


# Sends one part to the hold, reading `part.body()` to its end; raises when the hold refuses it.
PartSender = Callable[[OutgoingPart], Coroutine[Any, Any, None]]


class PartSplitter:
    """Feeds one request body into parts; `finish` returns the remainder the caller must keep.

    `send` runs as a task per part. Its failure surfaces from the next `feed` or `finish`, and
    `abort` cancels whatever is in flight (the hold then discards that part).
    """

    def __init__(
        self,
        send: PartSender,
        tail: bytes = b"",
        *,
        start: int = 0,
        part_size: int = PART_SIZE,
        stream_after: int = STREAM_AFTER,
    ) -> None:
        if not 0 < stream_after <= part_size:
            raise ValueError("need 0 < stream_after <= part_size")
        self._send = send
        self._buf = ByteQueue(tail)
        self._part_size = part_size
        self._stream_after = stream_after
        self._opened = 0
        self._next_offset = start  # where the next part begins in the blob (`start`: the tail's offset)
        self._open: tuple[OutgoingPart, asyncio.Task[None]] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def feed(self, chunk: bytes) -> None:
        if self._open is not None:
            room = self._part_size - self._open[0].size
            if room > 0:
                if len(chunk) <= room:
                    await self._put(chunk)
                    return
                await self._put(chunk[:room])
                chunk = chunk[room:]
        self._buf.append(chunk)
        await self._drain_buffer()

    async def finish(self, *, final: bool = False) -> bytes:
        """Close the open part and wait for every part; return the bytes not sent.

        With `final`, the remainder is sent too, as the upload's last part (which may be short).
        """
        await self._drain_buffer()  # a tail kept from before may already be long enough
        if self._open is not None:
            if len(self._buf):  # fewer than `stream_after` bytes: they ride with the full part
                await self._put(self._buf.take(len(self._buf)))
            await self._end_open()
        if final and len(self._buf):
            await self._start()
            await self._put(self._buf.take(len(self._buf)))
            await self._end_open()
        if self._closing is not None:
            closing, self._closing = self._closing, None
            await closing
        return self._buf.take(len(self._buf))

    async def abort(self) -> None:
        """Cancel the open part; a part already sent whole is still seen through.

        The open part is not kept: the hold discards a part whose request is cut. One whose
        last byte was sent only awaits the hold's answer, and keeping it moves the offset a
        resuming client is told about.
        """
        opened, closing = self._open, self._closing
        self._open = self._closing = None
        if opened is not None:
            opened[1].cancel()
            await asyncio.gather(opened[1], return_exceptions=True)
        if closing is not None:
            await asyncio.gather(closing, return_exceptions=True)

    async def _drain_buffer(self) -> None:
        # Bytes wait here only while no part is open or the open one is full. A full part is
        # closed once enough bytes wait to open the next; until then it may still take them.
        while len(self._buf) >= self._stream_after:
            if self._open is not None:
                await self._end_open()
            await self._start()
            await self._put(self._buf.take(min(len(self._buf), self._part_size)))

    async def _start(self) -> None:
        if self._closing is not None:  # parts go to the hold in order
            closing, self._closing = self._closing, None
            await closing
        self._opened += 1
        part = OutgoingPart(self._opened, self._next_offset)
        self._open = (part, asyncio.create_task(self._send(part)))

    async def _end_open(self) -> None:
        await self._put(None)
        assert self._open is not None
        self._next_offset += self._open[0].size
        self._closing, self._open = self._open[1], None

    async def _put(self, item: bytes | None) -> None:
        assert self._open is not None
        part, task = self._open
        if item is not None:
            part.size += len(item)
        queue = part.queue
        if not task.done() and not queue.full():
            queue.put_nowait(item)
            return
        if not task.done():
            # The hold is slower than the client: wait for room, unless the part's request ends.
            putter = asyncio.ensure_future(queue.put(item))
            try:
                await asyncio.wait((putter, task), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not putter.done():
                    putter.cancel()
            if putter.done() and not putter.cancelled():
                return
        await task  # raises the hold's refusal
        raise BlobUploadInvalid("the hold answered before the part was sent")


__all__ = ["PART_SIZE", "STREAM_AFTER", "ByteQueue", "OutgoingPart", "PartSender", "PartSplitter"]
