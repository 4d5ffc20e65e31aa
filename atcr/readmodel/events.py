"""What network events (Jetstream, firehose) do to the read model beyond single records.

Added by the consumer's author next to `apply.py` (whose owner may fold these in):

* `apply_records`: the same rev-ordered, idempotent change as `apply_record`, for many
  records in one pipelined round trip, because a stream delivers thousands of changes per
  second and one round trip per change caps the consumer far below that.
* `apply_identity`: drop cached identities for many DIDs at once.
* `apply_account`: an account stopped (or resumed) being served by its PDS. Its cached
  records are dropped either way: readers do not consult account status, and a cache miss
  goes to the PDS, which refuses to serve a deactivated, taken-down or deleted repository,
  so dropping is what hides it. A marker remembers the status, so that a replayed commit
  (Jetstream rewinds a few seconds on reconnect) cannot bring the records back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import valkey.asyncio as avalkey

from atcr.readmodel import keys
from atcr.readmodel._compat import done
from atcr.readmodel.apply import (
    DEFAULT_BYTES_TTL,
    DEFAULT_RETENTION,
    _apply_call,
    _Call,
    _Change,
    _change,
    _op_for,
    _run,
    _update_indexes,
    forget_did,
    store_manifest_bytes,
)
from atcr.readmodel.records import Normalized, is_digest, normalize
from atcr.valkey import mget

HIDDEN_STATUSES: Final = frozenset(("takendown", "suspended", "deactivated"))
"""Statuses whose repositories are hidden until the account is active again."""

PURGED_STATUSES: Final = frozenset(("deleted",))
"""Statuses whose data is gone for good."""

ACCOUNT_MARKER_TTL: Final = DEFAULT_RETENTION


def account_marker(did: str) -> str:
    """Status of an account that is not active. Global (not under the DID's hash tag) so that
    purging the DID's keys keeps it."""
    return f"{keys.PREFIX}acct:{did}"


@dataclass(frozen=True, slots=True)
class RecordChange:
    """One upsert (`record` set) or delete (`record` None), as `apply_record` takes it."""

    did: str
    collection: str
    rkey: str
    record: dict[str, Any] | None
    cid: str | None
    rev: str | None
    raw_manifest: bytes | None = None


async def apply_records(
    v: avalkey.Valkey,
    changes: Sequence[RecordChange],
    *,
    retention: int = DEFAULT_RETENTION,
    bytes_ttl: int = DEFAULT_BYTES_TTL,
) -> list[bool]:
    """`apply_record` for many changes, in order, in one pipeline; one result per change.

    Changes to the same record apply in the order given (a pipeline is ordered), and each is
    still judged by its rev inside the apply script, so duplicates and late arrivals are
    ignored exactly as they are one at a time.
    """
    calls: list[_Call] = []
    meta: list[tuple[int, RecordChange, Normalized | None]] = []
    results = [False] * len(changes)
    for i, ch in enumerate(changes):
        if ch.collection not in keys.COLLECTIONS:
            continue
        norm = normalize(ch.did, ch.collection, ch.rkey, ch.record, ch.cid) if ch.record is not None else None
        calls.append(
            _apply_call(
                ch.did,
                ch.collection,
                ch.rkey,
                norm,
                op=_op_for(ch.record, norm),
                cid=ch.cid,
                rev=ch.rev,
                snap_t=None,
                retention=retention,
            )
        )
        meta.append((i, ch, norm))
    if not calls:
        return results
    out = await _run(v, calls)
    applied: list[_Change] = []
    for (i, ch, norm), result in zip(meta, out, strict=True):
        status, change = _change(ch.did, ch.collection, ch.rkey, norm, result)
        results[i] = status != 0
        if change is not None:
            applied.append(change)
        if status and ch.raw_manifest is not None and ch.collection == keys.MANIFEST and ch.record is not None:
            digest = ch.record.get("digest")
            if is_digest(digest):
                await store_manifest_bytes(v, ch.did, str(digest), ch.raw_manifest, ttl=bytes_ttl)
    await _update_indexes(v, applied, retention)
    return results


async def apply_identity(v: avalkey.Valkey, items: Iterable[tuple[str, str | None]]) -> None:
    """Drop the cached identity of each (did, new handle or None), in two round trips."""
    pairs = list(dict.fromkeys(items))
    if not pairs:
        return
    pipe = v.pipeline(transaction=False)
    for did, _ in pairs:
        pipe.get(keys.identity(did))
    cached = await pipe.execute()
    names: list[str] = []
    for (did, handle), raw in zip(pairs, cached, strict=True):
        names += [keys.identity(did), keys.negative_identity(did)]
        if handle:
            names += [keys.identity(handle.lower()), keys.negative_identity(handle.lower())]
        if raw:
            try:
                old = json.loads(raw).get("handle")
            except (ValueError, AttributeError):
                old = None
            if isinstance(old, str):
                names.append(keys.identity(old.lower()))
    await done(v.delete(*names))


async def inactive_accounts(v: avalkey.Valkey, dids: Sequence[str]) -> dict[str, str]:
    """{did: status} for the DIDs whose account was last seen inactive (one round trip)."""
    if not dids:
        return {}
    values = await mget(v, [account_marker(d) for d in dids])
    return {d: (s.decode() if isinstance(s, bytes) else str(s)) for d, s in zip(dids, values, strict=True) if s}


async def _drop(v: avalkey.Valkey, did: str) -> None:
    """Remove the DID's repositories from the cross-DID indexes, then its own keys."""
    repos = await done(v.zrange(keys.repositories(did), 0, -1))
    if repos:
        members = [f"{did}/{r.decode() if isinstance(r, bytes) else r}" for r in repos]
        pipe = v.pipeline(transaction=False)
        for family in keys.BUCKETED:
            for member in members:
                pipe.zrem(keys.bucket(family, member), member)
        for member in members:
            pipe.delete(keys.search_doc(member))
        await pipe.execute()
    await forget_did(v, did)


async def apply_account(v: avalkey.Valkey, did: str, active: bool, status: str | None) -> str:
    """Hide, purge or restore an account's data; returns what happened.

    ``"restored"``: the account is active again after we had hidden it (the caller should
    list its records again); ``"hidden"`` / ``"purged"``: its data was dropped and marked;
    ``"ignored"``: nothing to do (already active, or a status such as ``throttled`` that says
    nothing about the data).
    """
    (outcome,) = await apply_accounts(v, [(did, active, status)])
    return outcome


def _known_keys(did: str) -> list[str]:
    return [keys.sync(did), keys.repositories(did)] + [keys.records(did, c) for c in sorted(keys.COLLECTIONS)]


async def apply_accounts(v: avalkey.Valkey, items: Sequence[tuple[str, bool, str | None]]) -> list[str]:
    """`apply_account` for many (did, active, status), in order, in one round trip.

    Most account events on the network are about accounts this model never saw: those cost
    one marker write (or delete) each; only known accounts pay for dropping their keys.
    """
    if not items:
        return []
    pipe = v.pipeline(transaction=False)
    plan: list[tuple[str, str]] = []  # (what, state) per item, to read the pipeline results
    for did, active, status in items:
        if active:
            pipe.delete(account_marker(did))
            plan.append(("activate", ""))
            continue
        state = (status or "deactivated").lower()
        if state not in HIDDEN_STATUSES and state not in PURGED_STATUSES:
            plan.append(("ignore", state))
            continue
        pipe.set(account_marker(did), state, ex=ACCOUNT_MARKER_TTL)
        pipe.exists(*_known_keys(did))
        plan.append(("hide", state))
    results = iter(await pipe.execute())
    outcomes: list[str] = []
    for (did, _, _), (what, state) in zip(items, plan, strict=True):
        if what == "activate":
            outcomes.append("restored" if int(next(results)) else "ignored")
        elif what == "ignore":
            outcomes.append("ignored")
        else:
            next(results)  # SET
            if int(next(results)):
                await _drop(v, did)
            outcomes.append("purged" if state in PURGED_STATUSES else "hidden")
    return outcomes
