"""Reads of the model: one pipelined round trip per question, plus the load markers.

Every read returns the marker of the collection it depends on (ms of the last complete load,
or None), so the loader can decide fresh / stale / missing without a second round trip.
Nothing here talks to a PDS.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Iterable
from typing import Any

import valkey.asyncio as avalkey

from atcr.readmodel import keys
from atcr.readmodel._compat import done
from atcr.readmodel.models import CrewEntry, ManifestEntry, RepoStats, RepoSummary, TagEntry


def _int(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def marker_field(collection: str) -> str:
    return f"{collection}|at"


def manifest_from_json(raw_json: bytes | str, raw: bytes | None = None) -> ManifestEntry:
    d = json.loads(raw_json)
    return ManifestEntry(
        did=d["did"],
        repository=d["repository"],
        digest=d["digest"],
        media_type=d.get("media_type") or "",
        raw=raw or b"",
        hold_did=d.get("hold_did"),
        record=d.get("record") or {},
        cid=d.get("cid"),
        subject_digest=d.get("subject_digest"),
        artifact_type=d.get("artifact_type"),
        annotations=d.get("annotations") or {},
        size=len(raw) if raw else int(d.get("size") or 0),
        created_at=d.get("created_at") or "",
        rkey=d.get("rkey") or "",
        blob_cid=d.get("blob_cid"),
    )


def _tag_from_json(did: str, repository: str, raw_json: bytes | str, digest: str | None = None) -> TagEntry:
    d = json.loads(raw_json)
    return TagEntry(
        did=did,
        repository=repository,
        tag=d["tag"],
        digest=digest if digest is not None else d.get("digest") or "",
        rkey=d.get("rkey") or "",
        cid=d.get("cid"),
        updated_at=d.get("updated_at") or "",
        manifest_uri=d.get("manifest_uri"),
    )


def pick_tags(entries: Iterable[TagEntry]) -> dict[str, TagEntry]:
    """One entry per tag name when several records claim it (e.g. written by two AppViews
    under different rkeys): the most recently updated wins; ties go to our deterministic rkey."""
    best: dict[str, TagEntry] = {}
    for e in entries:
        if not e.digest:
            continue
        cur = best.get(e.tag)
        if cur is None or _tag_rank(e) > _tag_rank(cur):
            best[e.tag] = e
    return best


def _tag_rank(e: TagEntry) -> tuple[str, bool, str]:
    return (e.updated_at, e.rkey == keys.tag_rkey(e.repository, e.tag), e.rkey)


async def read_tags(v: avalkey.Valkey, did: str, repository: str) -> tuple[dict[str, TagEntry], int | None]:
    """All tags of a repository (resolved, deduplicated) and the tag collection's marker."""
    pipe = v.pipeline(transaction=False)
    pipe.hvals(keys.tags(did, repository))
    pipe.hget(keys.sync(did), marker_field(keys.TAG))
    rows, at = await pipe.execute()
    parsed = [json.loads(r) for r in rows]
    # Tags that name their manifest only by a non-hex rkey: look the digest up in the manifest records.
    unresolved = sorted({p["manifest_rkey"] for p in parsed if not p.get("digest") and p.get("manifest_rkey")})
    found: dict[str, str] = {}
    if unresolved:
        ptrs = await done(v.hmget(keys.records(did, keys.MANIFEST), unresolved))
        for rkey, raw in zip(unresolved, ptrs, strict=True):
            if raw:
                entry = json.loads(raw)
                if entry.get("d") != "1" and entry.get("p"):
                    found[rkey] = json.loads(entry["p"]).get("dg", "")
    entries = []
    for p, raw in zip(parsed, rows, strict=True):
        digest = p.get("digest") or found.get(p.get("manifest_rkey") or "", "")
        entries.append(_tag_from_json(did, repository, raw, digest))
    return pick_tags(entries), _int(at)


async def read_manifest(
    v: avalkey.Valkey, did: str, repository: str, digest: str
) -> tuple[ManifestEntry | None, int | None, int | None]:
    """(entry with bytes if cached, collection marker, ms the record was last applied)."""
    pipe = v.pipeline(transaction=False)
    pipe.hget(keys.manifests(did, repository), digest)
    pipe.get(keys.manifest_bytes(did, digest))
    pipe.hget(keys.sync(did), marker_field(keys.MANIFEST))
    pipe.hmget(
        keys.records(did, keys.MANIFEST), [keys.manifest_rkey(digest), keys.repo_manifest_rkey(repository, digest)]
    )
    entry_json, raw, at, recs = await pipe.execute()
    stamps = [t for t in (_int(json.loads(rec).get("t")) for rec in recs if rec) if t is not None]
    applied = max(stamps) if stamps else None
    if entry_json is None:
        return None, _int(at), applied
    return manifest_from_json(entry_json, raw), _int(at), applied


