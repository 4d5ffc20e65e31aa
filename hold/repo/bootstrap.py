"""First-start records of a hold: the captain record and the owner's crew record.

ATCR-NOTES §5.1: on first start a hold writes `io.atcr.hold.captain` (rkey `self`) and makes
its owner the first crew member. Both go in one commit, so a hold is never seen with a
captain and no owner crew. Later starts leave the records alone: the captain record is the
hold's published state, and changing it is an explicit admin act, not a side effect of a
restart with different flags.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from atcr.errors import RecordValidationError
from atcr.lexicon import validate_record
from atcr.syntax import is_did
from hold.repo.errors import InvalidRecord
from hold.repo.repo import CommitInfo, Create, Repo

CAPTAIN = "io.atcr.hold.captain"
CREW = "io.atcr.hold.crew"
CAPTAIN_RKEY = "self"
OWNER_PERMISSIONS = ("blob:read", "blob:write", "crew:admin")


def crew_rkey(member_did: str) -> str:
    """The record key of a member's crew record: deterministic, so a member has one record.

    A DID cannot be the key itself (`did:web:host%3A8080` has a `%`, which record keys do not
    allow), so the key is base32(sha256(did)[:16]), the scheme ATCR uses for stats records.
    """
    digest = hashlib.sha256(member_did.encode("utf-8")).digest()[:16]
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def _iso(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Bootstrap:
    captain: dict[str, Any]
    crew: dict[str, Any]
    commit: CommitInfo


async def ensure_bootstrapped(
    repo: Repo,
    owner_did: str,
    public: bool,
    allow_all_crew: bool,
    *,
    bluesky_posts: bool = False,
    now: datetime | None = None,
) -> Bootstrap | None:
    """Create the captain and the owner's crew record if the hold has no captain yet.

    Returns what was written, or None when the hold was already bootstrapped.
    """
    if not is_did(owner_did):
        raise InvalidRecord(f"owner must be a DID, got {owner_did!r}")
    if await repo.get_record(CAPTAIN, CAPTAIN_RKEY) is not None:
        return None
    stamp = _iso(now or datetime.now(UTC))
    captain: dict[str, Any] = {
        "$type": CAPTAIN,
        "owner": owner_did,
        "public": public,
        "allowAllCrew": allow_all_crew,
        "enableBlueskyPosts": bluesky_posts,
        "deployedAt": stamp,
    }
    crew: dict[str, Any] = {
        "$type": CREW,
        "member": owner_did,
        "role": "owner",
        "permissions": list(OWNER_PERMISSIONS),
        "addedAt": stamp,
    }
    for nsid, record in ((CAPTAIN, captain), (CREW, crew)):
        try:
            validate_record(nsid, record)
        except RecordValidationError as exc:
            raise InvalidRecord(str(exc)) from None
    commit = await repo.apply_writes([Create(CAPTAIN, CAPTAIN_RKEY, captain), Create(CREW, crew_rkey(owner_did), crew)])
    return Bootstrap(captain, crew, commit)
