"""Idempotent, rev-ordered upserts and deletes of records into the read model.

The same functions serve three writers: the Jetstream processor (one event at a time, with
the commit's rev), the cache-miss loader (a whole listing at once, see `apply_snapshot`), and
the AppView's write-through after its own putRecord. Their order of arrival is not their order
of truth, so each change is applied by one Lua script that decides, atomically with the write:

* Ordered changes carry a repo rev (a TID, lexically sortable). A change older than what the
  model already holds for that record, or older than the rev of the last complete listing of
  its collection (the "floor"), is ignored: replays after a Jetstream rewind cannot regress it.
* Deletes leave a tombstone with their rev, so a late create cannot resurrect the record.
* Listings carry the time they started (Valkey's clock) and, when the PDS reports one, the
  repo rev read just before listing. An entry written after the listing started (e.g. by the
  AppView's own push) is never overwritten or purged by that listing.
* A change without a rev (write-through when the caller has no commit rev) is applied
  unconditionally and keeps the previous rev as its lower bound.

Per-DID state is updated inside the script (all of one DID's keys share a cluster slot).
Cross-DID indexes (catalog, recent, popular, search, star counts of the starred repository,
stats sums of the owner) are updated right after, from what the script reports; they are
eventually consistent and rebuildable, and nothing on the pull path reads them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import valkey.asyncio as avalkey
from valkey.exceptions import NoScriptError

from atcr.errors import DigestMismatch
from atcr.readmodel import keys, search
from atcr.readmodel._compat import done
from atcr.readmodel.records import Normalized, is_digest, normalize

log = logging.getLogger("atcr.readmodel")

DEFAULT_RETENTION: Final = 7 * 24 * 3600
"""Seconds a DID's keys live without any write. Freshness is decided by load markers, not by
this TTL: it only bounds memory for users nobody asks about."""

DEFAULT_BYTES_TTL: Final = 7 * 24 * 3600
RECENT_MAX: Final = 1000

KIND_OF: Final[dict[str, str]] = {
    keys.MANIFEST: "manifest",
    keys.TAG: "tag",
    keys.PROFILE: "single",
    keys.BSKY_PROFILE: "single",
    keys.CAPTAIN: "single",
    keys.REPO_PAGE: "page",
    keys.CREW: "crew",
    keys.STAR: "star",
    keys.STATS: "stats",
}

_APPLY_LUA: Final = r"""
local rh, sh = KEYS[1], KEYS[2]
local kind, rkey, rev, snap_t, coll, op = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local ptr_s, payload, ttl, pfx, cid = ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10], ARGV[11]

local tm = redis.call('TIME')
local now = string.format('%.0f', tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000))

local cur_s = redis.call('HGET', rh, rkey)
local cur = nil
if cur_s then cur = cjson.decode(cur_s) end
local cur_rev, cur_t = '', 0
if cur then
  cur_rev = cur['r'] or ''
  cur_t = tonumber(cur['t']) or 0
end
local floor = redis.call('HGET', sh, coll .. '|floor') or ''
local bound = cur_rev
if floor > bound then bound = floor end
if rev ~= '' and rev < bound then return {0, '', 0} end
if snap_t ~= '' and cur and tonumber(snap_t) < cur_t and (rev == '' or cur_rev == '') then
  return {0, '', 0}
end

local live = cur and cur['d'] ~= '1' and cur['p']
local old, new = nil, nil
if live then old = cjson.decode(cur['p']) end
if op == 'put' then new = cjson.decode(ptr_s) end
local same = 0
if live and op == 'put' and cur['p'] == ptr_s and cid ~= '' and cur['c'] == cid then same = 1 end
local flag = 0

local function expire(k) redis.call('EXPIRE', k, ttl) end
local function owned(k, field)
  local v = redis.call('HGET', k, field)
  if not v then return false end
  local ok, dec = pcall(cjson.decode, v)
  return ok and type(dec) == 'table' and dec['rkey'] == rkey
end
local function repo_gone(repo)
  if redis.call('EXISTS', pfx .. 'm:' .. repo) == 0 and redis.call('EXISTS', pfx .. 't:' .. repo) == 0 then
    redis.call('ZREM', pfx .. 'repos', repo)
    redis.call('SADD', pfx .. 'emptied', repo)
    expire(pfx .. 'emptied')
    return 1
  end
  return 0
