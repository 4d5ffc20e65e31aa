"""Storage quotas (ATCR-NOTES §5.5): tiers from a file, usage = a user's unique layer digests.

**Tiers.** ``HOLD_QUOTAS_PATH`` names a YAML or JSON file in ATCR's ``quotas.yaml`` shape::

    tiers:
      deckhand:      {quota: 5GB}
      bosun:         {quota: 50GB}
      quartermaster: {quota: 100GB, scan_on_push: true}
    defaults:
      new_crew_tier: deckhand

``quota`` is bytes (an integer) or a size with a unit (``5GB`` = 5·10⁹ bytes, ``5GiB`` =
5·2³⁰). The order of the file is the tier rank (``updateCrewTier``'s ``tierRank``). Without a
file quotas are off: usage is still counted and reported, nothing is refused. The captain is
never limited; other users are limited by their crew record's ``tier`` (unknown or missing:
the default tier).

**Usage** is the sum of the sizes of the distinct digests in the user's
``io.atcr.hold.layer`` records. The records are the truth; Valkey keeps an index so a check is
one round trip instead of a repo scan: per user a hash digest→size, the running total, and
the set of (manifest, digest) pairs already recorded (so a re-push writes no duplicate layer
records). The index is a set union, so rebuilding it from the records (at every start, in the
background) is idempotent and repairs a crash between a layer commit and the index update.

**When the check runs** (ATCR only checked at manifest time, after the bytes were stored):

1. ``initiateUpload`` with a ``size``: refused if usage + pending + size exceeds the limit;
2. ``completeUpload``, after the parts are known and before the blob becomes visible: same
   check with the real size, and on success the blob is *reserved* (a pending entry), so a
   user cannot upload unlimited blobs and never push a manifest. Pending entries are dropped
   when a manifest commits them, and expire after ``HOLD_UPLOAD_MAX_AGE``;
3. ``notifyManifest`` (push): the manifest's layers not yet in the user's usage must fit
   (pending reservations are not counted again here, so a push whose blobs were admitted is
   not refused by its own reservations).
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atcr.errors import ConfigError
from hold.auth import Captain, CrewMember
from hold.errors import Forbidden, HoldError
from hold.repo.repo import Repo

log = logging.getLogger("hold.quota")

LAYER = "io.atcr.hold.layer"
_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")


class QuotaExceeded(Forbidden):
    error, default_message = "QuotaExceeded", "this push would exceed your storage quota on this hold"


class QuotaUnavailable(HoldError):
    error, status, default_message = "QuotaUnavailable", 503, "quota accounting needs Valkey, which is not configured"


# --- tiers -----------------------------------------------------------------------------------------


def parse_size(value: Any, where: str) -> int:
    """Bytes from an integer or a string such as ``5GB``, ``1.5 GiB`` or ``500MB``."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"{where}: must not be negative")
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match and match.group(2).lower() in _UNITS:
            return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    raise ConfigError(f"{where}: expected bytes or a size such as 5GB, got {value!r}")


def format_size(n: int) -> str:
    """ATCR's human form: decimal units, at most one decimal, ``5 GB``."""
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= factor:
            value = n / factor
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class Tier:
    name: str
    quota_bytes: int
    scan_on_push: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "quotaBytes": self.quota_bytes,
            "quotaFormatted": format_size(self.quota_bytes),
            "scanOnPush": self.scan_on_push,
        }


