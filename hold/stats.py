"""Pull and push counters per repository, exact across concurrency, crashes and restarts.

The published numbers are `io.atcr.hold.stats` records (rkey `stats_rkey(ownerDid,
repository)`, ATCR-NOTES §3.2), but a repo commit per pull would put an fsync on every pull
and serialize all of them. So a notification only does one atomic Valkey script (HINCRBY on a
*pending* hash, ~0.1 ms), and a flusher moves the pending counts into the records every
``HOLD_STATS_FLUSH_INTERVAL`` seconds and at shutdown.

**Pending hash fields** (one hash per hold, ``hold:stats:{<hold DID>}:pending``):
``m|<rkey>`` owner and repository; ``n|<rkey>`` pulls; ``N|<rkey>`` pushes; ``l|<rkey>`` /
``L|<rkey>`` last pull / push (ms, the maximum); ``d|<rkey>|<YYYY-MM-DD>`` pulls that UTC day.

**The flush cannot lose or double-count, wherever it is interrupted:**

1. *begin* (one Lua script): if an ``inflight`` hash exists, a previous flush did not finish:
   resume it with its own flush id. Otherwise ``RENAME pending inflight`` and store a fresh
   random flush id in it. Counts that arrive from now on go to a new ``pending``.
2. *apply*: for each repository in ``inflight``, read its stats record; if the record's
   ``flushId`` is this flush id, this flush already reached it (a crash after its commit):
   skip it. Otherwise add the deltas and write the record with ``flushId`` = this id. Up to
   200 records per commit; the count and the marker land in the same signed commit, so they
   are durable together.
3. *finish*: delete ``inflight`` (only if it still carries this id).

A crash before 1 leaves the counts in ``pending``; between 1 and 3, ``inflight`` survives in
Valkey and the next flush (the first thing a restarted hold does) resumes it, skipping the
records that already carry its id. Flush ids are random, never reused, and a new flush only
starts after the previous one finished, so "record carries this id" is exactly "this flush
was applied to it". The only loss left is Valkey losing acknowledged writes (run it with
AOF, ``appendfsync everysec`` or stricter, if counts matter that much).

**Retried notifications.** An AppView that retries a notification whose answer it lost
would count twice. A notification may carry an ``Idempotency-Key`` header: the count script
records the key (``SET NX``, one hour) in the same atomic step as the increment and ignores
a second one.

**Daily pulls.** The record also carries ``dailyPulls: [{day: "YYYY-MM-DD", count}]``, the
pulls of each of the last 30 UTC days that had any (oldest first), for the web UI's
sparkline. Days are pruned when a flush touches the record, so a reader should still ignore
days older than 30 days. Both ``dailyPulls`` and ``flushId`` are additions to ATCR's schema;
ATCR readers ignore unknown fields.

Only one flusher runs per hold DID: a Valkey lock owned by the data directory's instance id,
so a restarted hold (same data directory) takes its own stale lock over at once, while a
second process can never apply the same ``inflight`` to a second repo.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from atcr.readmodel.keys import stats_rkey
from hold.errors import HoldError
from hold.repo.repo import MAX_WRITES_PER_COMMIT, Put, Repo

log = logging.getLogger("hold.stats")

STATS = "io.atcr.hold.stats"
DAYS = 30
IDEMPOTENCY_TTL = 3600
LOCK_TTL_MS = 60_000
KNOWN_CACHE = 10_000  # (owner, repository) pairs remembered as stored here

Kind = Literal["pull", "push"]
RepoProvider = Callable[[], Repo]


class StatsUnavailable(HoldError):
    error, status, default_message = "StatsUnavailable", 503, "counting needs Valkey, which is not configured"


# KEYS: pending, idempotency key. ARGV: rkey, meta, kind, n, now_ms, day, idem ttl, use idem (0/1)
_COUNT = """
if ARGV[8] == '1' then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[7]) then return 0 end
end
local r = ARGV[1]
redis.call('HSET', KEYS[1], 'm|' .. r, ARGV[2])
local count, last = 'N|', 'L|'
if ARGV[3] == 'pull' then
  count, last = 'n|', 'l|'
  redis.call('HINCRBY', KEYS[1], 'd|' .. r .. '|' .. ARGV[6], ARGV[4])
