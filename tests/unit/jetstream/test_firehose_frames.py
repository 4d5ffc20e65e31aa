"""subscribeRepos frames -> normalized events (frames built here; real ones in integration)."""

from __future__ import annotations

from typing import Any

import libipld
import pytest

from atcr.dagcbor import Cid, encode, write_car
from jetstream.errors import MalformedEvent, StreamRefused
from jetstream.events import AccountEvent, CommitEvent, IdentityEvent
from jetstream.firehose import parse_frame

pytestmark = pytest.mark.unit

DID = "did:plc:abcdefghijklmnopqrstuvwx"
TIME = "2026-01-02T03:04:05.000Z"


def frame(t: str, body: dict[str, Any], op: int = 1) -> bytes:
    header: dict[str, Any] = {"op": op, "t": t} if op == 1 else {"op": op}
    return bytes(libipld.encode_dag_cbor(header)) + bytes(libipld.encode_dag_cbor(body))


def commit_frame(ops: list[tuple[str, str, dict[str, Any] | None]], **over: Any) -> bytes:
    records = [(Cid.for_block(encode(r)), encode(r)) for _, _, r in ops if r is not None]
    commit = encode({"did": DID, "rev": "3abc", "version": 3})
    root = Cid.for_block(commit)
    car = write_car(root, [(root, commit), *records])
    rec_iter = iter(records)
    body_ops = []
    for action, path, record in ops:
        cid = next(rec_iter)[0].raw if record is not None else None
        body_ops.append({"action": action, "path": path, "cid": cid})
    body = {
        "seq": 42,
        "repo": DID,
        "rev": "3abc",
        "time": TIME,
        "commit": root.raw,
        "blocks": car,
        "ops": body_ops,
        "tooBig": False,
        "rebase": False,
        "blobs": [],
    }
    body.update(over)
    return frame("#commit", body)


def test_commit_ops_become_events_filtered_by_collection() -> None:
    msg = parse_frame(
        commit_frame(
            [
                ("create", "io.atcr.tag/t1", {"repository": "app", "tag": "v1"}),
                ("delete", "io.atcr.manifest/abc", None),
                ("create", "app.bsky.feed.post/p1", {"text": "hi"}),
            ]
        ),
        ("io.atcr.*",),
    )
    assert msg.seq == 42 and msg.time_us == 1767323045000000
    assert [(e.operation, e.collection, e.rkey) for e in msg.events if isinstance(e, CommitEvent)] == [
        ("create", "io.atcr.tag", "t1"),
        ("delete", "io.atcr.manifest", "abc"),
    ]
    first = msg.events[0]
    assert isinstance(first, CommitEvent)
    assert first.record == {"repository": "app", "tag": "v1"} and first.rev == "3abc"
    assert first.cid is not None and first.cid.startswith("bafyrei")
    assert msg.proof is not None and len(msg.proof.ops) == 2


def test_commit_without_our_collections_decodes_nothing() -> None:
    msg = parse_frame(
        commit_frame([("create", "app.bsky.feed.post/p1", {"text": "hi"})], blocks=b"junk"), ("io.atcr.*",)
    )
    assert msg.events == [] and msg.proof is None and msg.seq == 42


def test_too_big_and_missing_blocks_ask_for_a_resync() -> None:
    msg = parse_frame(commit_frame([("create", "io.atcr.tag/t1", {"a": 1})], tooBig=True), ("io.atcr.*",))
    assert msg.resync == DID and msg.events == []
    ok = commit_frame([("create", "io.atcr.tag/t1", {"a": 1})])
    header, body = libipld.decode_dag_cbor_multi(ok)
    body["ops"][0]["cid"] = Cid.for_block(b"elsewhere").raw
    msg = parse_frame(bytes(libipld.encode_dag_cbor(header)) + bytes(libipld.encode_dag_cbor(body)), ("io.atcr.*",))
    assert msg.resync == DID and msg.events == []


def test_identity_account_tombstone_sync_info() -> None:
    ident = parse_frame(frame("#identity", {"seq": 1, "did": DID, "time": TIME, "handle": "a.test"}))
    assert ident.events == [IdentityEvent(DID, 1767323045000000, "a.test")]
    acct = parse_frame(frame("#account", {"seq": 2, "did": DID, "time": TIME, "active": False, "status": "deleted"}))
    assert acct.events == [AccountEvent(DID, 1767323045000000, False, "deleted")]
    tomb = parse_frame(frame("#tombstone", {"seq": 3, "did": DID, "time": TIME}))
    assert tomb.events == [AccountEvent(DID, 1767323045000000, False, "deleted")]
    sync = parse_frame(frame("#sync", {"seq": 4, "did": DID, "time": TIME, "rev": "x", "blocks": b""}))
    assert sync.resync == DID and sync.seq == 4
    info = parse_frame(frame("#info", {"name": "OutdatedCursor"}))
    assert info.outdated_cursor and info.events == []


def test_wanted_dids_filter() -> None:
    msg = parse_frame(frame("#identity", {"seq": 1, "did": DID, "time": TIME}), (), frozenset({"did:plc:other"}))
    assert msg.events == [] and msg.seq == 1


def test_error_frames_end_the_stream() -> None:
    with pytest.raises(StreamRefused, match="FutureCursor"):
        parse_frame(frame("", {"error": "FutureCursor", "message": "Cursor in the future."}, op=-1))


@pytest.mark.parametrize(
    "data",
    [
        b"\x00",
        bytes(libipld.encode_dag_cbor({"op": 1, "t": "#commit"})),
        frame("#commit", {"seq": 1}),
        frame("#account", {"seq": 1, "did": DID}),
        frame("#identity", {"seq": 1}),
        frame("#commit", {"seq": 1, "repo": DID, "rev": "x", "ops": [{"path": 3}]}),
        frame("#commit", {"seq": 1, "repo": DID, "rev": "x", "ops": [{"action": "create", "path": "io.atcr.tag/x"}]}),
        frame("x", {"seq": 1}, op=7),
    ],
)
def test_malformed_frames(data: bytes) -> None:
    with pytest.raises(MalformedEvent):
        parse_frame(data, ("io.atcr.*",))