@dataclass(frozen=True)
class QuotaPolicy:
    tiers: tuple[Tier, ...] = ()
    default_tier: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.tiers)

    def tier(self, name: str | None) -> Tier | None:
        """The tier called `name`, else the default tier, else None (unlimited)."""
        for t in self.tiers:
            if t.name == name:
                return t
        for t in self.tiers:
            if t.name == self.default_tier:
                return t
        return None

    def by_rank(self, rank: int) -> Tier | None:
        return self.tiers[rank] if 0 <= rank < len(self.tiers) else None

    @classmethod
    def parse(cls, data: Any, where: str = "quotas") -> QuotaPolicy:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: expected a mapping with 'tiers' and 'defaults'")
        raw_tiers = data.get("tiers") or {}
        items: list[tuple[str, Any]]
        if isinstance(raw_tiers, dict):
            items = [(str(k), v) for k, v in raw_tiers.items()]
        elif isinstance(raw_tiers, list):
            items = []
            for i, t in enumerate(raw_tiers):
                if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                    raise ConfigError(f"{where}: tiers[{i}] needs a name")
                items.append((t["name"], t))
        else:
            raise ConfigError(f"{where}: 'tiers' must be a mapping or a list")
        tiers = []
        for name, spec in items:
            if not name:
                raise ConfigError(f"{where}: a tier needs a name")
            if isinstance(spec, dict):
                if "quota" not in spec:
                    raise ConfigError(f"{where}: tier {name!r} needs a quota")
                quota = parse_size(spec["quota"], f"{where}: tier {name!r} quota")
                scan = spec.get("scan_on_push", spec.get("scanOnPush", False))
                if not isinstance(scan, bool):
                    raise ConfigError(f"{where}: tier {name!r} scan_on_push must be true or false")
            else:
                quota, scan = parse_size(spec, f"{where}: tier {name!r}"), False
            tiers.append(Tier(name, quota, scan))
        if len({t.name for t in tiers}) != len(tiers):
            raise ConfigError(f"{where}: tier names must be unique")
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, dict):
            raise ConfigError(f"{where}: 'defaults' must be a mapping")
        default = defaults.get("new_crew_tier")
        if default is None and tiers:
            default = tiers[0].name
        if default is not None and default not in {t.name for t in tiers}:
            raise ConfigError(f"{where}: defaults.new_crew_tier {default!r} is not a tier")
        return cls(tuple(tiers), default)

    @classmethod
    def load(cls, path: Path | None) -> QuotaPolicy:
        """The policy in `path` (YAML or JSON); quotas off without a path. ConfigError names the problem."""
        if path is None:
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"HOLD_QUOTAS_PATH={str(path)!r}: {exc.strerror or exc}") from None
        data: Any
        if path.suffix.lower() == ".json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"HOLD_QUOTAS_PATH={str(path)!r}: not valid JSON: {exc}") from None
        else:
            # PyYAML comes with litestar; loaded by name because it ships without type stubs.
            yaml: Any = importlib.import_module("yaml")
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"HOLD_QUOTAS_PATH={str(path)!r}: not valid YAML: {exc}") from None
        return cls.parse(data, f"HOLD_QUOTAS_PATH={str(path)!r}")


# --- the usage index (Valkey) -------------------------------------------------------------------------

# KEYS: blobs, total, pending. ARGV: digest, size, limit (-1: none), now (s), max_age (s), reserve (0/1)
# -> {1|0, usage counted against the limit}
_ADMIT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {1, 0} end
local total = tonumber(redis.call('GET', KEYS[2]) or '0')
local pending = 0
local cutoff = tonumber(ARGV[4]) - tonumber(ARGV[5])
local items = redis.call('HGETALL', KEYS[3])
for i = 1, #items, 2 do
  local value = items[i + 1]
  local sep = string.find(value, ':', 1, true)
  local size = tonumber(string.sub(value, 1, sep - 1))
  local ts = tonumber(string.sub(value, sep + 1))
  if ts < cutoff then
    redis.call('HDEL', KEYS[3], items[i])
  elseif items[i] ~= ARGV[1] then
    pending = pending + size
  end
end
local used = total + pending
local limit = tonumber(ARGV[3])
if limit >= 0 and used + tonumber(ARGV[2]) > limit then return {0, used} end
if ARGV[6] == '1' then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2] .. ':' .. ARGV[4])
  redis.call('EXPIRE', KEYS[3], ARGV[5])
end
return {1, used}
"""

# KEYS: blobs, total, pending, layers. ARGV: n, digest1, size1, ..., digestN, sizeN, layer keys...
_COMMIT = """
local n = tonumber(ARGV[1])
local added = 0
for i = 0, n - 1 do
  local digest, size = ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  if redis.call('HSETNX', KEYS[1], digest, size) == 1 then
    redis.call('INCRBY', KEYS[2], size)
    added = added + 1
  end
  redis.call('HDEL', KEYS[3], digest)
end
for i = 2 + 2 * n, #ARGV do
  redis.call('SADD', KEYS[4], ARGV[i])
end
return added
"""


# KEYS: blobs, total, layers. ARGV: n, digest1..digestN, layer keys... (the GC dropped these records)
_FORGET = """
local n = tonumber(ARGV[1])
local freed = 0
for i = 2, n + 1 do
  local size = redis.call('HGET', KEYS[1], ARGV[i])
  if size then
    redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('DECRBY', KEYS[2], size)
    freed = freed + tonumber(size)
  end