async def read_manifest_pointer(
    v: avalkey.Valkey, did: str, rkey: str
) -> tuple[tuple[str, str] | None, bool, int | None, int | None]:
    """What one manifest record holds: ((repository, digest) or None, known, applied ms, marker).

    `known` is False when the model has never seen the rkey (neither a record nor a tombstone).
    """
    pipe = v.pipeline(transaction=False)
    pipe.hget(keys.records(did, keys.MANIFEST), rkey)
    pipe.hget(keys.sync(did), marker_field(keys.MANIFEST))
    rec, at = await pipe.execute()
    if not rec:
        return None, False, None, _int(at)
    entry = json.loads(rec)
    applied = _int(entry.get("t"))
    if entry.get("d") == "1" or not entry.get("p"):
        return None, True, applied, _int(at)
    ptr = json.loads(entry["p"])
    return (str(ptr.get("repo", "")), str(ptr.get("dg", ""))), True, applied, _int(at)


async def read_manifest_slots(
    v: avalkey.Valkey, did: str, rkeys: list[str]
) -> tuple[dict[str, tuple[str, str] | None], bool]:
    """What the model shows at each manifest rkey, (repository, digest) or None for no record,
    and whether the account's manifests were listed once (if not, an absence means nothing)."""
    pipe = v.pipeline(transaction=False)
    pipe.hmget(keys.records(did, keys.MANIFEST), rkeys)
    pipe.hget(keys.sync(did), marker_field(keys.MANIFEST))
    recs, marker = await pipe.execute()
    out: dict[str, tuple[str, str] | None] = {}
    for rkey, rec in zip(rkeys, recs, strict=True):
        entry = json.loads(rec) if rec else {}
        if entry.get("d") == "1" or not entry.get("p"):
            out[rkey] = None
        else:
            ptr = json.loads(entry["p"])
            out[rkey] = (str(ptr.get("repo", "")), str(ptr.get("dg", "")))
    return out, _int(marker) is not None


async def read_manifest_rkeys(v: avalkey.Valkey, did: str, repository: str, digest: str) -> list[str]:
    """Every rkey the model knows holding `digest` in `repository` (see keys.manifest_rkeys)."""
    members = await done(v.smembers(keys.manifest_rkeys(did, repository, digest)))
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)


async def read_manifest_bytes(v: avalkey.Valkey, did: str, digest: str) -> bytes | None:
    raw: bytes | None = await v.get(keys.manifest_bytes(did, digest))
    return raw


async def read_manifests(v: avalkey.Valkey, did: str, repository: str) -> tuple[list[ManifestEntry], int | None]:
    pipe = v.pipeline(transaction=False)
    pipe.hvals(keys.manifests(did, repository))
    pipe.hget(keys.sync(did), marker_field(keys.MANIFEST))
    rows, at = await pipe.execute()
    entries = sorted((manifest_from_json(r) for r in rows), key=lambda e: (e.created_at, e.digest), reverse=True)
    return entries, _int(at)


async def read_referrers(v: avalkey.Valkey, did: str, repository: str, subject: str) -> list[ManifestEntry]:
    digests = sorted(d.decode() for d in await done(v.smembers(keys.referrers(did, repository, subject))))
    if not digests:
        return []
    rows = await done(v.hmget(keys.manifests(did, repository), digests))
    out = [manifest_from_json(r) for r in rows if r is not None]
    return [e for e in out if e.subject_digest == subject]


async def read_emptied(v: avalkey.Valkey, did: str, repository: str) -> bool:
    return bool(await done(v.sismember(keys.emptied(did), repository)))


async def read_repositories(v: avalkey.Valkey, did: str) -> tuple[list[str], int | None]:
    pipe = v.pipeline(transaction=False)
    pipe.zrange(keys.repositories(did), 0, -1)
    pipe.hget(keys.sync(did), marker_field(keys.MANIFEST))
    names, at = await pipe.execute()
    return sorted(n.decode() for n in names), _int(at)


async def read_single(
    v: avalkey.Valkey, did: str, name: str, collection: str
) -> tuple[dict[str, Any] | None, int | None]:
    """A one-record collection (``profile``, ``bsky``, ``captain``): its payload and marker."""
    pipe = v.pipeline(transaction=False)
    pipe.get(keys.single(did, name))
    pipe.hget(keys.sync(did), marker_field(collection))
    raw, at = await pipe.execute()
    return (json.loads(raw) if raw else None), _int(at)


async def read_page(v: avalkey.Valkey, did: str, repository: str) -> tuple[dict[str, Any] | None, int | None]:
    pipe = v.pipeline(transaction=False)
    pipe.get(keys.repo_page(did, repository))
    pipe.hget(keys.sync(did), marker_field(keys.REPO_PAGE))
    raw, at = await pipe.execute()
    return (json.loads(raw) if raw else None), _int(at)


def _crew_from_json(hold_did: str, raw: bytes | str) -> CrewEntry:
    d = json.loads(raw)
    return CrewEntry(
        hold_did=hold_did,
        member=d["member"],
        role=d.get("role") or "",
        permissions=tuple(d.get("permissions") or ()),
        rkey=d.get("rkey") or "",
        tier=d.get("tier"),
        added_at=d.get("added_at") or "",
    )