end

if kind == 'manifest' then
  -- Several records may hold one digest in one repository (other AppViews' rkeys): the set
  -- 'mo:<repo>@<digest>' names them, and the 'm:' entry goes only with the last one.
  if old then
    local mk = pfx .. 'm:' .. old['repo']
    local ok = pfx .. 'mo:' .. old['repo'] .. '@' .. old['dg']
    local moved = not new or new['repo'] ~= old['repo'] or new['dg'] ~= old['dg']
    if moved then
      local existed = redis.call('EXISTS', ok) == 1
      redis.call('SREM', ok, rkey)
      if redis.call('SCARD', ok) == 0 and (existed or owned(mk, old['dg'])) then
        redis.call('HDEL', mk, old['dg'])
        if old['sub'] then redis.call('SREM', pfx .. 'ref:' .. old['repo'] .. '@' .. old['sub'], old['dg']) end
      end
    end
  end
  if new then
    local mk = pfx .. 'm:' .. new['repo']
    local ok = pfx .. 'mo:' .. new['repo'] .. '@' .. new['dg']
    if redis.call('EXISTS', ok) == 0 then
      -- Entries stored before these sets existed name their one record in the payload.
      local prev = redis.call('HGET', mk, new['dg'])
      if prev then
        local okd, dec = pcall(cjson.decode, prev)
        if okd and type(dec) == 'table' and type(dec['rkey']) == 'string' and dec['rkey'] ~= rkey then
          local pr = redis.call('HGET', rh, dec['rkey'])
          if pr and not string.find(pr, '"d":"1"', 1, true) then redis.call('SADD', ok, dec['rkey']) end
        end
      end
    end
    redis.call('SADD', ok, rkey)
    expire(ok)
    redis.call('HSET', mk, new['dg'], payload)
    expire(mk)
    if new['sub'] then
      local rk = pfx .. 'ref:' .. new['repo'] .. '@' .. new['sub']
      redis.call('SADD', rk, new['dg'])
      expire(rk)
    end
    redis.call('ZADD', pfx .. 'repos', 'GT', new['ts'], new['repo'])
    expire(pfx .. 'repos')
  end
  if old and (not new or new['repo'] ~= old['repo']) then flag = repo_gone(old['repo']) end
elseif kind == 'tag' then
  if old then redis.call('HDEL', pfx .. 't:' .. old['repo'], rkey) end
  if new then
    local tk = pfx .. 't:' .. new['repo']
    redis.call('HSET', tk, rkey, payload)
    expire(tk)
    redis.call('ZADD', pfx .. 'repos', 'GT', new['ts'], new['repo'])
    expire(pfx .. 'repos')
  end
  if old and (not new or new['repo'] ~= old['repo']) then flag = repo_gone(old['repo']) end
elseif kind == 'single' then
  if old and not new then redis.call('DEL', pfx .. old['k']) end
  if new then redis.call('SET', pfx .. new['k'], payload, 'EX', ttl) end
elseif kind == 'page' then
  if old and (not new or new['repo'] ~= old['repo']) then redis.call('DEL', pfx .. 'page:' .. old['repo']) end
  if new then redis.call('SET', pfx .. 'page:' .. new['repo'], payload, 'EX', ttl) end
elseif kind == 'crew' then
  local ck, rk = pfx .. 'crew', pfx .. 'crewrk'
  if old and redis.call('HGET', rk, old['m']) == rkey then
    redis.call('HDEL', ck, old['m'])
    redis.call('HDEL', rk, old['m'])
  end
  if new then
    redis.call('HSET', ck, new['m'], payload)
    redis.call('HSET', rk, new['m'], rkey)
    expire(ck)
    expire(rk)
  end
elseif kind == 'star' then
  local sk = pfx .. 'starred'
  redis.call('HDEL', sk, rkey)
  if new then
    redis.call('HSET', sk, rkey, new['s'])
    expire(sk)
  end
  if old then
    for _, s in ipairs(redis.call('HVALS', sk)) do
      if s == old['s'] then flag = 1 break end
    end
  end
end

local keep_rev = rev
if keep_rev == '' then keep_rev = cur_rev end
if op == 'put' then
  redis.call('HSET', rh, rkey, cjson.encode({r = keep_rev, c = cid, t = now, p = ptr_s}))
elseif op == 'del' then
  redis.call('HSET', rh, rkey, cjson.encode({r = keep_rev, c = '', t = now, d = '1'}))
else
  redis.call('HDEL', rh, rkey)
end
expire(rh)
expire(sh)
local old_s = ''
if live then old_s = cur['p'] end
if same == 1 then return {2, old_s, flag} end
return {1, old_s, flag}
"""

_MARK_LUA: Final = r"""
local at = redis.call('HGET', KEYS[1], ARGV[1] .. '|at')
if not at or tonumber(ARGV[2]) > tonumber(at) then redis.call('HSET', KEYS[1], ARGV[1] .. '|at', ARGV[2]) end
if ARGV[3] ~= '' then
  local f = redis.call('HGET', KEYS[1], ARGV[1] .. '|floor')
  if not f or ARGV[3] > f then redis.call('HSET', KEYS[1], ARGV[1] .. '|floor', ARGV[3]) end
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
return 1
"""

_SHA: Final = {
    "apply": hashlib.sha1(_APPLY_LUA.encode()).hexdigest(),  # noqa: S324 - Valkey names scripts by SHA-1
    "mark": hashlib.sha1(_MARK_LUA.encode()).hexdigest(),  # noqa: S324
}
_SRC: Final = {"apply": _APPLY_LUA, "mark": _MARK_LUA}


@dataclass(frozen=True)
class _Call:
    script: str
    keys: tuple[str, ...]
    args: tuple[str, ...]


@dataclass(frozen=True)
class _Change:
    """One applied change, as the script reported it, for the cross-DID index updates."""

    did: str
    collection: str
    rkey: str
    new: Normalized | None
    old_ptr: dict[str, str] | None
    flag: int
    same: bool  # re-applied unchanged: idempotent index writes still run (their keys may have expired)


async def _run(v: avalkey.Valkey, calls: Sequence[_Call]) -> list[Any]:
    """EVALSHA every call in one pipeline; load scripts and rerun only the calls that missed them."""
    results: list[Any] = [None] * len(calls)
    pending = list(range(len(calls)))
    for attempt in range(2):
        pipe = v.pipeline(transaction=False)
        for i in pending:
            call = calls[i]
            # execute_command: a cluster pipeline refuses pipe.evalsha, but routes EVALSHA by its keys.
            pipe.execute_command("EVALSHA", _SHA[call.script], len(call.keys), *call.keys, *call.args)
        out = await pipe.execute(raise_on_error=False)
        missing: list[int] = []
        for i, res in zip(pending, out, strict=True):
            if isinstance(res, NoScriptError) and attempt == 0:
                missing.append(i)
            elif isinstance(res, Exception):
                raise res
            else:
                results[i] = res
        if not missing:
            return results
        for name in {calls[i].script for i in missing}:
            await v.script_load(_SRC[name])
        pending = missing
    return results


def _apply_call(
    did: str,
    collection: str,
    rkey: str,
    norm: Normalized | None,
    *,
    op: str,
    cid: str | None,
    rev: str | None,
    snap_t: int | None,
    retention: int,
) -> _Call:
    kind = norm.kind if norm is not None else KIND_OF[collection]
    return _Call(
        "apply",
        (keys.records(did, collection), keys.sync(did)),
        (
            kind,
            rkey,
            rev or "",
            "" if snap_t is None else str(snap_t),
            collection,
            op,
            norm.ptr_json if norm is not None else "",
            norm.payload if norm is not None else "",
            str(retention),
            keys.did_prefix(did),
            cid or "",
        ),
    )


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _change(
    did: str, collection: str, rkey: str, norm: Normalized | None, result: Any
) -> tuple[int, _Change | None]:
    status = int(result[0])
    if status == 0:
        return status, None
    old_s = _decode(result[1])
    old_ptr = json.loads(old_s) if old_s else None
    return status, _Change(did, collection, rkey, norm, old_ptr, int(result[2]), status == 2)


def queue_blob_hints(pipe: Any, did: str, payload: str, retention: int) -> None:
    """Remember the blobs a manifest names, on its hold, and when (`keys.blob_hints`): the
    owner's HEAD before an upload is answered from a recent one instead of asking the hold.
    Entries are not removed with a manifest (another may name the blob): they age out, well
    before a hold's GC may delete a blob whose manifests are gone (docs/cache.md)."""
    entry = json.loads(payload)
    hold = entry.get("hold_did")
    record = entry.get("record")
    if not isinstance(hold, str) or not hold or not isinstance(record, dict):
        return
    layers = record.get("layers")
    hints: dict[str, str] = {}
    stamp = int(time.time() * 1000)
    for desc in [record.get("config"), *(layers if isinstance(layers, list) else [])]:
        if not isinstance(desc, dict):
            continue
        digest, size = desc.get("digest"), desc.get("size")
        if is_digest(digest) and isinstance(size, int) and not isinstance(size, bool) and size >= 0:
            hints[str(digest)] = f"{hold}|{size}|{stamp}"
    if hints:
        pipe.hset(keys.blob_hints(did), mapping=hints)
        pipe.expire(keys.blob_hints(did), retention)


def parse_blob_hint(raw: Any) -> tuple[str, int, int] | None:
    """(hold DID, size, ms written) of one `keys.blob_hints` value; None if absent or malformed."""
    if not raw:
        return None
    hold, size, stamp = (*(raw.decode() if isinstance(raw, bytes) else str(raw)).rsplit("|", 2), "", "")[:3]
    if not hold or not size.isdigit() or not stamp.isdigit():
        return None
    return hold, int(size), int(stamp)


async def _update_indexes(v: avalkey.Valkey, changes: Sequence[_Change], retention: int) -> None:
    """Cross-DID indexes: catalog, recent, popular, search, star sets, stats sums."""
    if not changes:
        return
    pipe = v.pipeline(transaction=False)
    recount_stars: set[tuple[str, str]] = set()
    recount_stats: set[tuple[str, str]] = set()
    recent_touched: set[str] = set()
    page_docs: dict[tuple[str, str], str | None] = {}
    for ch in changes:
        new_ptr = ch.new.ptr if ch.new is not None else None
        if ch.collection == keys.MANIFEST and ch.new is not None:
            queue_blob_hints(pipe, ch.did, ch.new.payload, retention)
        if ch.collection in (keys.MANIFEST, keys.TAG):
            if new_ptr is not None:
                member = f"{ch.did}/{new_ptr['repo']}"
                pipe.zadd(keys.bucket(keys.CATALOG, member), {member: 0})
                pipe.zadd(keys.bucket(keys.RECENT, member), {member: int(new_ptr.get("ts") or 0)}, gt=True)
                recent_touched.add(keys.bucket(keys.RECENT, member))
                search.queue_name_tokens(pipe, member, new_ptr["repo"])
            if ch.flag and ch.old_ptr is not None:
                gone = f"{ch.did}/{ch.old_ptr['repo']}"
                for family in keys.BUCKETED:
                    pipe.zrem(keys.bucket(family, gone), gone)
                page_docs[(ch.did, ch.old_ptr["repo"])] = None
        elif ch.collection == keys.REPO_PAGE and not ch.same:
            if ch.old_ptr is not None and (new_ptr is None or new_ptr["repo"] != ch.old_ptr["repo"]):
                page_docs.setdefault((ch.did, ch.old_ptr["repo"]), "")
            if new_ptr is not None and ch.new is not None:
                record = json.loads(ch.new.payload).get("record") or {}
                desc = record.get("description")
                page_docs[(ch.did, new_ptr["repo"])] = desc if isinstance(desc, str) else ""
        elif ch.collection == keys.STAR:
            if ch.old_ptr is not None and not ch.flag:
                owner, _, repo = ch.old_ptr["s"].partition("/")
                pipe.srem(keys.stars(owner, repo), ch.did)
                recount_stars.add((owner, repo))
            if new_ptr is not None:
                owner, _, repo = new_ptr["s"].partition("/")
                pipe.sadd(keys.stars(owner, repo), ch.did)
                pipe.expire(keys.stars(owner, repo), retention)
                recount_stars.add((owner, repo))
        elif ch.collection == keys.STATS:
            # ch.did is the hold; the counters live with the repository owner.
            if ch.old_ptr is not None and (new_ptr is None or new_ptr != ch.old_ptr):
                pipe.hdel(keys.stats(ch.old_ptr["o"], ch.old_ptr["repo"]), ch.did)
                recount_stats.add((ch.old_ptr["o"], ch.old_ptr["repo"]))
            if new_ptr is not None and ch.new is not None:
                skey = keys.stats(new_ptr["o"], new_ptr["repo"])
                pipe.hset(skey, ch.did, ch.new.payload)
                pipe.expire(skey, retention)
                recount_stats.add((new_ptr["o"], new_ptr["repo"]))
    for recent in sorted(recent_touched):  # each bucket keeps RECENT_MAX: a merged top-n stays exact
        pipe.zremrangebyrank(recent, 0, -(RECENT_MAX + 1))
    star_pairs = sorted(recount_stars)
    stat_pairs = sorted(recount_stats)
    for owner, repo in star_pairs:
        pipe.scard(keys.stars(owner, repo))
    for owner, repo in stat_pairs:
        pipe.hvals(keys.stats(owner, repo))
    out = await pipe.execute()
    tail = out[len(out) - len(star_pairs) - len(stat_pairs) :] if (star_pairs or stat_pairs) else []
    pipe = v.pipeline(transaction=False)
    queued = False
    for (owner, repo), count in zip(star_pairs, tail[: len(star_pairs)], strict=True):
        pipe.zadd(keys.bucket(keys.POPULAR_STARS, f"{owner}/{repo}"), {f"{owner}/{repo}": int(count)})
        queued = True
    for (owner, repo), vals in zip(stat_pairs, tail[len(star_pairs) :], strict=True):
        pulls = sum(int(json.loads(x).get("pull") or 0) for x in vals)
        pipe.zadd(keys.bucket(keys.POPULAR_PULLS, f"{owner}/{repo}"), {f"{owner}/{repo}": pulls})
        queued = True
    if queued:
        await pipe.execute()
    for (did, repo), desc in page_docs.items():
        await search.index_repository(v, did, repo, desc)


def _op_for(record: dict[str, Any] | None, norm: Normalized | None) -> str:
    return "put" if record is not None and norm is not None else "del"


async def apply_record(
    v: avalkey.Valkey,
    did: str,
    collection: str,
    rkey: str,
    record: dict[str, Any] | None,
    *,
    cid: str | None,
    rev: str | None,
    raw_manifest: bytes | None = None,
    retention: int = DEFAULT_RETENTION,
    bytes_ttl: int = DEFAULT_BYTES_TTL,
) -> bool:
    """Upsert one record (delete when `record` is None) into the model.

    Returns False when the change was ignored: older than what the model holds (by `rev`), or
    a collection the model does not keep. Applying the same change twice is a no-op. A record
    that no longer parses (e.g. its repository became invalid) removes what the old one put.
    `raw_manifest`, for manifests, is checked against the record's digest and cached.
    """
    if collection not in keys.COLLECTIONS:
        return False
    norm = normalize(did, collection, rkey, record, cid) if record is not None else None
    call = _apply_call(
        did, collection, rkey, norm, op=_op_for(record, norm), cid=cid, rev=rev, snap_t=None, retention=retention
    )
    (result,) = await _run(v, [call])
    status, change = _change(did, collection, rkey, norm, result)
    if change is not None:
        await _update_indexes(v, [change], retention)
    if status and raw_manifest is not None and collection == keys.MANIFEST and record is not None:
        digest = record.get("digest")
        if is_digest(digest):
            await store_manifest_bytes(v, did, str(digest), raw_manifest, ttl=bytes_ttl)
    return status != 0


async def apply_snapshot(
    v: avalkey.Valkey,
    did: str,
    collection: str,
    records: Iterable[tuple[str, dict[str, Any], str | None]],
    *,
    rev: str | None,
    started_ms: int,
    complete: bool,
    mark: bool | None = None,
    absent: Iterable[str] = (),
    retention: int = DEFAULT_RETENTION,
) -> int:
    """Apply what a PDS returned for one collection: ``(rkey, value, cid)`` records.

    `started_ms` is Valkey's clock when the fetch began, `rev` the repo rev read before it
    (None when the server does not report one). With `complete`, the records are the whole
    collection: entries missing from it are purged and the collection is marked loaded at
    `started_ms`, which is what readers check for freshness. `absent` names rkeys known to be
    gone (a getRecord that answered RecordNotFound). `mark` (default: `complete`) marks the
    collection loaded without purging, for a listing cut short by a page limit.
    Returns how many entries changed.
    """
    if collection not in keys.COLLECTIONS:
        return 0
    batch = list(records)
    purge = set(absent)
    if complete:
        existing = await done(v.hkeys(keys.records(did, collection)))
        seen = {rkey for rkey, _, _ in batch}
        purge |= {_decode(k) for k in existing} - seen
    calls: list[_Call] = []
    norms: list[tuple[str, Normalized | None]] = []
    for rkey, value, cid in batch:
        norm = normalize(did, collection, rkey, value, cid)
        op = "put" if norm is not None else "purge"
        calls.append(
            _apply_call(did, collection, rkey, norm, op=op, cid=cid, rev=rev, snap_t=started_ms, retention=retention)
        )
        norms.append((rkey, norm))
    for rkey in sorted(purge):
        calls.append(
            _apply_call(
                did, collection, rkey, None, op="purge", cid=None, rev=rev, snap_t=started_ms, retention=retention
            )
        )
        norms.append((rkey, None))
    if complete if mark is None else mark:
        calls.append(
            _Call("mark", (keys.sync(did),), (collection, str(started_ms), rev or "", str(retention)))
        )
    results = await _run(v, calls)
    changes: list[_Change] = []
    changed = 0
    for (rkey, norm), result in zip(norms, results, strict=False):
        status, change = _change(did, collection, rkey, norm, result)
        if status == 1:
            changed += 1
        if change is not None:
            changes.append(change)
    await _update_indexes(v, changes, retention)
    return changed


async def store_manifest_bytes(
    v: avalkey.Valkey, did: str, digest: str, raw: bytes, *, ttl: int = DEFAULT_BYTES_TTL
) -> None:
    """Cache the exact manifest bytes, after checking that they hash to `digest`."""
    verify_digest(digest, raw)
    await v.set(keys.manifest_bytes(did, digest), raw, ex=ttl)


def verify_digest(digest: str, raw: bytes) -> None:
    """Raise DigestMismatch unless `raw` hashes to `digest` (sha256 or sha512)."""
    algo, _, hexpart = digest.partition(":")
    if algo not in ("sha256", "sha512"):
        raise DigestMismatch(f"unsupported digest algorithm in {digest!r}")
    if hashlib.new(algo, raw).hexdigest() != hexpart:
        raise DigestMismatch(f"bytes do not hash to {digest}")


async def forget_identity(v: avalkey.Valkey, did: str, handle: str | None = None) -> None:
    """Drop cached identity of a DID (a Jetstream ``identity`` event said it changed)."""
    names = [keys.identity(did), keys.negative_identity(did)]
    if handle:
        names += [keys.identity(handle.lower()), keys.negative_identity(handle.lower())]
    raw = await v.get(keys.identity(did))
    if raw:
        old = json.loads(raw).get("handle")
        if isinstance(old, str):
            names.append(keys.identity(old))
    await v.delete(*names)


async def forget_did(v: avalkey.Valkey, did: str) -> int:
    """Remove every per-DID key (account deleted). Cross-DID indexes keep stale members until
    they are next touched; they only point at data that now reads as absent."""
    deleted = 0
    async for key in v.scan_iter(match=keys.did_prefix(did).replace("[", "\\[") + "*", count=500):
        deleted += int(await v.delete(key))
    await forget_identity(v, did)
    return deleted


async def migrate_legacy_indexes(v: avalkey.Valkey, *, chunk: int = 1000) -> int:
    """Move what earlier versions wrote to the unsplit global indexes into their buckets; returns
    the members moved. Idempotent and cheap once done (one EXISTS per family); two replicas
    running it at once only ZADD the same members twice."""
    moved = 0
    families: list[tuple[str, Any]] = [(f, functools.partial(keys.bucket, f)) for f in keys.BUCKETED]
    families.append((keys.SEARCH_TERMS, lambda m: keys.search_terms(m.split("\0", 1)[0])))
    for legacy, where in families:
        if not await v.exists(legacy):
            continue
        start = 0
        while True:
            rows = await done(v.zrange(legacy, start, start + chunk - 1, withscores=True))
            if not rows:
                break
            pipe = v.pipeline(transaction=False)
            for member, score in rows:
                pipe.zadd(where(member.decode()), {member: score})
            await pipe.execute()
            moved += len(rows)
            start += chunk
        await v.delete(legacy)
        log.info("read model: moved %s into its hash-tagged buckets", legacy)
    return moved
