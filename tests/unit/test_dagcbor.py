"""DAG-CBOR, CIDs and CAR: byte-for-byte agreement with the SDK (libipld) where it is right,
and correct where it is not (byte strings that look like CIDs)."""

from __future__ import annotations

import hashlib
import os

import libipld
import pytest
from atproto_core.car import CAR
from hypothesis import given, settings
from hypothesis import strategies as st

from atcr.dagcbor import Cid, CorruptRepo, InvalidRecord, decode, encode, from_json, read_car, to_json, write_car

# Values libipld encodes unambiguously: no byte strings (it may turn them into links).
_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=40)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_encoding_matches_libipld_and_round_trips(value: object) -> None:
    data = encode(value)
    assert data == libipld.encode_dag_cbor(value)
    assert decode(data) == value
    assert libipld.decode_dag_cbor(data) == value


def test_map_keys_sort_length_first() -> None:
    assert encode({"b": 1, "aa": 2, "a": 3}) == bytes.fromhex("a361610361620162616102")


def test_links_encode_as_tag_42_and_decode_as_cid() -> None:
    cid = Cid.for_block(b"hello")
    data = encode({"l": cid})
    assert data[3:5] == b"\xd8\x2a"
    assert decode(data) == {"l": cid}
    assert libipld.decode_dag_cbor(data) == {"l": cid.raw}


def test_byte_strings_that_parse_as_cids_stay_byte_strings() -> None:
    """libipld would write these as links; a commit signature can look exactly like this."""
    looks_like_cid = bytes((1, 0x71, 0x12, 0x20)) + os.urandom(60)
    assert libipld.encode_dag_cbor(looks_like_cid)[:2] == b"\xd8\x2a"  # the SDK's pitfall
    data = encode({"sig": looks_like_cid})
    assert decode(data) == {"sig": looks_like_cid}
    assert libipld.decode_dag_cbor(data) == {"sig": looks_like_cid}
    assert data[5] == 0x58  # major type 2 (bytes), one-byte length


def test_floats_and_odd_types_are_refused() -> None:
    with pytest.raises(InvalidRecord):
        encode({"x": 1.5})
    with pytest.raises(InvalidRecord):
        encode({1: "non-string key"})
    with pytest.raises(InvalidRecord):
        encode(object())
    with pytest.raises(CorruptRepo):
        decode(libipld.encode_dag_cbor(1.5))
    with pytest.raises(CorruptRepo):
        decode(encode(1) + b"\x00")


def test_cid_string_forms() -> None:
    data = b"block"
    cid = Cid.for_block(data)
    assert str(cid) == libipld.encode_cid(bytes((1, 0x71, 0x12, 0x20)) + hashlib.sha256(data).digest())
    assert Cid.parse(str(cid)) == cid
    assert cid.matches(data)
    assert not cid.matches(b"other")
    for bad in ("", "Qm" + "1" * 44, "bnotacid", "zabc"):
        with pytest.raises(ValueError):
            Cid.parse(bad)


def test_json_form_round_trip() -> None:
    cid = Cid.for_block(b"x")
    record = {
        "$type": "io.example.thing",
        "link": {"$link": str(cid)},
        "bytes": {"$bytes": "aGVsbG8"},
        "blob": {"$type": "blob", "ref": {"$link": str(cid)}, "mimeType": "text/plain", "size": 5},
        "list": [1, "two", None, True],
    }
    ipld = from_json(record)
    assert ipld["link"] == cid
    assert ipld["bytes"] == b"hello"
    assert ipld["blob"]["ref"] == cid
    assert to_json(decode(encode(ipld))) == record
    with pytest.raises(InvalidRecord):
        from_json({"x": {"$link": "nope"}})
    with pytest.raises(InvalidRecord):
        from_json({"x": 0.5})


def test_car_round_trip_and_sdk_reader() -> None:
    blocks = [(Cid.for_block(encode({"n": i})), encode({"n": i})) for i in range(5)]
    car = write_car(blocks[0][0], blocks)
    roots, parsed = read_car(car)
    assert roots == [blocks[0][0]]
    assert parsed == dict(blocks)
    sdk = CAR.from_bytes(car)
    assert str(sdk.root) == str(blocks[0][0])
    assert {str(k): v for k, v in sdk.blocks.items()} == {str(c): {"n": i} for i, (c, _) in enumerate(blocks)}


def test_car_with_a_tampered_block_is_refused() -> None:
    cid, data = Cid.for_block(encode({"n": 1})), encode({"n": 1})
    car = bytearray(write_car(cid, [(cid, data)]))
    car[-1] ^= 1
    with pytest.raises(CorruptRepo):
        read_car(bytes(car))