end
for i = n + 2, #ARGV do
  redis.call('SREM', KEYS[3], ARGV[i])
end
return freed
"""


@dataclass(frozen=True)
class Usage:
    unique_blobs: int
    total_size: int


class UsageIndex:
    """The Valkey index of per-user usage, namespaced by the hold's DID."""

    def __init__(self, valkey: Any, hold_did: str, *, clock: Callable[[], float] = time.time) -> None:
        self._valkey = valkey
        self._hold = hold_did
        self._clock = clock
        self._admit = valkey.register_script(_ADMIT)
        self._commit = valkey.register_script(_COMMIT)
        self._forget = valkey.register_script(_FORGET)

    def keys(self, user: str) -> tuple[str, str, str, str]:
        # One hash tag per (hold, user): the scripts touch only one cluster slot.
        base = f"hold:quota:{{{self._hold}|{user}}}"
        return base + ":blobs", base + ":total", base + ":pending", base + ":layers"

    def now(self) -> float:
        return self._clock()

    async def usage(self, user: str) -> Usage:
        blobs, total, _, _ = self.keys(user)
        async with self._valkey.pipeline(transaction=False) as pipe:
            pipe.hlen(blobs)
            pipe.get(total)
            count, size = await pipe.execute()
        return Usage(int(count or 0), int(size or 0))

    async def known(self, user: str, digests: Sequence[str]) -> set[str]:
        """The digests already counted in `user`'s usage."""
        if not digests:
            return set()
        values = await self._valkey.hmget(self.keys(user)[0], list(digests))
        return {d for d, v in zip(digests, values, strict=True) if v is not None}

    def _global(self) -> tuple[str, str]:
        """Hold-wide keys: digests some layer record references; staged blobs and until when."""
        base = f"hold:quota:{{{self._hold}}}"
        return base + ":refs", base + ":staged"

    async def release(self, user: str, digests: Iterable[str]) -> int:
        """Drop `user`'s reservations of `digests` (used by a manifest now, or refused)."""
        names = list(dict.fromkeys(digests))
        if not names:
            return 0
        return int(await self._valkey.hdel(self.keys(user)[2], *names))

    async def release_all(self, user: str) -> int:
        """Drop every reservation of `user` (their push is being refused)."""
        return int(await self._valkey.delete(self.keys(user)[2]))

    async def reserved(self, user: str, max_age: int) -> int:
        """Bytes `user` has reserved (blobs uploaded, not yet used by a manifest), unexpired."""
        cutoff = self._clock() - max_age
        total = 0
        for value in (await self._valkey.hgetall(self.keys(user)[2])).values():
            size, _, ts = (value.decode() if isinstance(value, bytes) else str(value)).partition(":")
            if ts and float(ts) >= cutoff:
                total += int(size)
        return total

    async def stage(self, digest: str, until: float) -> None:
        """Remember an uploaded blob until a layer record references it, or `until` passes."""
        await self._valkey.zadd(self._global()[1], {digest: until}, gt=True)  # GT still adds new members

    async def referenced(self, digests: Iterable[str]) -> None:
        names = list(dict.fromkeys(digests))
        if names:
            await self._valkey.sadd(self._global()[0], *names)

    async def staged_expired(self, now: float, limit: int = 500) -> list[str]:
        raw = await self._valkey.zrangebyscore(self._global()[1], "-inf", now, start=0, num=limit)
        return [x.decode() if isinstance(x, bytes) else str(x) for x in raw]

    async def is_referenced(self, digest: str) -> bool:
        return bool(await self._valkey.sismember(self._global()[0], digest))

    async def unstage(self, digest: str, *, if_before: float) -> None:
        """Forget a staged blob, unless a new upload staged it again after `if_before`."""
        score = await self._valkey.zscore(self._global()[1], digest)
        if score is not None and float(score) <= if_before:
            await self._valkey.zrem(self._global()[1], digest)

    async def staged_pending(self, now: float) -> set[str]:
        """Blobs uploaded within their grace that no layer record references yet: uploads whose
        manifest has not come (the garbage collector keeps them)."""
        raw = await self._valkey.zrangebyscore(self._global()[1], f"({now}", "+inf")
        names = [x.decode() if isinstance(x, bytes) else str(x) for x in raw]
        if not names:
            return set()
        flags = await self._valkey.smismember(self._global()[0], names)
        return {d for d, f in zip(names, flags, strict=True) if not f}

    async def deleted(self, digests: Iterable[str]) -> None:
        """The garbage collector deleted these blobs: nothing references or stages them."""
        names = list(dict.fromkeys(digests))
        if names:
            async with self._valkey.pipeline(transaction=False) as pipe:
                pipe.srem(self._global()[0], *names)
                pipe.zrem(self._global()[1], *names)
                await pipe.execute()

    async def forget(self, user: str, digests: Iterable[str], pairs: Iterable[str]) -> int:
        """Drop `digests` from `user`'s usage and the recorded pairs (their layer records were
        deleted and no other record of the user names them); returns the bytes freed."""
        names = list(dict.fromkeys(digests))
        blobs, total, _, layers = self.keys(user)
        return int(await self._forget(keys=[blobs, total, layers], args=[len(names), *names, *pairs]))

    async def recorded(self, user: str, pairs: Sequence[str]) -> set[str]:
        """The ``<manifest rkey>|<digest>`` pairs that already have a layer record."""
        if not pairs:
            return set()
        flags = await self._valkey.smismember(self.keys(user)[3], list(pairs))
        return {p for p, f in zip(pairs, flags, strict=True) if f}

    async def admit(
        self, user: str, digest: str, size: int, limit: int | None, *, max_age: int, reserve: bool
    ) -> tuple[bool, int]:
        blobs, total, pending, _ = self.keys(user)
        ok, used = await self._admit(
            keys=[blobs, total, pending],
            args=[digest, size, -1 if limit is None else limit, int(self._clock()), max_age, "1" if reserve else "0"],
        )
        return bool(ok), int(used)

    async def commit(self, user: str, blobs: Iterable[tuple[str, int]], pairs: Iterable[str]) -> int:
        """Count `blobs` in the user's usage (idempotent) and remember the recorded pairs."""
        flat: list[Any] = []
        n = 0
        for digest, size in blobs:
            flat += [digest, size]
            n += 1
        args = [n, *flat, *pairs]
        return int(await self._commit(keys=list(self.keys(user)), args=args))

    async def rebuild(self, repo: Repo, *, page: int = 1000) -> int:
        """Add every layer record of the repo to the index (idempotent); returns records seen."""
        seen = 0
        cursor: str | None = None
        while True:
            records = await repo.list_records(LAYER, limit=page, cursor=cursor, reverse=True)
            # Loaded on every primary first: a cluster pipeline cannot load a missing script.
            sha = await self._valkey.script_load(_COMMIT)
            async with self._valkey.pipeline(transaction=False) as pipe:
                for rec in records.records:
                    v = rec.value
                    user, digest, size = v.get("userDid"), v.get("digest"), v.get("size")
                    if not isinstance(user, str) or not isinstance(digest, str) or not isinstance(size, int):
                        continue
                    pairs = []
                    manifest = v.get("manifest")
                    if isinstance(manifest, str):
                        pairs.append(f"{manifest.rsplit('/', 1)[-1]}|{digest}")
                    # execute_command: a cluster pipeline refuses pipe.evalsha, but routes EVALSHA by its keys.
                    pipe.execute_command("EVALSHA", sha, 4, *self.keys(user), 1, digest, size, *pairs)
                    pipe.sadd(self._global()[0], digest)
                    seen += 1
                await pipe.execute()
            if records.cursor is None:
                return seen
            cursor = records.cursor


