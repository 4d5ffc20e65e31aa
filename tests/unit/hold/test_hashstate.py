"""Resumable SHA-256/512: a state saved after any byte resumes to the same digest anywhere."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atcr import hashstate
from atcr.hashstate import MAGIC, HashStateError, ResumableHash

pytestmark = [pytest.mark.unit, pytest.mark.skipif(not hashstate.available(), reason="no libcrypto SHA functions")]


@given(
    data=st.binary(max_size=5000),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=8),
    algorithm=st.sampled_from(["sha256", "sha512"]),
)
@settings(max_examples=200, deadline=None)
def test_save_and_resume_at_any_split_matches_hashlib(data: bytes, cuts: list[int], algorithm: str) -> None:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    h = ResumableHash(algorithm)  # type: ignore[arg-type]
    for a, b in zip(points, points[1:], strict=False):
        h = ResumableHash.restore(h.save())
        h.update(data[a:b])
    h = ResumableHash.restore(h.save())
    assert h.hexdigest() == hashlib.new(algorithm, data).hexdigest()
    assert h.length == len(data)


def test_large_buffers_and_buffer_types() -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    h = ResumableHash("sha256")
    h.update(bytearray(data[:1_000_000]))
    h.update(memoryview(data)[1_000_000:2_000_000])
    h = ResumableHash.restore(h.save())
    h.update(data[2_000_000:])
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert h.hexdigest() == h.hexdigest()  # reading the digest does not finalise the state


def test_state_format_is_portable_and_small() -> None:
    h = ResumableHash("sha256")
    h.update(b"x" * 100)
    state = h.save()
    assert state[:4] == MAGIC and state[4] == 1
    assert int.from_bytes(state[5:13], "big") == 100
    assert len(state) == 13 + 32 + 100 % 64
    big = ResumableHash("sha512")
    big.update(b"y" * 300)
    assert len(big.save()) == 13 + 64 + 300 % 128


@pytest.mark.parametrize(
    "state",
    [b"", b"XXXX" + bytes(50), MAGIC + b"\x09" + bytes(50), MAGIC + b"\x01" + (5).to_bytes(8, "big") + bytes(32)],
)
def test_corrupt_states_are_refused(state: bytes) -> None:
    with pytest.raises(HashStateError):
        ResumableHash.restore(state)
