"""CrewService and RepoCrew over a real repository on disk (no network)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hold.auth import BLOB_READ, BLOB_WRITE, CREW_ADMIN, Captain
from hold.crew import CrewService, NotCrew, RegistrationDisabled, RepoCrew, permissions_for
from hold.errors import Forbidden, InvalidRequest
from hold.repo import Create, EcKeySigner, Repo, crew_rkey, ensure_bootstrapped

pytestmark = pytest.mark.unit

HOLD = "did:web:hold.test"
OWNER, ALICE, BOB = "did:plc:owner", "did:plc:alice", "did:plc:bob"
CREW = "io.atcr.hold.crew"


@pytest.fixture
async def repo(tmp_path: Path) -> AsyncIterator[Repo]:
    r = await Repo.open(tmp_path / "repo.sqlite", HOLD, EcKeySigner(ec.generate_private_key(ec.SECP256K1())))
    await ensure_bootstrapped(r, OWNER, public=False, allow_all_crew=True)
    try:
        yield r
    finally:
        await r.close()


def service(repo: Repo, fallback: Captain | None = None) -> CrewService:
    directory = RepoCrew(lambda: repo, fallback or Captain(None, True, False))
    return CrewService(lambda: repo, directory, default_tier=lambda: "deckhand")


async def test_the_captain_comes_from_the_record_not_the_fallback(repo: Repo) -> None:
    crew = service(repo, Captain("did:plc:someone-else", True, False))
    assert await crew.directory.captain() == Captain(OWNER, public=False, allow_all_crew=True)
    owner = await crew.directory.member(OWNER)
    assert owner is not None and owner.role == "owner" and CREW_ADMIN in owner.permissions


async def test_without_a_captain_record_the_settings_rule(tmp_path: Path) -> None:
    r = await Repo.open(tmp_path / "bare.sqlite", HOLD, EcKeySigner(ec.generate_private_key(ec.SECP256K1())))
    try:
        crew = service(r, Captain(None, True, False))
        assert await crew.directory.captain() == Captain(None, True, False)
        with pytest.raises(RegistrationDisabled):
            await crew.request(ALICE)
        assert await crew.enroll(ALICE) is None
    finally:
        await r.close()


async def test_request_and_enroll(repo: Repo) -> None:
    crew = service(repo)
    created = await crew.request(ALICE)
    assert created.status == "created" and created.member.tier == "deckhand"
    assert created.member.permissions == {BLOB_READ, BLOB_WRITE}
    again = await crew.enroll(ALICE)
    assert again == created.member
    found = await repo.get_record(CREW, crew_rkey(ALICE))
    assert found is not None and found[0] == created.cid


async def test_imported_duplicates_are_merged_and_removed_together(repo: Repo) -> None:
    """A repo imported from elsewhere may hold two records for one member (other rkey schemes)."""
    for perms in ([BLOB_READ], [BLOB_WRITE]):
        await repo.apply_writes([Create(CREW, None, {
            "member": BOB, "role": "read", "permissions": perms, "addedAt": "2025-01-01T00:00:00Z"})])
    crew = service(repo)
    bob = await crew.directory.member(BOB)
    assert bob is not None and bob.permissions == {BLOB_READ, BLOB_WRITE}
    assert len(await crew.directory.entries(BOB)) == 2
    # Changing a member rewrites it under the deterministic key and drops the others.
    result = await crew.add(OWNER, BOB, role="read")
    assert result.status == "updated"
    assert [e.rkey for e in await crew.directory.entries(BOB)] == [crew_rkey(BOB)]
    page = await repo.list_records(CREW)
    assert sorted(r.value["member"] for r in page.records) == [BOB, OWNER]
    assert page.records[0].value.get("addedAt") or page.records[1].value.get("addedAt")
    assert await crew.remove(OWNER, BOB) is True
    assert await crew.directory.member(BOB) is None


async def test_the_view_reloads_after_invalidate(repo: Repo) -> None:
    crew = service(repo)
    assert await crew.directory.member(ALICE) is None
    await repo.apply_writes([Create(CREW, crew_rkey(ALICE), {
        "member": ALICE, "role": "write", "permissions": [BLOB_READ, BLOB_WRITE], "addedAt": "2025-01-01T00:00:00Z"})])
    assert await crew.directory.member(ALICE) is None  # a write behind the service's back ...
    crew.directory.invalidate()
    assert await crew.directory.member(ALICE) is not None  # ... is seen after invalidate


async def test_set_tier(repo: Repo) -> None:
    crew = service(repo)
    with pytest.raises(NotCrew):
        await crew.set_tier(ALICE, "bosun")
    await crew.request(ALICE)
    result = await crew.set_tier(ALICE, "bosun")
    assert result.member.tier == "bosun"
    found = await repo.get_record(CREW, crew_rkey(ALICE))
    assert found is not None and found[1]["tier"] == "bosun" and found[1]["role"] == "member"


async def test_admins_cannot_escalate(repo: Repo) -> None:
    crew = service(repo)
    await crew.add(OWNER, ALICE, role="admin")
    with pytest.raises(Forbidden):
        await crew.add(ALICE, BOB, permissions=[BLOB_READ, CREW_ADMIN])
    await crew.add(ALICE, BOB, role="read")
    with pytest.raises(Forbidden):
        await crew.add(BOB, "did:plc:carol", role="read")


@pytest.mark.parametrize(
    ("role", "permissions", "expected"),
    [
        (None, None, ("write", (BLOB_READ, BLOB_WRITE))),
        ("read", None, ("read", (BLOB_READ,))),
        ("admin", None, ("admin", (BLOB_READ, BLOB_WRITE, CREW_ADMIN))),
        (None, [BLOB_READ], ("read", (BLOB_READ,))),
        (None, [CREW_ADMIN], ("admin", (CREW_ADMIN,))),
        ("member", [BLOB_WRITE, BLOB_WRITE], ("member", (BLOB_WRITE,))),
    ],
)
def test_permissions_for(role: str | None, permissions: list[str] | None, expected: tuple[str, tuple[str, ...]]) -> None:
    assert permissions_for(role, permissions) == expected


@pytest.mark.parametrize(("role", "permissions"), [("owner", None), ("captain", None), (None, ["blob:delete"])])
def test_permissions_for_refuses(role: str | None, permissions: list[str] | None) -> None:
    with pytest.raises(InvalidRequest):
        permissions_for(role, permissions)