end
redis.call('HINCRBY', KEYS[1], count .. r, ARGV[4])
local cur = tonumber(redis.call('HGET', KEYS[1], last .. r) or '0')
if tonumber(ARGV[5]) > cur then redis.call('HSET', KEYS[1], last .. r, ARGV[5]) end
return 1
"""

# KEYS: pending, inflight. ARGV: a fresh flush id. -> the flush id to apply, or false (nothing to do)
_BEGIN = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  local id = redis.call('HGET', KEYS[2], '#id')
  if id then return id end
  redis.call('HSET', KEYS[2], '#id', ARGV[1])
  return ARGV[1]
end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], '#id', ARGV[1])
return ARGV[1]
"""

_FINISH = """
if redis.call('HGET', KEYS[1], '#id') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_LOCK = """
local cur = redis.call('GET', KEYS[1])
if (not cur) or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass
class Delta:
    """What one repository gained since the last flush."""

    owner: str
    repository: str
    pulls: int = 0
    pushes: int = 0
    last_pull_ms: int = 0
    last_push_ms: int = 0
    days: dict[str, int] = field(default_factory=dict)


def parse_pending(raw: dict[bytes, bytes]) -> tuple[str | None, dict[str, Delta]]:
    """(flush id, per-rkey deltas) of a pending/inflight hash."""
    meta: dict[str, tuple[str, str]] = {}
    fields: list[tuple[str, str, bytes]] = []
    flush_id: str | None = None
    for k, v in raw.items():
        key = k.decode()
        if key == "#id":
            flush_id = v.decode()
            continue
        kind, _, rest = key.partition("|")
        if kind == "m":
            owner, _, repository = v.decode().partition("\x00")
            meta[rest] = (owner, repository)
        else:
            fields.append((kind, rest, v))
    deltas: dict[str, Delta] = {}
    for kind, rest, v in fields:
        rkey, _, day = rest.partition("|")
        if rkey not in meta:
            log.error("stats: counts for %s have no owner/repository; dropped", rkey)
            continue
        d = deltas.get(rkey)
        if d is None:
            d = deltas[rkey] = Delta(*meta[rkey])
        n = int(v)
        if kind == "n":
            d.pulls += n
        elif kind == "N":
            d.pushes += n
        elif kind == "l":
            d.last_pull_ms = max(d.last_pull_ms, n)
        elif kind == "L":
            d.last_push_ms = max(d.last_push_ms, n)
        elif kind == "d":
            d.days[day] = d.days.get(day, 0) + n
    for rkey, (owner, repository) in meta.items():
        deltas.setdefault(rkey, Delta(owner, repository))
    return flush_id, deltas


def _later(current: Any, ms: int) -> str | None:
    """The later of an existing ISO timestamp and `ms` (0: none), as the record stores it."""
    old = _parse_time(current)
    if ms <= 0:
        return current if isinstance(current, str) and old is not None else None
    new = datetime.fromtimestamp(ms / 1000, UTC)
    if old is not None and old >= new:
        assert isinstance(current, str)
        return current
    return iso_ms(ms)


