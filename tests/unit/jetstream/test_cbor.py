"""Record decoding, CAR reading and MST lookups, checked against the hold's independent encoder."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atcr.dagcbor import Cid, encode, from_json, write_car
from hold.repo.mst import MST, NodeStore
from jetstream.cbor import UNKNOWN, decode_record, mst_lookup, read_car
from jetstream.errors import MalformedEvent

pytestmark = pytest.mark.unit

LINK = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


def test_links_and_bytes_come_back_as_the_json_data_model() -> None:
    record = {
        "$type": "io.atcr.manifest",
        "manifestBlob": {"$type": "blob", "ref": {"$link": LINK}, "mimeType": "x", "size": 3},
        "sig": {"$bytes": "AAEC"},
        "n": -5,
        "big": 2**40,
        "ok": True,
        "no": False,
        "nothing": None,
        "list": [1, "two", {"three": 3}],
    }
    assert decode_record(encode(from_json(record))) == record


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=30)
    | st.binary(max_size=40).map(lambda b: {"$bytes": __import__("base64").b64encode(b).decode().rstrip("=")})
    | st.just({"$link": LINK})
)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(min_size=1, max_size=8), kids, max_size=5),
    max_leaves=30,
)


@settings(max_examples=200)
@given(st.dictionaries(st.text(min_size=1, max_size=8), json_value, max_size=6))
def test_round_trip_against_the_hold_encoder(record: dict[str, Any]) -> None:
    assert decode_record(encode(from_json(record))) == record


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa1\x61a",  # truncated
        bytes.fromhex("a16161f93c00"),  # a float
        bytes.fromhex("a10102"),  # integer key
        bytes.fromhex("a16161c10a"),  # tag 1
        bytes.fromhex("a16161d82a4100"),  # CID link with no CID
        bytes.fromhex("a0a0"),  # trailing bytes
        bytes.fromhex("8101"),  # not a map
        bytes.fromhex("a1616161ff"),  # invalid UTF-8
        bytes.fromhex("bf"),  # indefinite length
    ],
)
def test_malformed_records(data: bytes) -> None:
    with pytest.raises(MalformedEvent):
        decode_record(data)


def test_deep_nesting_is_refused() -> None:
    data = b"\xa1\x61a" + b"\x81" * 100 + b"\x00"
    with pytest.raises(MalformedEvent):
        decode_record(data)


def test_car_blocks_are_hash_checked() -> None:
    blocks = [encode({"n": i}) for i in range(3)]
    cids = [Cid.for_block(b) for b in blocks]
    car = write_car(cids[0], zip(cids, blocks, strict=True))
    root, got = read_car(car)
    assert root == cids[0].raw
    assert got == {c.raw: b for c, b in zip(cids, blocks, strict=True)}
    tampered = bytearray(car)
    tampered[-1] ^= 1
    with pytest.raises(MalformedEvent):
        read_car(bytes(tampered))
    read_car(bytes(tampered), verify=False)  # the hash check is what refused it


def test_mst_lookup_against_the_hold_tree() -> None:
    values: dict[str, Cid] = {}
    tree = MST.empty(NodeStore(lambda cid: None))
    for i in range(300):
        key = f"io.atcr.tag/{hashlib.sha256(str(i).encode()).hexdigest()[:13]}"
        values[key] = Cid.for_block(encode({"i": i}))
        tree = tree.put(key, values[key])
    root, node_blocks = tree.finalize()
    blocks = {c.raw: b for c, b in node_blocks.items()}
    for key, cid in values.items():
        assert mst_lookup(blocks, root.raw, key) == cid.raw
    assert mst_lookup(blocks, root.raw, "io.atcr.tag/zzzzzzzzzzzzz") is None
    assert mst_lookup(blocks, root.raw, "io.atcr.manifest/aaaa") is None
    # Without the nodes on the path, the CAR proves nothing either way.
    assert mst_lookup({}, root.raw, next(iter(values))) is UNKNOWN