# --- the service ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Allowance:
    tier: Tier | None
    limit: int | None  # None: unlimited


class QuotaService:
    """Quota questions for the upload and push paths, and `getQuota`/`listTiers` answers."""

    def __init__(
        self,
        policy: QuotaPolicy,
        index: UsageIndex | None,
        captain: Callable[[], Awaitable[Captain]],
        member: Callable[[str], Awaitable[CrewMember | None]],
        *,
        max_age: int = 3600,
        staged_grace: int = 24 * 3600,
    ) -> None:
        self.policy = policy
        self.index = index
        self._captain = captain
        self._member = member
        self._max_age = max_age  # how long a reservation counts (HOLD_RESERVATION_TTL)
        self._staged_grace = max(staged_grace, max_age)  # how long an unused upload's bytes stay

    def _require_index(self) -> UsageIndex:
        if self.index is None:
            raise QuotaUnavailable()
        return self.index

    async def allowance(self, user: str) -> Allowance:
        captain = await self._captain()
        if captain.owner is not None and user == captain.owner:
            return Allowance(None, None)
        if not self.policy.enabled:
            return Allowance(None, None)
        member = await self._member(user)
        tier = self.policy.tier(member.tier if member is not None else None)
        return Allowance(tier, tier.quota_bytes if tier is not None else None)

    def _refuse(self, user: str, allowance: Allowance, used: int, adding: int) -> QuotaExceeded:
        limit = allowance.limit or 0
        tier = allowance.tier.name if allowance.tier is not None else "?"
        return QuotaExceeded(
            f"{user} uses {format_size(used)} of {format_size(limit)} (tier {tier}); "
            f"{format_size(adding)} more would exceed it"
        )

    async def check_upload(self, user: str, digest: str | None, size: int) -> None:
        """``initiateUpload`` with a declared size: refuse early when it cannot fit."""
        allowance = await self.allowance(user)
        if allowance.limit is None or self.index is None:
            return
        ok, used = await self.index.admit(
            user, digest or "", size, allowance.limit, max_age=self._max_age, reserve=False
        )
        if not ok:
            raise self._refuse(user, allowance, used, size)

    async def room(self, user: str) -> int | None:
        """Bytes `user` may still add (uploads reserved but unused count as used); None: no limit.

        Direct uploads (hold/oci_uploads.py) stop a body at this bound before storing more."""
        allowance = await self.allowance(user)
        if allowance.limit is None or self.index is None:
            return None
        _, used = await self.index.admit(user, "", 0, allowance.limit, max_age=self._max_age, reserve=False)
        return max(0, allowance.limit - used)

    async def admit_blob(self, user: str, digest: str, size: int) -> None:
        """``completeUpload``, before the blob is visible: refuse, or reserve it until a manifest uses it.

        A refusal also drops the user's other reservations: clients abandon the whole push when
        one blob is refused, so holding its earlier blobs against the quota would only lock the
        user out (the manifest's check, `check_manifest`, still enforces the quota exactly).
        """
        if self.index is None:
            return
        allowance = await self.allowance(user)
        ok, used = await self.index.admit(user, digest, size, allowance.limit, max_age=self._max_age, reserve=True)
        if not ok:
            await self.index.release_all(user)
            raise self._refuse(user, allowance, used, size)
        await self.index.stage(digest, self.index.now() + self._staged_grace)

    async def release(self, user: str, digests: Iterable[str]) -> None:
        """A manifest used these blobs, or was refused: they no longer count as reserved."""
        if self.index is not None:
            await self.index.release(user, digests)

    async def sweep_staged(self, delete: Callable[[str], Awaitable[bool]]) -> tuple[int, int]:
        """Delete blobs uploaded longer than the grace ago that no layer record references:
        pushes that never came, or were refused. Returns (blobs deleted, blobs kept)."""
        if self.index is None:
            return 0, 0
        now = self.index.now()
        deleted = kept = 0
        for digest in await self.index.staged_expired(now):
            if await self.index.is_referenced(digest):
                kept += 1
            elif await delete(digest):
                deleted += 1
            await self.index.unstage(digest, if_before=now)
        return deleted, kept

    async def check_manifest(self, user: str, layers: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
        """The layers new to the user's usage; QuotaExceeded if they do not fit."""
        index = self._require_index()
        unique = dict(layers)
        known = await index.known(user, list(unique))
        new = [(d, s) for d, s in unique.items() if d not in known]
        allowance = await self.allowance(user)
        if allowance.limit is not None and new:
            adding = sum(s for _, s in new)
            used = (await index.usage(user)).total_size
            if used + adding > allowance.limit:
                raise self._refuse(user, allowance, used, adding)
        return new

    async def quota(self, user: str) -> dict[str, Any]:
        """The `getQuota` answer."""
        index = self._require_index()
        usage = await index.usage(user)
        allowance = await self.allowance(user)
        out: dict[str, Any] = {"userDid": user, "uniqueBlobs": usage.unique_blobs, "totalSize": usage.total_size}
        # Admission counts totalSize plus these: blobs uploaded whose manifest has not come yet.
        out["reservedSize"] = await index.reserved(user, self._max_age)
        if allowance.limit is not None:
            out["limit"] = allowance.limit
        if allowance.tier is not None:
            out["tier"] = allowance.tier.name
        return out
