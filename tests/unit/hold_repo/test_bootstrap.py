"""First-start records: captain + owner crew, once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from atcr.lexicon import validate_record
from atcr.syntax import is_record_key
from hold.repo import Repo, crew_rkey, ensure_bootstrapped
from hold.repo.errors import InvalidRecord
from tests.unit.hold_repo.support import CREW, OWNER_DID

CAPTAIN = "io.atcr.hold.captain"


async def test_first_start_writes_captain_and_owner_crew_in_one_commit(repo: Repo) -> None:
    when = datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    result = await ensure_bootstrapped(repo, OWNER_DID, public=True, allow_all_crew=False, now=when)
    assert result is not None
    assert [op.path for op in result.commit.ops] == [f"{CAPTAIN}/self", f"{CREW}/{crew_rkey(OWNER_DID)}"]
    captain = await repo.get_record(CAPTAIN, "self")
    assert captain is not None
    assert captain[1] == {
        "$type": CAPTAIN,
        "owner": OWNER_DID,
        "public": True,
        "allowAllCrew": False,
        "enableBlueskyPosts": False,
        "deployedAt": "2025-03-04T05:06:07.890Z",
    }
    crew = await repo.get_record(CREW, crew_rkey(OWNER_DID))
    assert crew is not None
    assert crew[1]["member"] == OWNER_DID and crew[1]["role"] == "owner"
    assert crew[1]["permissions"] == ["blob:read", "blob:write", "crew:admin"]
    validate_record(CAPTAIN, captain[1])
    validate_record(CREW, crew[1])


async def test_later_starts_change_nothing(repo: Repo) -> None:
    await ensure_bootstrapped(repo, OWNER_DID, public=False, allow_all_crew=True)
    head = repo.latest_commit()
    assert (
        await ensure_bootstrapped(repo, "did:plc:someoneelseentirely12345", public=True, allow_all_crew=False) is None
    )
    assert repo.latest_commit() == head
    captain = await repo.get_record(CAPTAIN, "self")
    assert captain is not None and captain[1]["owner"] == OWNER_DID and captain[1]["allowAllCrew"] is True


async def test_owner_must_be_a_did(repo: Repo) -> None:
    with pytest.raises(InvalidRecord):
        await ensure_bootstrapped(repo, "alice.example.com", public=True, allow_all_crew=False)


def test_crew_rkeys_are_deterministic_valid_keys() -> None:
    for did in (OWNER_DID, "did:web:hold.example.com%3A8080", "did:web:a.b"):
        key = crew_rkey(did)
        assert key == crew_rkey(did) and is_record_key(key) and len(key) == 26
    assert crew_rkey("did:web:a.b") != crew_rkey("did:web:a.c")
