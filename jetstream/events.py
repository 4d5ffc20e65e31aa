"""The normalized events every source produces, and the Jetstream v1 JSON reader.

Jetstream JSON and firehose frames carry the same three facts (a record changed, an identity
changed, an account changed) in different shapes. Both sources turn them into these small
immutable values so that one processor serves both, and so that everything after this
module can trust the shape: a value that exists here has passed the syntax checks.

Jetstream is unsigned and unauthenticated (PROTOCOLS.md §2.1): what it says is used to
warm and invalidate the read model, never to decide who may do what.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Literal

from atcr import jsonbound
from atcr.syntax import is_did, is_handle, is_nsid, is_record_key
from jetstream.errors import MalformedEvent

Operation = Literal["create", "update", "delete"]
OPERATIONS: Final = frozenset(("create", "update", "delete"))


@dataclass(frozen=True, slots=True)
class CommitEvent:
    """One record created, updated or deleted in a repository.

    `rev` is the repo revision (a TID) of the commit; it orders changes to one record.
    `record` and `cid` are None for deletes. `raw_manifest` is only ever set by a source
    that already has the exact manifest bytes (none of the network sources do).
    """

    did: str
    time_us: int
    collection: str
    rkey: str
    operation: Operation
    rev: str
    cid: str | None = None
    record: dict[str, Any] | None = None
    raw_manifest: bytes | None = None

    @property
    def kind(self) -> str:
        return "commit"


@dataclass(frozen=True, slots=True)
class IdentityEvent:
    """The DID's handle or document may have changed: cached identity must be dropped."""

    did: str
    time_us: int
    handle: str | None = None

    @property
    def kind(self) -> str:
        return "identity"


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """The account's hosting status changed (`active` false: takendown, deactivated, deleted ...)."""

    did: str
    time_us: int
    active: bool
    status: str | None = None

    @property
    def kind(self) -> str:
        return "account"


Event = CommitEvent | IdentityEvent | AccountEvent


def wants_collection(collection: str, wanted: tuple[str, ...]) -> bool:
    """Jetstream's filter rule: a full NSID or a `prefix.*` wildcard; no filter means all."""
    if not wanted:
        return True
    for want in wanted:
        if want.endswith(".*"):
            if collection.startswith(want[:-1]):
                return True
        elif collection == want:
            return True
    return False


def iso_to_us(value: object) -> int | None:
    """Unix microseconds of an RFC 3339 timestamp (firehose `time`), None when unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return int(dt.timestamp() * 1_000_000)


def _did(value: object, where: str) -> str:
    if not isinstance(value, str) or not is_did(value):
        raise MalformedEvent(f"{where}: not a DID: {value!r:.80}")
    return value


def commit_event(
    did: str,
    time_us: int,
    *,
    collection: object,
    rkey: object,
    operation: object,
    rev: object,
    cid: object = None,
    record: object = None,
) -> CommitEvent:
    """Build a CommitEvent from untrusted parts, or raise MalformedEvent naming the bad part."""
    if not isinstance(collection, str) or not is_nsid(collection):
        raise MalformedEvent(f"{did}: bad collection {collection!r:.80}")
    if not isinstance(rkey, str) or not is_record_key(rkey) or rkey in (".", ".."):
        raise MalformedEvent(f"{did}/{collection}: bad rkey {rkey!r:.80}")
    if operation not in OPERATIONS:
        raise MalformedEvent(f"{did}/{collection}/{rkey}: bad operation {operation!r:.40}")
    if not isinstance(rev, str) or not rev or len(rev) > 64:
        raise MalformedEvent(f"{did}/{collection}/{rkey}: missing rev")
    if operation == "delete":
        return CommitEvent(did, time_us, collection, rkey, "delete", rev)
    if not isinstance(record, dict):
        raise MalformedEvent(f"{did}/{collection}/{rkey}: {operation} without a record object")
    if cid is not None and not isinstance(cid, str):
        raise MalformedEvent(f"{did}/{collection}/{rkey}: bad cid")
    op: Operation = "create" if operation == "create" else "update"
    return CommitEvent(did, time_us, collection, rkey, op, rev, cid, record)


def parse_jetstream(message: str | bytes) -> Event | None:
    """One Jetstream v1 message -> an Event; None for well-formed kinds we do not use.

    Raises MalformedEvent for anything that is not a valid v1 event: the caller logs it and
    moves on, because one bad message must never stop the stream.
    """
    try:
        obj = jsonbound.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedEvent("event is not a JSON object")
    did = _did(obj.get("did"), "event")
    time_us = obj.get("time_us")
    if not isinstance(time_us, int) or isinstance(time_us, bool) or time_us <= 0:
        raise MalformedEvent(f"{did}: bad time_us {time_us!r:.40}")
    kind = obj.get("kind")
    if kind == "commit":
        commit = obj.get("commit")
        if not isinstance(commit, dict):
            raise MalformedEvent(f"{did}: commit event without a commit object")
        return commit_event(
            did,
            time_us,
            collection=commit.get("collection"),
            rkey=commit.get("rkey"),
            operation=commit.get("operation"),
            rev=commit.get("rev"),
            cid=commit.get("cid"),
            record=commit.get("record"),
        )
    if kind == "identity":
        ident = obj.get("identity")
        handle = ident.get("handle") if isinstance(ident, dict) else None
        if not (isinstance(handle, str) and is_handle(handle, allow_reserved_tlds=True)):
            handle = None
        return IdentityEvent(did, time_us, handle)
    if kind == "account":
        acct = obj.get("account")
        if not isinstance(acct, dict) or not isinstance(acct.get("active"), bool):
            raise MalformedEvent(f"{did}: account event without 'active'")
        status = acct.get("status")
        return AccountEvent(did, time_us, bool(acct["active"]), status if isinstance(status, str) else None)
    if isinstance(kind, str):
        return None  # a kind a newer server added: not ours to interpret
    raise MalformedEvent(f"{did}: event without a kind")