async def read_crew(v: avalkey.Valkey, hold_did: str) -> tuple[dict[str, CrewEntry], int | None]:
    pipe = v.pipeline(transaction=False)
    pipe.hvals(keys.crew(hold_did))
    pipe.hget(keys.sync(hold_did), marker_field(keys.CREW))
    rows, at = await pipe.execute()
    entries = [_crew_from_json(hold_did, r) for r in rows]
    return {e.member: e for e in entries}, _int(at)


async def read_crew_member(v: avalkey.Valkey, hold_did: str, member: str) -> tuple[CrewEntry | None, int | None]:
    pipe = v.pipeline(transaction=False)
    pipe.hget(keys.crew(hold_did), member)
    pipe.hget(keys.sync(hold_did), marker_field(keys.CREW))
    raw, at = await pipe.execute()
    return (_crew_from_json(hold_did, raw) if raw else None), _int(at)


async def read_starred(v: avalkey.Valkey, did: str) -> tuple[list[str], int | None]:
    pipe = v.pipeline(transaction=False)
    pipe.hvals(keys.starred(did))
    pipe.hget(keys.sync(did), marker_field(keys.STAR))
    rows, at = await pipe.execute()
    return sorted({r.decode() for r in rows}), _int(at)


def stats_from_hash(values: dict[bytes, bytes]) -> RepoStats:
    pulls = pushes = 0
    last_pull: str | None = None
    last_push: str | None = None
    daily: dict[str, int] = {}
    for raw in values.values():
        d = json.loads(raw)
        for day, n in (d.get("daily") or {}).items():
            daily[day] = daily.get(day, 0) + int(n)
        pulls += int(d.get("pull") or 0)
        pushes += int(d.get("push") or 0)
        if d.get("last_pull") and (last_pull is None or d["last_pull"] > last_pull):
            last_pull = d["last_pull"]
        if d.get("last_push") and (last_push is None or d["last_push"] > last_push):
            last_push = d["last_push"]
    holds = tuple(sorted(k.decode() for k in values))
    return RepoStats(pulls, pushes, last_pull, last_push, holds, tuple(sorted(daily.items())))


async def read_stats(v: avalkey.Valkey, did: str, repository: str) -> tuple[RepoStats, int | None]:
    pipe = v.pipeline(transaction=False)
    pipe.hgetall(keys.stats(did, repository))
    pipe.hget(keys.sync(did), f"stats:{repository}|at")
    values, at = await pipe.execute()
    return stats_from_hash(values), _int(at)


async def read_summaries(v: avalkey.Valkey, refs: list[tuple[str, str]]) -> list[RepoSummary]:
    """Cards for a page of repositories in one round trip (no N+1)."""
    if not refs:
        return []
    pipe = v.pipeline(transaction=False)
    for did, repo in refs:
        pipe.get(keys.identity(did))
        pipe.get(keys.repo_page(did, repo))
        pipe.scard(keys.stars(did, repo))
        pipe.hgetall(keys.stats(did, repo))
        pipe.zscore(keys.repositories(did), repo)
    out = await pipe.execute()
    cards = []
    for i, (did, repo) in enumerate(refs):
        ident, page, star_count, stats_hash, last = out[i * 5 : i * 5 + 5]
        handle = json.loads(ident).get("handle") if ident else None
        desc = None
        if page:
            value = json.loads(page).get("record") or {}
            desc = value.get("description") if isinstance(value.get("description"), str) else None
        stats = stats_from_hash(stats_hash)
        cards.append(
            RepoSummary(
                did=did,
                repository=repo,
                handle=handle,
                description=desc,
                star_count=int(star_count),
                pull_count=stats.pull_count,
                push_count=stats.push_count,
                last_push_ms=int(last or 0),
            )
        )
    return cards


async def read_top(v: avalkey.Valkey, family: str, n: int) -> list[str]:
    """The `n` highest-scored members of a bucketed zset (keys.BUCKETED), highest first.

    Each bucket gives its own top `n` (one pipeline; a cluster sends each shard its part), and
    the merge keeps the best `n`: exact, since a member lives in exactly one bucket."""
    if n <= 0:
        return []
    pipe = v.pipeline(transaction=False)
    for key in keys.buckets(family):
        pipe.zrevrange(key, 0, n - 1, withscores=True)
    rows = [(float(score), bytes(member)) for part in await pipe.execute() for member, score in part]
    rows.sort(reverse=True)  # score, then member, descending: ZREVRANGE's order
    return [member.decode() for _, member in rows[:n]]


async def read_catalog(v: avalkey.Valkey, start: bytes, n: int) -> list[str]:
    """`n` members of the bucketed catalog after `start` (a ZRANGEBYLEX bound), in byte order."""
    if n <= 0:
        return []
    pipe = v.pipeline(transaction=False)
    for key in keys.buckets(keys.CATALOG):
        pipe.zrangebylex(key, start, b"+", 0, n)
    merged = heapq.merge(*[[bytes(m) for m in part] for part in await pipe.execute()])
    return [m.decode() for m in itertools.islice(merged, n)]
