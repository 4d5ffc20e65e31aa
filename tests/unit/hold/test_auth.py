"""Who may write and read (ATCR-NOTES.md §5.3)."""

from __future__ import annotations

import pytest

from atcr.serviceauth import MemoryReplayCache, ServiceAuthVerifier
from hold.auth import BLOB_READ, BLOB_WRITE, CREW_ADMIN, Captain, CrewMember, HoldAuth, StaticCaptain, StaticCrew
from hold.errors import AuthRequired, Forbidden

pytestmark = pytest.mark.unit

OWNER, WRITER, READER, ADMIN, STRANGER = (f"did:plc:{n}" for n in ("owner", "writer", "reader", "admin", "nobody"))


class NoKeys:
    async def signing_key(self, did: str, *, fresh: bool = False) -> str | None:
        return None


def auth(*, public: bool, allow_all: bool = False) -> HoldAuth:
    crew = StaticCrew(
        {
            WRITER: CrewMember(WRITER, "write", frozenset({BLOB_READ, BLOB_WRITE})),
            READER: CrewMember(READER, "read", frozenset({BLOB_READ})),
            ADMIN: CrewMember(ADMIN, "admin", frozenset({CREW_ADMIN})),
        }
    )
    verifier = ServiceAuthVerifier(service_did="did:web:h", keys=NoKeys(), replay=MemoryReplayCache())
    return HoldAuth(verifier, StaticCaptain(Captain(OWNER, public, allow_all)), crew)


@pytest.mark.parametrize(
    ("did", "write", "read_private"),
    [(OWNER, True, True), (WRITER, True, True), (ADMIN, True, True), (READER, False, True), (STRANGER, False, False)],
)
async def test_matrix(did: str, write: bool, read_private: bool) -> None:
    private = auth(public=False)
    assert await private.can_write(did) is write
    assert await private.can_read(did) is read_private
    public = auth(public=True)
    assert await public.can_read(did) is True
    assert await public.can_read(None) is True


async def test_allow_all_crew_lets_any_authenticated_did_write_but_not_anonymous_read() -> None:
    a = auth(public=False, allow_all=True)
    assert await a.can_write(STRANGER)
    assert await a.can_read(STRANGER)
    assert not await a.can_read(None)


async def test_refusals_carry_the_right_errors() -> None:
    a = auth(public=False)
    with pytest.raises(Forbidden):
        await a.require_write(READER)
    with pytest.raises(Forbidden):
        await a.require_read(STRANGER)
    with pytest.raises(AuthRequired) as exc:
        await a.require_read(None)
    assert exc.value.status == 401 and exc.value.error_name == "AuthMissing"
    with pytest.raises(AuthRequired) as exc:
        await a.authenticate(None, lxm="io.atcr.hold.initiateUpload")
    assert exc.value.error_name == "AuthMissing"
    with pytest.raises(AuthRequired) as exc:
        await a.authenticate("not.a.jwt", lxm="io.atcr.hold.initiateUpload")
    assert exc.value.error_name == "BadJwt"
