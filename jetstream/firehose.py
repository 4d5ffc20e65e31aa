"""`com.atproto.sync.subscribeRepos` frames -> the same normalized events Jetstream gives.

The firehose is what a network without Jetstream offers, and what a hold's embedded PDS
serves. Unlike Jetstream it is verifiable: a commit is signed by the repository's key, and
the CAR slice it carries holds the MST path to every changed record. With verification on,
an event is only believed when the signature verifies against the key in the DID document
and the record's CID is the one the signed tree holds for its path.

Frames whose records cannot be known from the frame itself (`tooBig`, `#sync`, a missing
block) ask for that repository to be listed again instead of guessing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import libipld

from jetstream.cbor import UNKNOWN, cid_str, decode_record, mst_lookup, read_car
from jetstream.errors import MalformedEvent, StreamRefused, VerificationFailed
from jetstream.events import AccountEvent, Event, IdentityEvent, commit_event, iso_to_us, wants_collection

log = logging.getLogger("jetstream.firehose")


@dataclass
class CommitProof:
    """What verification of one `#commit` needs, kept beside the events it produced."""

    did: str
    rev: str
    commit_cid: bytes
    blocks: dict[bytes, bytes]
    ops: list[tuple[str, str, bytes | None]]  # (action, path, cid) of the ops we kept


@dataclass
class FirehoseMessage:
    """One decoded frame: its seq (the cursor), time, events, and what else it asks for."""

    seq: int | None
    time_us: int | None
    events: list[Event] = field(default_factory=list)
    resync: str | None = None  # a DID whose records must be listed again
    outdated_cursor: bool = False  # `#info OutdatedCursor`: events were missed
    proof: CommitProof | None = None


def _decode_frame(frame: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        parts = libipld.decode_dag_cbor_multi(frame)
    except Exception as exc:  # libipld raises untyped errors
        raise MalformedEvent(f"frame is not DAG-CBOR: {exc}") from None
    if len(parts) != 2 or not isinstance(parts[0], dict) or not isinstance(parts[1], dict):
        raise MalformedEvent("frame is not a header and a body")
    return parts[0], parts[1]


def parse_frame(
    frame: bytes, wanted: tuple[str, ...] = (), wanted_dids: frozenset[str] = frozenset()
) -> FirehoseMessage:
    """Decode one frame, keeping only ops in `wanted` collections (and `wanted_dids`, if any).

    Raises StreamRefused for an error frame (the server ends the stream after it) and
    MalformedEvent for a frame that cannot be read.
    """
    header, body = _decode_frame(frame)
    if header.get("op") == -1:
        raise StreamRefused(f"firehose error {body.get('error')!s:.60}: {body.get('message')!s:.200}")
    if header.get("op") != 1:
        raise MalformedEvent(f"unknown frame op {header.get('op')!r:.20}")
    kind = header.get("t")
    seq = body.get("seq") if isinstance(body.get("seq"), int) else None
    time_us = iso_to_us(body.get("time"))
    msg = FirehoseMessage(seq=seq, time_us=time_us)
    if kind == "#info":
        msg.outdated_cursor = body.get("name") == "OutdatedCursor"
        return msg
    did = body.get("repo") if kind == "#commit" else body.get("did")
    if not isinstance(did, str) or not did.startswith("did:"):
        raise MalformedEvent(f"{kind!s:.20} frame without a DID")
    if wanted_dids and did not in wanted_dids:
        return msg
    event_us = time_us or 0
    if kind in ("#identity", "#handle"):
        handle = body.get("handle")
        msg.events.append(IdentityEvent(did, event_us, handle if isinstance(handle, str) else None))
    elif kind == "#account":
        active = body.get("active")
        if not isinstance(active, bool):
            raise MalformedEvent(f"{did}: #account without 'active'")
        status = body.get("status")
        msg.events.append(AccountEvent(did, event_us, active, status if isinstance(status, str) else None))
    elif kind == "#tombstone":
        msg.events.append(AccountEvent(did, event_us, False, "deleted"))
    elif kind == "#sync":
        msg.resync = did  # the repo's state was reset: only a fresh listing is trustworthy
    elif kind == "#commit":
        _commit(body, did, event_us, wanted, msg)
    return msg


def _commit(body: dict[str, Any], did: str, time_us: int, wanted: tuple[str, ...], msg: FirehoseMessage) -> None:
    rev, ops = body.get("rev"), body.get("ops")
    if not isinstance(rev, str) or not isinstance(ops, list):
        raise MalformedEvent(f"{did}: #commit without rev or ops")
    kept: list[tuple[str, str, bytes | None]] = []
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise MalformedEvent(f"{did}: malformed op")
        collection, _, _ = op["path"].partition("/")
        if wants_collection(collection, wanted):
            cid = op.get("cid")
            kept.append((str(op.get("action")), op["path"], cid if isinstance(cid, bytes) else None))
    if not kept:
        return
    if body.get("tooBig"):
        msg.resync = did
        return
    blocks_raw = body.get("blocks")
    commit_cid = body.get("commit")
    if not isinstance(blocks_raw, bytes) or not isinstance(commit_cid, bytes):
        raise MalformedEvent(f"{did}: #commit without blocks or commit CID")
    _root, blocks = read_car(blocks_raw)
    msg.proof = CommitProof(did, rev, commit_cid, blocks, kept)
    for action, path, cid in kept:
        collection, _, rkey = path.partition("/")
        record: dict[str, Any] | None = None
        if action in ("create", "update"):
            block = blocks.get(cid) if cid is not None else None
            if block is None:
                msg.resync = did  # the frame does not carry the record: list it instead
                continue
            record = decode_record(block)
        msg.events.append(
            commit_event(
                did,
                time_us,
                collection=collection,
                rkey=rkey,
                operation=action,
                rev=rev,
                cid=cid_str(cid) if cid is not None else None,
                record=record,
            )
        )


KeyLookup = Callable[[str, bool], Awaitable[str | None]]
"""(did, refresh) -> the `did:key:` of the repository's signing key, or None."""