def merge(
    existing: dict[str, Any] | None, delta: Delta, flush_id: str, now: datetime, days: int = DAYS
) -> dict[str, Any]:
    """The stats record after adding `delta` (pure: the flush's one rule for combining counts)."""
    old = existing or {}

    def count(name: str) -> int:
        value = old.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0

    record: dict[str, Any] = {
        "$type": STATS,
        "ownerDid": delta.owner,
        "repository": delta.repository,
        "pullCount": count("pullCount") + delta.pulls,
        "pushCount": count("pushCount") + delta.pushes,
    }
    for name, ms in (("lastPull", delta.last_pull_ms), ("lastPush", delta.last_push_ms)):
        value = _later(old.get(name), ms)
        if value is not None:
            record[name] = value
    record["updatedAt"] = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    daily: dict[str, int] = {}
    for item in old.get("dailyPulls") or []:
        if isinstance(item, dict) and isinstance(item.get("day"), str) and isinstance(item.get("count"), int):
            daily[item["day"]] = daily.get(item["day"], 0) + item["count"]
    for day, n in delta.days.items():
        daily[day] = daily.get(day, 0) + n
    first = (now.astimezone(UTC).date() - timedelta(days=days - 1)).isoformat()
    kept = sorted((d, n) for d, n in daily.items() if d >= first)
    if kept:
        record["dailyPulls"] = [{"day": d, "count": n} for d, n in kept]
    record["flushId"] = flush_id
    return record


def instance_id(data_dir: Path) -> str:
    """A random id for this data directory, created once: the owner of the flush lock."""
    path = data_dir / "stats-instance"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        data_dir.mkdir(parents=True, exist_ok=True)
        value = secrets.token_hex(16)
        path.write_text(value + "\n")
        return value


@dataclass(frozen=True)
class FlushReport:
    flushes: int = 0
    records: int = 0
    skipped: int = 0  # records that already carried the flush id (resumed after a crash)


