"""The hold's crew: who may write and read, kept as `io.atcr.hold.crew` records in its repo.

ATCR-NOTES §3.2, §5.3. The records are the truth (relays and AppViews read them too); this
module keeps an in-memory view of them because every upload, download of a private hold and
push notification asks "is this DID crew, with which permissions?", and a repo read per
request would put SQLite on the hot path. The hold is the only writer of its repo (one
process per data directory, enforced by the repo's lock), and every crew or captain write goes
through `CrewService`, which updates the view in the same step; so the view cannot go stale
except by a write this module did not make, for which `RepoCrew.invalidate` exists.

Roles map to permissions as ATCR's records use them:

| role | permissions |
|---|---|
| owner | blob:read, blob:write, crew:admin (only the captain's own record) |
| admin | blob:read, blob:write, crew:admin |
| write, member | blob:read, blob:write (``member`` is what ``requestCrew`` writes) |
| read | blob:read |

Who may change the crew: the captain, and crew with ``crew:admin``. Only the captain may
grant or take away ``crew:admin`` (so one admin cannot lock the others out), and nobody can
change or remove the captain's own record through the API.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atcr.syntax import is_did
from hold.auth import BLOB_READ, BLOB_WRITE, CREW_ADMIN, Captain, CrewMember
from hold.errors import Forbidden, HoldError, InvalidRequest
from hold.repo.bootstrap import CAPTAIN, CAPTAIN_RKEY, CREW, crew_rkey
from hold.repo.repo import CommitInfo, Delete, Put, Repo, Write

log = logging.getLogger("hold.crew")

ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    "owner": (BLOB_READ, BLOB_WRITE, CREW_ADMIN),
    "admin": (BLOB_READ, BLOB_WRITE, CREW_ADMIN),
    "write": (BLOB_READ, BLOB_WRITE),
    "member": (BLOB_READ, BLOB_WRITE),
    "read": (BLOB_READ,),
}
PERMISSIONS = frozenset({BLOB_READ, BLOB_WRITE, CREW_ADMIN})
SELF_ENROL_PERMISSIONS = (BLOB_READ, BLOB_WRITE)

RepoProvider = Callable[[], Repo]


class RegistrationDisabled(Forbidden):
    """`requestCrew` on a hold whose captain does not allow all crew."""

    error, default_message = "RegistrationDisabled", "this hold does not allow open crew enrollment"


class NotCrew(HoldError):
    error, status, default_message = "NotCrew", 404, "that DID is not crew on this hold"


def now_iso(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class CrewEntry:
    """One crew record as stored: where it is, and what it grants."""

    rkey: str
    cid: str
    value: dict[str, Any]
    member: CrewMember


def _member_of(value: dict[str, Any]) -> CrewMember | None:
    did = value.get("member")
    if not isinstance(did, str) or not is_did(did):
        return None
    perms = value.get("permissions")
    permissions = frozenset(p for p in perms if isinstance(p, str)) if isinstance(perms, list) else frozenset()
    role = value.get("role") if isinstance(value.get("role"), str) else "member"
    tier = value.get("tier") if isinstance(value.get("tier"), str) else None
    return CrewMember(did, str(role), permissions, tier)


def _captain_of(value: dict[str, Any], fallback: Captain) -> Captain:
    owner = value.get("owner")
    return Captain(
        owner=owner if isinstance(owner, str) and is_did(owner) else fallback.owner,
        public=bool(value.get("public", fallback.public)),
        allow_all_crew=bool(value.get("allowAllCrew", fallback.allow_all_crew)),
    )


class RepoCrew:
    """`CaptainSource` and `CrewDirectory` over the hold's repo, held in memory.

    Loaded on first use (after the repo has opened in the app's lifespan). Without a captain
    record (no ``HOLD_OWNER`` at first start) the captain comes from settings (`fallback`).
    A member with several records (possible only in imported repos) gets the union of their
    permissions, and `CrewService.remove` deletes all of them.
    """

    def __init__(self, repo: RepoProvider, fallback: Captain) -> None:
        self._repo = repo
        self._fallback = fallback
        self._lock = asyncio.Lock()
        self._loaded = False
        self._captain = fallback
        self._captain_record: dict[str, Any] | None = None
        self._entries: dict[str, list[CrewEntry]] = {}

    def invalidate(self) -> None:
        """Forget the view; the next question reloads it from the repo."""
        self._loaded = False

    def _fresh(self) -> bool:
        return self._loaded

    async def _ensure(self) -> None:
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():  # another task loaded it while we waited
                return
            repo = self._repo()
            found = await repo.get_record(CAPTAIN, CAPTAIN_RKEY)
            captain_record = found[1] if found is not None else None
            entries: dict[str, list[CrewEntry]] = {}
            cursor: str | None = None
            while True:
                page = await repo.list_records(CREW, limit=1000, cursor=cursor, reverse=True)
                for rec in page.records:
                    member = _member_of(rec.value)
                    if member is None:
                        log.warning("crew record %s has no valid member DID; ignored", rec.rkey)
                        continue
                    entries.setdefault(member.did, []).append(CrewEntry(rec.rkey, rec.cid, rec.value, member))
                if page.cursor is None:
                    break
                cursor = page.cursor
            self._captain_record = captain_record
            self._captain = _captain_of(captain_record, self._fallback) if captain_record else self._fallback
            self._entries = entries
            self._loaded = True

    async def captain(self) -> Captain:
        await self._ensure()
        return self._captain

    async def captain_record(self) -> dict[str, Any] | None:
        await self._ensure()
        return self._captain_record

    async def member(self, did: str) -> CrewMember | None:
        await self._ensure()
        entries = self._entries.get(did)
        if not entries:
            return None
        if len(entries) == 1:
            return entries[0].member
        permissions = frozenset().union(*(e.member.permissions for e in entries))
        first = entries[0].member
        tier = next((e.member.tier for e in entries if e.member.tier), None)
        return CrewMember(did, first.role, permissions, tier)

    async def entries(self, did: str) -> list[CrewEntry]:
        await self._ensure()
        return list(self._entries.get(did, ()))

    async def all_members(self) -> list[CrewMember]:
        await self._ensure()
        out = []
        for did in sorted(self._entries):
            member = await self.member(did)
            if member is not None:
                out.append(member)
        return out

    def applied(self, did: str, entry: CrewEntry | None) -> None:
        """Record in the view a write `CrewService` just committed (None: all records deleted)."""
        if entry is None:
            self._entries.pop(did, None)
        else:
            self._entries[did] = [entry]


@dataclass(frozen=True)
class CrewResult:
    status: str  # created | already_member | updated
    uri: str
    cid: str
    member: CrewMember


def permissions_for(role: str | None, permissions: Sequence[str] | None) -> tuple[str, tuple[str, ...]]:
    """(role, permissions) of an add request: explicit permissions win; the role is derived if absent."""
    if role is not None and role not in ROLE_PERMISSIONS:
        raise InvalidRequest(f"role must be one of {', '.join(sorted(ROLE_PERMISSIONS))}")
    if role == "owner":
        raise InvalidRequest("the owner role belongs to the captain alone")
    if permissions is not None:
        unknown = [p for p in permissions if p not in PERMISSIONS]
        if unknown:
            raise InvalidRequest(f"unknown permission(s) {unknown[:5]}: expected {sorted(PERMISSIONS)}")
        perms = tuple(sorted(set(permissions)))
        if role is None:
            role = "admin" if CREW_ADMIN in perms else "write" if BLOB_WRITE in perms else "read"
        return role, perms
    role = role or "write"
    return role, ROLE_PERMISSIONS[role]


class CrewService:
    """Crew writes: self-enrolment (`requestCrew`), captain/admin add and remove, tiers.

    Writes are serialized by one lock so "is X crew? no: create" cannot race into two
    records for X; the view (`RepoCrew`) is updated right after each commit.
    """

    def __init__(
        self,
        repo: RepoProvider,
        directory: RepoCrew,
        *,
        default_tier: Callable[[], str | None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._repo = repo
        self.directory = directory
        self._default_tier = default_tier
        self._clock = clock
        self._lock = asyncio.Lock()

    def _uri(self, rkey: str) -> str:
        return f"at://{self._repo().did}/{CREW}/{rkey}"

    async def _write(
        self, did: str, record: dict[str, Any], existing: Iterable[CrewEntry]
    ) -> tuple[CrewEntry, CommitInfo]:
        rkey = crew_rkey(did)
        writes: list[Write] = [Put(CREW, rkey, record)]
        writes += [Delete(CREW, e.rkey) for e in existing if e.rkey != rkey]
        commit = await self._repo().apply_writes(writes)
        cid = next(op.cid for op in commit.ops if op.rkey == rkey and op.collection == CREW)
        assert cid is not None
        member = _member_of(record)
        assert member is not None
        entry = CrewEntry(rkey, cid, record, member)
        self.directory.applied(did, entry)
        return entry, commit

    def _record(
        self, did: str, role: str, permissions: Iterable[str], tier: str | None, added: str | None
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "$type": CREW,
            "member": did,
            "role": role,
            "permissions": list(permissions),
            "addedAt": added or now_iso(self._clock()),
        }
        if tier:
            record["tier"] = tier
        return record

    async def request(self, did: str, permissions: Sequence[str] | None = None) -> CrewResult:
        """`requestCrew`: join with ``blob:read``+``blob:write`` (or fewer) if the captain allows all crew."""
        if permissions is not None:
            extra = set(permissions) - set(SELF_ENROL_PERMISSIONS)
            if extra:
                raise InvalidRequest(f"self-enrolment grants only {list(SELF_ENROL_PERMISSIONS)}, not {sorted(extra)}")
        async with self._lock:
            entries = await self.directory.entries(did)
            if entries:
                e = entries[0]
                return CrewResult("already_member", self._uri(e.rkey), e.cid, e.member)
            captain = await self.directory.captain()
            if not captain.allow_all_crew and did != captain.owner:
                raise RegistrationDisabled()
            perms = tuple(sorted(set(permissions))) if permissions else SELF_ENROL_PERMISSIONS
            role = "owner" if did == captain.owner else "member"
            if role == "owner":
                perms = ROLE_PERMISSIONS["owner"]
            entry, _ = await self._write(did, self._record(did, role, perms, self._default_tier(), None), ())
            log.info("crew: %s joined (%s)", did, ",".join(perms))
            return CrewResult("created", self._uri(entry.rkey), entry.cid, entry.member)

    async def enroll(self, did: str) -> CrewMember | None:
        """`Enroller` for `HoldAuth`: the implicit `requestCrew` of a first write on an allow-all hold."""
        try:
            return (await self.request(did)).member
        except RegistrationDisabled:
            return None

    async def add(
        self,
        actor: str,
        did: str,
        *,
        role: str | None = None,
        permissions: Sequence[str] | None = None,
        tier: str | None = None,
    ) -> CrewResult:
        """Add or change a member (captain or crew admin only; ``crew:admin`` only by the captain)."""
        if not is_did(did):
            raise InvalidRequest("member must be a DID")
        role, perms = permissions_for(role, permissions)
        async with self._lock:
            captain = await self.directory.captain()
            is_captain = captain.owner is not None and actor == captain.owner
            actor_member = await self.directory.member(actor)
            if not is_captain and (actor_member is None or CREW_ADMIN not in actor_member.permissions):
                raise Forbidden(f"{actor} is not the captain or crew with crew:admin")
            if did == captain.owner:
                raise Forbidden("the captain's crew record cannot be changed")
            entries = await self.directory.entries(did)
            current = await self.directory.member(did)
            touches_admin = CREW_ADMIN in perms or (current is not None and CREW_ADMIN in current.permissions)
            if touches_admin and not is_captain:
                raise Forbidden("only the captain may grant or change crew:admin")
            kept_tier = tier or (current.tier if current is not None else None) or self._default_tier()
            added = entries[0].value.get("addedAt") if entries else None
            record = self._record(did, role, perms, kept_tier, added if isinstance(added, str) else None)
            entry, _ = await self._write(did, record, entries)
            log.info("crew: %s set %s to %s (%s)", actor, did, role, ",".join(perms))
            return CrewResult("updated" if entries else "created", self._uri(entry.rkey), entry.cid, entry.member)

    async def remove(self, actor: str, did: str) -> bool:
        """Remove every crew record of `did`; False if it had none."""
        async with self._lock:
            captain = await self.directory.captain()
            is_captain = captain.owner is not None and actor == captain.owner
            actor_member = await self.directory.member(actor)
            if not is_captain and (actor_member is None or CREW_ADMIN not in actor_member.permissions):
                raise Forbidden(f"{actor} is not the captain or crew with crew:admin")
            if did == captain.owner:
                raise Forbidden("the captain cannot be removed from the crew")
            entries = await self.directory.entries(did)
            if not entries:
                return False
            if any(CREW_ADMIN in e.member.permissions for e in entries) and not is_captain:
                raise Forbidden("only the captain may remove a crew admin")
            await self._repo().apply_writes([Delete(CREW, e.rkey) for e in entries])
            self.directory.applied(did, None)
            log.info("crew: %s removed %s", actor, did)
            return True

    async def set_tier(self, did: str, tier: str) -> CrewResult:
        """Move a member to another quota tier (`updateCrewTier`, billing)."""
        async with self._lock:
            entries = await self.directory.entries(did)
            if not entries:
                raise NotCrew(f"{did} is not crew on this hold")
            record = dict(entries[0].value)
            record["tier"] = tier
            merged = await self.directory.member(did)
            if merged is not None and len(entries) > 1:
                record["permissions"] = sorted(merged.permissions)
            entry, _ = await self._write(did, record, entries)
            return CrewResult("updated", self._uri(entry.rkey), entry.cid, entry.member)