def _verify_sig(did_key: str, data: bytes, sig: bytes) -> bool:
    from atproto_crypto.verify import verify_signature

    try:
        return bool(verify_signature(did_key, data, sig))
    except Exception:  # unsupported or malformed key: not a valid signature either way
        return False


class CommitVerifier:
    """Checks a commit's signature and the MST inclusion of every op it reports."""

    def __init__(self, key_for: KeyLookup) -> None:
        self._key_for = key_for

    async def verify(self, proof: CommitProof) -> None:
        """Raise VerificationFailed unless the commit is signed by `did` and holds the ops."""
        block = proof.blocks.get(proof.commit_cid)
        if block is None:
            raise VerificationFailed(f"{proof.did}: commit block missing from the CAR")
        try:
            commit = libipld.decode_dag_cbor(block)
        except Exception:
            raise VerificationFailed(f"{proof.did}: unreadable commit block") from None
        if not isinstance(commit, dict) or commit.get("did") != proof.did or commit.get("rev") != proof.rev:
            raise VerificationFailed(f"{proof.did}: commit names another repo or rev")
        sig, data = commit.get("sig"), commit.get("data")
        if not isinstance(sig, bytes) or not isinstance(data, bytes):
            raise VerificationFailed(f"{proof.did}: commit without sig or data")
        unsigned = libipld.encode_dag_cbor({k: v for k, v in commit.items() if k != "sig"})
        if not await self._signed(proof.did, unsigned, sig):
            raise VerificationFailed(f"{proof.did}: commit signature does not verify")
        for action, path, cid in proof.ops:
            held = mst_lookup(proof.blocks, data, path)
            if action == "delete":
                if held is not UNKNOWN and held is not None:
                    raise VerificationFailed(f"{proof.did}: deleted {path} is still in the signed tree")
            elif held is UNKNOWN or held != cid:
                raise VerificationFailed(f"{proof.did}: {path} is not what the signed tree holds")

    async def _signed(self, did: str, data: bytes, sig: bytes) -> bool:
        for refresh in (False, True):  # a failure may mean the key rotated: re-resolve once
            key = await self._key_for(did, refresh)
            if key is not None and _verify_sig(key, data, sig):
                return True
        return False
