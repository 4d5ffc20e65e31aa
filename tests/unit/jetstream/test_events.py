"""Jetstream v1 JSON -> normalized events; anything else is MalformedEvent, never a crash."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jetstream.errors import MalformedEvent
from jetstream.events import (
    AccountEvent,
    CommitEvent,
    IdentityEvent,
    iso_to_us,
    parse_jetstream,
    wants_collection,
)

pytestmark = pytest.mark.unit

DID = "did:plc:abcdefghijklmnopqrstuvwx"


def commit(op: str = "create", **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"rev": "3l3qo2vutsw2b", "operation": op, "collection": "io.atcr.tag", "rkey": "abc"}
    if op != "delete":
        body.update(cid="bafyreiabc", record={"$type": "io.atcr.tag", "repository": "app", "tag": "v1"})
    body.update(over)
    return {"did": DID, "time_us": 1725911162329308, "kind": "commit", "commit": body}


def test_commit_create_update_delete() -> None:
    ev = parse_jetstream(json.dumps(commit()))
    assert isinstance(ev, CommitEvent)
    assert (ev.did, ev.collection, ev.rkey, ev.operation, ev.rev) == (
        DID,
        "io.atcr.tag",
        "abc",
        "create",
        "3l3qo2vutsw2b",
    )
    assert ev.record == {"$type": "io.atcr.tag", "repository": "app", "tag": "v1"} and ev.cid == "bafyreiabc"
    assert ev.time_us == 1725911162329308 and ev.kind == "commit"
    up = parse_jetstream(json.dumps(commit("update")).encode())
    assert isinstance(up, CommitEvent) and up.operation == "update"
    gone = parse_jetstream(json.dumps(commit("delete")))
    assert isinstance(gone, CommitEvent) and gone.record is None and gone.cid is None


def test_identity_and_account() -> None:
    ident = parse_jetstream(
        json.dumps({"did": DID, "time_us": 5, "kind": "identity", "identity": {"did": DID, "handle": "a.test"}})
    )
    assert ident == IdentityEvent(DID, 5, "a.test")
    odd = parse_jetstream(json.dumps({"did": DID, "time_us": 5, "kind": "identity", "identity": {"handle": "x y"}}))
    assert odd == IdentityEvent(DID, 5, None)
    acct = parse_jetstream(
        json.dumps({"did": DID, "time_us": 6, "kind": "account", "account": {"active": False, "status": "takendown"}})
    )
    assert acct == AccountEvent(DID, 6, False, "takendown")


def test_unknown_kinds_are_ignored() -> None:
    assert parse_jetstream(json.dumps({"did": DID, "time_us": 1, "kind": "future-kind"})) is None


@pytest.mark.parametrize(
    "raw",
    [
        "not json",
        "[1]",
        json.dumps({"time_us": 1, "kind": "commit"}),
        json.dumps({"did": "alice", "time_us": 1, "kind": "commit"}),
        json.dumps({"did": DID, "time_us": True, "kind": "commit"}),
        json.dumps({"did": DID, "time_us": -4, "kind": "commit"}),
        json.dumps({"did": DID, "time_us": 1}),
        json.dumps({"did": DID, "time_us": 1, "kind": "commit"}),
        json.dumps({"did": DID, "time_us": 1, "kind": "account", "account": {"active": "no"}}),
        json.dumps(commit(collection="not an nsid")),
        json.dumps(commit(rkey="..")),
        json.dumps(commit(rkey="a/b")),
        json.dumps(commit(operation="upsert")),
        json.dumps(commit(rev="")),
        json.dumps(commit(record="a string")),
        json.dumps(commit(cid=7)),
    ],
)
def test_malformed(raw: str) -> None:
    with pytest.raises(MalformedEvent):
        parse_jetstream(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "did": st.sampled_from([DID, "did:web:x", "", "nope"]) | st.text(max_size=10),
            "time_us": st.integers() | st.booleans() | st.none(),
            "kind": st.sampled_from(["commit", "identity", "account", "x"]) | json_values,
            "commit": json_values
            | st.fixed_dictionaries(
                {},
                optional={
                    "rev": json_values,
                    "operation": st.sampled_from(["create", "update", "delete"]) | json_values,
                    "collection": st.sampled_from(["io.atcr.tag", "x"]) | json_values,
                    "rkey": json_values,
                    "cid": json_values,
                    "record": json_values,
                },
            ),
            "identity": json_values,
            "account": json_values,
        },
    )
)
def test_any_input_parses_or_is_malformed(obj: dict[str, Any]) -> None:
    with contextlib.suppress(MalformedEvent):
        parse_jetstream(json.dumps(obj))


def test_wanted_collections() -> None:
    assert wants_collection("io.atcr.tag", ("io.atcr.*",))
    assert wants_collection("io.atcr.hold.crew", ("io.atcr.*",))
    assert not wants_collection("io.atcrx.tag", ("io.atcr.*",))
    assert not wants_collection("app.bsky.feed.post", ("io.atcr.*",))
    assert wants_collection("io.atcr.tag", ("io.atcr.tag",))
    assert not wants_collection("io.atcr.tags", ("io.atcr.tag",))
    assert wants_collection("anything.at.all", ())


def test_iso_to_us() -> None:
    assert iso_to_us("2024-09-09T19:46:02.102Z") == 1725911162102000
    assert iso_to_us("2024-09-09T19:46:02") is None  # no zone: not a firehose time
    assert iso_to_us("garbage") is None and iso_to_us(None) is None
