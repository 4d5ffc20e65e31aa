"""The upload byte queue: parts cut at exact sizes, whatever the chunking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from appview.oci.parts import ByteQueue as _Chunks


@given(
    initial=st.binary(max_size=50),
    chunks=st.lists(st.binary(max_size=40), max_size=30),
    part=st.integers(1, 64),
)
def test_parts_are_the_stream_cut_at_part_size(initial: bytes, chunks: list[bytes], part: int) -> None:
    q = _Chunks(initial)
    stream = initial + b"".join(chunks)
    taken = b""
    for c in chunks:
        q.append(c)
        while len(q) >= part:
            piece = q.take(part)
            assert len(piece) == part
            taken += piece
    rest = q.take(len(q))
    assert taken + rest == stream and len(q) == 0
