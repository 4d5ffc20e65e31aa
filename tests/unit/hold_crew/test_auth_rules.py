"""HoldAuth over a crew directory: each role, public/private, allow-all-crew on/off, enrolment."""

from __future__ import annotations

import pytest

from atcr.serviceauth import MemoryReplayCache, ServiceAuthVerifier
from hold.auth import BLOB_READ, BLOB_WRITE, CREW_ADMIN, Captain, CrewMember, HoldAuth, StaticCaptain, StaticCrew
from hold.errors import AuthRequired, Forbidden

pytestmark = pytest.mark.unit

OWNER, ADMIN, WRITER, READER, STRANGER = (f"did:plc:{n}" for n in ("owner", "admin", "writer", "reader", "nobody"))
MEMBERS = {
    ADMIN: CrewMember(ADMIN, "admin", frozenset({BLOB_READ, BLOB_WRITE, CREW_ADMIN})),
    WRITER: CrewMember(WRITER, "write", frozenset({BLOB_READ, BLOB_WRITE})),
    READER: CrewMember(READER, "read", frozenset({BLOB_READ})),
}


class NoKeys:
    async def signing_key(self, did: str, *, fresh: bool = False) -> str | None:
        return None


class Enroller:
    def __init__(self, crew: StaticCrew, *, allowed: bool = True) -> None:
        self.crew = crew
        self.allowed = allowed
        self.calls: list[str] = []

    async def enroll(self, did: str) -> CrewMember | None:
        self.calls.append(did)
        if not self.allowed:
            return None
        member = CrewMember(did, "member", frozenset({BLOB_READ, BLOB_WRITE}))
        self.crew._members[did] = member
        return member


def make(*, public: bool, allow_all: bool, enroll: bool = True) -> tuple[HoldAuth, Enroller]:
    crew = StaticCrew(dict(MEMBERS))
    enroller = Enroller(crew, allowed=enroll)
    verifier = ServiceAuthVerifier(service_did="did:web:h", keys=NoKeys(), replay=MemoryReplayCache())
    return HoldAuth(verifier, StaticCaptain(Captain(OWNER, public, allow_all)), crew, enroller), enroller


WRITE = {OWNER: True, ADMIN: True, WRITER: True, READER: False}


@pytest.mark.parametrize("public", [True, False])
@pytest.mark.parametrize("allow_all", [True, False])
@pytest.mark.parametrize("did", [OWNER, ADMIN, WRITER, READER, STRANGER])
async def test_matrix(public: bool, allow_all: bool, did: str) -> None:
    auth, enroller = make(public=public, allow_all=allow_all)
    may_write = WRITE.get(did, allow_all)
    assert await auth.can_write(did) is may_write
    assert await auth.can_read(did) is (public or did in WRITE or allow_all)
    assert await auth.can_read(None) is public
    assert await auth.is_admin(did) is (did in (OWNER, ADMIN))
    if may_write:
        await auth.require_write(did)
    else:
        with pytest.raises(Forbidden):
            await auth.require_write(did)
    # Only a DID that is not crew at all is enrolled, and only when all may join.
    assert enroller.calls == ([STRANGER] if did == STRANGER and allow_all else [])


async def test_enrolment_happens_once_and_can_be_refused() -> None:
    auth, enroller = make(public=False, allow_all=True)
    await auth.require_write(STRANGER)
    await auth.require_write(STRANGER)
    assert enroller.calls == [STRANGER]  # the second write finds the new crew record
    closed, refusing = make(public=False, allow_all=True, enroll=False)
    with pytest.raises(Forbidden):
        await closed.require_write(STRANGER)
    assert refusing.calls == [STRANGER]


async def test_errors() -> None:
    auth, _ = make(public=False, allow_all=False)
    with pytest.raises(AuthRequired):
        await auth.require_read(None)
    with pytest.raises(Forbidden):
        await auth.require_read(STRANGER)
    with pytest.raises(Forbidden):
        await auth.require_admin(WRITER)
    await auth.require_admin(ADMIN)
    await auth.require_admin(OWNER)


async def test_a_hold_without_owner() -> None:
    crew = StaticCrew({})
    verifier = ServiceAuthVerifier(service_did="did:web:h", keys=NoKeys(), replay=MemoryReplayCache())
    auth = HoldAuth(verifier, StaticCaptain(Captain(None, False, False)), crew)
    assert not await auth.can_write(OWNER)
    assert not await auth.is_admin(OWNER)
    assert not await auth.is_owner(OWNER)