class Stats:
    """Counts into Valkey, flushes into the repo's stats records."""

    def __init__(
        self,
        valkey: Any,
        hold_did: str,
        repo: RepoProvider,
        *,
        instance: str,
        clock: Callable[[], float] = time.time,
        days: int = DAYS,
    ) -> None:
        self._valkey = valkey
        self._repo = repo
        self._instance = instance
        self._clock = clock
        self._days = days
        base = f"hold:stats:{{{hold_did}}}"
        self.pending_key, self.inflight_key, self.lock_key = base + ":pending", base + ":inflight", base + ":lock"
        self._idem_prefix = base + ":idem:"
        self._count = valkey.register_script(_COUNT)
        self._begin = valkey.register_script(_BEGIN)
        self._finish = valkey.register_script(_FINISH)
        self._lock_script = valkey.register_script(_LOCK)
        self._unlock_script = valkey.register_script(_UNLOCK)
        self._flush_lock = asyncio.Lock()
        self._known: set[str] = set()

    # --- counting (the hot path) ----------------------------------------------------------

    async def count(self, kind: Kind, owner: str, repository: str, n: int = 1, *, key: str | None = None) -> bool:
        """Add `n` pulls or pushes; False when `key` was seen before (a retried notification)."""
        now_ms = int(self._clock() * 1000)
        day = datetime.fromtimestamp(now_ms / 1000, UTC).date().isoformat()
        idem = self._idem_prefix + (hashlib.sha256(key.encode()).hexdigest()[:40] if key else "-")
        try:
            counted = await self._count(
                keys=[self.pending_key, idem],
                args=[
                    stats_rkey(owner, repository),
                    f"{owner}\x00{repository}",
                    kind,
                    n,
                    now_ms,
                    day,
                    IDEMPOTENCY_TTL,
                    "1" if key else "0",
                ],
            )
        except (ValkeyConnectionError, ValkeyTimeoutError) as exc:
            # 503, not 500: the sender keeps its counts and retries (an Idempotency-Key makes that exact).
            raise StatsUnavailable(f"cannot reach Valkey to count: {type(exc).__name__}") from None
        return bool(counted)

    # --- flushing --------------------------------------------------------------------------

    async def _lock(self) -> bool:
        return bool(await self._lock_script(keys=[self.lock_key], args=[self._instance, LOCK_TTL_MS]))

    async def flush(self) -> FlushReport:
        """Move pending counts into the records (resuming an interrupted flush first)."""
        async with self._flush_lock:
            if not await self._lock():
                log.info("stats: another hold process holds the flush lock; not flushing")
                return FlushReport()
            report = FlushReport()
            try:
                for _ in range(2):  # a resumed flush first, then what is pending now
                    fresh = f"{int(self._clock() * 1000):x}-{secrets.token_hex(8)}"
                    flush_id = await self._begin(keys=[self.pending_key, self.inflight_key], args=[fresh])
                    if not flush_id:
                        break
                    flush_id = flush_id.decode() if isinstance(flush_id, bytes) else str(flush_id)
                    raw = await self._valkey.hgetall(self.inflight_key)
                    _, deltas = parse_pending(raw)
                    written, skipped = await self._apply(flush_id, deltas)
                    await self._finish(keys=[self.inflight_key], args=[flush_id])
                    report = FlushReport(report.flushes + 1, report.records + written, report.skipped + skipped)
                    if flush_id == fresh:
                        break
            finally:
                with contextlib.suppress(Exception):
                    await self._unlock_script(keys=[self.lock_key], args=[self._instance])
            return report

    async def _apply(self, flush_id: str, deltas: dict[str, Delta]) -> tuple[int, int]:
        repo = self._repo()
        now = datetime.fromtimestamp(self._clock(), UTC)
        written = skipped = 0
        items = sorted(deltas.items())
        for start in range(0, len(items), MAX_WRITES_PER_COMMIT):
            writes = []
            for rkey, delta in items[start : start + MAX_WRITES_PER_COMMIT]:
                found = await repo.get_record(STATS, rkey)
                current = found[1] if found is not None else None
                if current is not None and current.get("flushId") == flush_id:
                    skipped += 1
                    continue
                writes.append(Put(STATS, rkey, merge(current, delta, flush_id, now, self._days)))
            if writes:
                # Shielded: a cancelled await would not stop the commit in the writer thread, and
                # the repo must see its own commit finish (its in-memory head follows it).
                await asyncio.shield(repo.apply_writes(writes))
                written += len(writes)
            await self._lock()  # renew
        return written, skipped

    async def run(self, interval: float) -> None:
        """Flush every `interval` seconds until cancelled; a failing flush is retried next round."""
        while True:
            try:
                report = await asyncio.shield(self.flush())
                if report.records:
                    log.debug("stats: flushed %d record(s)", report.records)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("stats: flush failed; the counts stay in Valkey for the next one")
            await asyncio.sleep(interval)

    # --- reading ---------------------------------------------------------------------------

    async def known(self, owner: str, repository: str) -> bool:
        """Whether this hold stores anything for (owner, repository): a stats record, or counts
        not flushed into one yet. Every push through the hold counts one, so a repository whose
        layers live here is known; a made-up name is not, and unsigned pull notifications for it
        must not create records (hold/routes_stats.py). Known pairs stay known (stats records
        are never deleted), so positive answers are remembered in memory."""
        rkey = stats_rkey(owner, repository)
        if rkey in self._known:
            return True
        async with self._valkey.pipeline(transaction=False) as pipe:
            pipe.hexists(self.pending_key, "m|" + rkey)
            pipe.hexists(self.inflight_key, "m|" + rkey)
            found = any(await pipe.execute())
        if not found:
            found = await self._repo().get_record(STATS, rkey) is not None
        if found:
            if len(self._known) >= KNOWN_CACHE:
                self._known.clear()
            self._known.add(rkey)
        return found

    async def record(self, owner: str, repository: str) -> dict[str, Any] | None:
        found = await self._repo().get_record(STATS, stats_rkey(owner, repository))
        return found[1] if found is not None else None

    async def pending(self) -> dict[str, Delta]:
        """Counts not yet in the records (pending and in flight), for tests and diagnostics."""
        _, a = parse_pending(await self._valkey.hgetall(self.pending_key))
        _, b = parse_pending(await self._valkey.hgetall(self.inflight_key))
        for rkey, d in b.items():
            x = a.setdefault(rkey, Delta(d.owner, d.repository))
            x.pulls += d.pulls
            x.pushes += d.pushes
        return a


def today(clock: Callable[[], float] = time.time) -> date:
    return datetime.fromtimestamp(clock(), UTC).date()
