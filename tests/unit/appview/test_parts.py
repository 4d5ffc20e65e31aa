"""Cutting uploads into hold parts as bytes arrive: exact bytes, S3-valid sizes, parts in order."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appview.errors import BlobUploadInvalid
from appview.oci.parts import OutgoingPart, PartSplitter


class FakeHold:
    """Reads each part's body like the hold does; `slow` makes it lag behind the client."""

    def __init__(self, *, slow: bool = False, fail_at: int | None = None) -> None:
        self.parts: list[bytes] = []
        self.offsets: list[int] = []
        self.seen = 0  # bytes read so far, finished parts or not
        self.active = 0
        self.max_active = 0
        self.slow = slow
        self.fail_at = fail_at  # refuse after this many bytes of the first part
        self.cancelled = 0

    async def send(self, part: OutgoingPart) -> None:
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        got = bytearray()
        try:
            async for chunk in part.body():
                got += chunk
                self.seen += len(chunk)
                if self.fail_at is not None and len(got) >= self.fail_at:
                    raise BlobUploadInvalid("hold refused the upload: Nope")
                if self.slow:
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
            assert len(got) == part.size
            self.parts.append(bytes(got))
            self.offsets.append(part.offset)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


@settings(max_examples=300, deadline=None)
@given(
    tail=st.binary(max_size=12),
    chunks=st.lists(st.binary(max_size=40), max_size=25),
    stream_after=st.integers(1, 16),
    extra=st.integers(0, 24),
    final=st.booleans(),
    slow=st.booleans(),
)
def test_parts_are_the_stream_in_order_with_valid_sizes(
    tail: bytes, chunks: list[bytes], stream_after: int, extra: int, final: bool, slow: bool
) -> None:
    part_size = stream_after + extra
    hold = FakeHold(slow=slow)

    async def run() -> bytes:
        splitter = PartSplitter(hold.send, tail, start=1000, part_size=part_size, stream_after=stream_after)
        for chunk in chunks:
            await splitter.feed(chunk)
        return await splitter.finish(final=final)

    rest = asyncio.run(run())
    stream = tail + b"".join(chunks)
    assert b"".join(hold.parts) + rest == stream
    assert hold.offsets == [1000 + sum(map(len, hold.parts[:i])) for i in range(len(hold.parts))]
    assert hold.max_active <= 1  # one part at a time: the hold's running hash needs order
    for i, part in enumerate(hold.parts):
        last = final and i == len(hold.parts) - 1
        # A part grows past part_size only to take a remainder too short to stand alone.
        assert 0 < len(part) <= part_size + stream_after - 1
        assert last or len(part) >= stream_after  # only the upload's last part may be short
    if final:
        assert rest == b""
    else:
        assert len(rest) < stream_after
    if hold.parts:
        assert rest == b""  # nothing is left to wait in Valkey for the closing PUT
    if len(tail) + sum(map(len, chunks)) >= stream_after:
        assert hold.parts  # bytes enough for a part never wait


def test_bytes_reach_the_hold_before_the_part_is_full() -> None:
    hold = FakeHold()

    async def run() -> int:
        splitter = PartSplitter(hold.send, part_size=100, stream_after=5)
        for _ in range(10):
            await splitter.feed(b"z" * 3)
        for _ in range(5):
            await asyncio.sleep(0)
        seen = hold.seen
        await splitter.finish()
        return seen

    assert asyncio.run(run()) == 30  # streamed as fed, not held back until 100 bytes or the end
    assert hold.parts == [b"z" * 30]


def test_a_refusal_mid_part_surfaces_and_nothing_is_kept() -> None:
    hold = FakeHold(fail_at=10)

    async def run() -> None:
        splitter = PartSplitter(hold.send, part_size=100, stream_after=5)
        try:
            for _ in range(50):
                await splitter.feed(b"x" * 3)
            await splitter.finish()
        except BaseException:
            await splitter.abort()
            raise

    with pytest.raises(BlobUploadInvalid, match="Nope"):
        asyncio.run(run())
    assert hold.parts == []


def test_abort_cancels_the_part_in_flight() -> None:
    hold = FakeHold()

    async def run() -> None:
        splitter = PartSplitter(hold.send, part_size=100, stream_after=5)
        await splitter.feed(b"y" * 30)
        await asyncio.sleep(0)
        await splitter.abort()

    asyncio.run(run())
    assert hold.parts == [] and hold.cancelled == 1


def test_sizes_must_make_sense() -> None:
    with pytest.raises(ValueError, match="stream_after"):
        PartSplitter(FakeHold().send, part_size=4, stream_after=5)


def test_abort_keeps_a_part_already_sent_whole() -> None:
    hold = FakeHold()

    async def run() -> None:
        splitter = PartSplitter(hold.send, part_size=20, stream_after=5)
        await splitter.feed(b"a" * 20)  # part 1 is full ...
        await splitter.feed(b"b" * 6)  # ... and closes: part 2 opens with these bytes
        await asyncio.sleep(0)
        await splitter.abort()  # the client went away

    asyncio.run(run())
    assert hold.parts == [b"a" * 20] and hold.cancelled == 1
