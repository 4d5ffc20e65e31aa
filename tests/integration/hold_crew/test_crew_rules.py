"""Crew rules enforced on the real upload and download endpoints, for every role, on public
and private holds, with allow-all-crew on and off (ATCR-NOTES §5.3). Tokens are real service
JWTs (ES256K) checked against keys the test publishes."""

from __future__ import annotations

import pytest

from hold.repo.bootstrap import crew_rkey
from tests.integration.hold_crew.conftest import ALICE, BOB, OWNER, CrewHold, MakeHold, digest_of

pytestmark = pytest.mark.integration

ADMIN = "did:plc:adminadminadminadmin0000"
WRITER = "did:plc:writerwriterwriterwr0000"
READER = "did:plc:readerreaderreaderre0000"
STRANGER = "did:plc:strangerstrangerstra0000"
CREW = "io.atcr.hold.crew"
INITIATE = "io.atcr.hold.initiateUpload"
GET_BLOB = "com.atproto.sync.getBlob"


async def staff(h: CrewHold) -> str:
    """The owner adds an admin, a writer and a reader, and stores one blob; returns its digest."""
    for did, role in ((ADMIN, "admin"), (WRITER, "write"), (READER, "read")):
        r = await h.call("io.atcr.hold.addCrew", {"member": did, "role": role}, iss=OWNER)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "created"
    data = b"layer bytes for the crew matrix"
    r = await h.push_blob(data, iss=OWNER)
    assert r.status_code == 200, r.text
    return digest_of(data)


async def can_write(h: CrewHold, did: str) -> int:
    return (await h.call(INITIATE, {}, iss=did)).status_code


async def can_read(h: CrewHold, did: str | None, digest: str) -> int:
    headers = h.hold.auth(GET_BLOB, iss=did) if did else {}
    return (await h.hold.get_blob(digest, headers=headers)).status_code


@pytest.mark.parametrize("public", [True, False], ids=["public", "private"])
@pytest.mark.parametrize("allow_all", [False, True], ids=["closed", "allow-all"])
async def test_role_matrix(make_hold: MakeHold, public: bool, allow_all: bool) -> None:
    async with make_hold(hold_public=public, hold_allow_all_crew=allow_all) as h:
        digest = await staff(h)
        # write: owner, admin (crew:admin), writer; never an explicit read-only member; a
        # stranger only when all may join (and is then enrolled as crew).
        assert await can_write(h, OWNER) == 200
        assert await can_write(h, ADMIN) == 200
        assert await can_write(h, WRITER) == 200
        assert await can_write(h, READER) == 403
        assert await can_write(h, STRANGER) == (200 if allow_all else 403)
        # read: anyone on a public hold; on a private one, crew (any permission) and, with
        # allow-all, any authenticated DID; anonymous gets 401.
        for did in (OWNER, ADMIN, WRITER, READER):
            assert await can_read(h, did, digest) == 200, did
        assert await can_read(h, BOB, digest) == (200 if public or allow_all else 403)
        assert await can_read(h, None, digest) == (200 if public else 401)

        enrolled = await h.record(CREW, crew_rkey(STRANGER))
        if allow_all:
            value = enrolled.json()["value"]
            assert value["member"] == STRANGER and value["role"] == "member"
            assert sorted(value["permissions"]) == ["blob:read", "blob:write"]
        else:
            assert enrolled.status_code == 400 and enrolled.json()["error"] == "RecordNotFound"


async def test_refusal_bodies(make_hold: MakeHold) -> None:
    async with make_hold(hold_public=False) as h:
        digest = await staff(h)
        r = await h.call(INITIATE, {}, iss=READER)
        assert r.status_code == 403 and r.json()["error"] == "Forbidden"
        r = await h.call(INITIATE, {}, iss=None)
        assert r.status_code == 401 and r.json()["error"] == "AuthMissing"
        r = await h.hold.get_blob(digest)
        assert r.status_code == 401 and r.json()["error"] == "AuthMissing"


async def test_request_crew(make_hold: MakeHold, quotas_file) -> None:  # type: ignore[no-untyped-def]
    tiers = quotas_file("tiers:\n  deckhand: {quota: 5GB}\n  bosun: {quota: 50GB}\ndefaults:\n  new_crew_tier: bosun\n")
    async with make_hold(hold_allow_all_crew=False) as closed:
        r = await closed.call("io.atcr.hold.requestCrew", {}, iss=ALICE)
        assert r.status_code == 403 and r.json()["error"] == "RegistrationDisabled"
        r = await closed.call("io.atcr.hold.requestCrew", {}, iss=None)
        assert r.status_code == 401 and r.json()["error"] == "AuthRequired"
        # The captain may always (re)claim its own record.
        r = await closed.call("io.atcr.hold.requestCrew", {}, iss=OWNER)
        assert r.status_code == 200 and r.json()["status"] == "already_member"

    async with make_hold(hold_allow_all_crew=True, hold_quotas_path=tiers) as h:
        r = await h.call("io.atcr.hold.requestCrew", {}, iss=ALICE)
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["status"] == "created" and first["uri"] == f"at://{h.did}/{CREW}/{crew_rkey(ALICE)}"
        assert first["message"]
        again = (await h.call("io.atcr.hold.requestCrew", {}, iss=ALICE)).json()
        assert again["status"] == "already_member" and (again["uri"], again["cid"]) == (first["uri"], first["cid"])
        value = (await h.record(CREW, crew_rkey(ALICE))).json()["value"]
        assert value == {
            "$type": CREW,
            "member": ALICE,
            "role": "member",
            "permissions": ["blob:read", "blob:write"],
            "addedAt": value["addedAt"],
            "tier": "bosun",
        }
        # An empty body (ATCR's AppView may send none) and a read-only request both work.
        r = await h.client.post(
            f"{h.url}/xrpc/io.atcr.hold.requestCrew", headers=h.hold.auth("io.atcr.hold.requestCrew", iss=BOB)
        )
        assert r.status_code == 200 and r.json()["status"] == "created", r.text
        r = await h.call("io.atcr.hold.requestCrew", {"permissions": ["crew:admin"]}, iss=WRITER)
        assert r.status_code == 400
        r = await h.call("io.atcr.hold.requestCrew", {"permissions": ["blob:read"]}, iss=READER)
        assert r.status_code == 200
        assert await can_write(h, READER) == 403  # asked for read only, got read only
        # A token for another method is not a requestCrew token.
        r = await h.client.post(
            f"{h.url}/xrpc/io.atcr.hold.requestCrew", json={}, headers=h.hold.auth(INITIATE, iss=STRANGER)
        )
        assert r.status_code == 401 and r.json()["error"] == "BadJwtLexiconMethod"


async def test_crew_management_rules(make_hold: MakeHold) -> None:
    async with make_hold(hold_public=False) as h:
        await staff(h)
        add, remove = "io.atcr.hold.addCrew", "io.atcr.hold.removeCrew"
        # Not crew, or crew without crew:admin: no crew management at all.
        for did in (STRANGER, WRITER, READER):
            r = await h.call(add, {"member": BOB, "role": "write"}, iss=did)
            assert r.status_code == 403, (did, r.text)
            assert (await h.call(remove, {"member": READER}, iss=did)).status_code == 403
        # An admin adds and removes writers and readers ...
        r = await h.call(add, {"member": BOB, "role": "read"}, iss=ADMIN)
        assert r.status_code == 200 and r.json()["status"] == "created"
        r = await h.call(add, {"member": BOB, "permissions": ["blob:read", "blob:write"]}, iss=ADMIN)
        assert r.json()["status"] == "updated"
        assert (await h.record(CREW, crew_rkey(BOB))).json()["value"]["role"] == "write"
        assert await can_write(h, BOB) == 200
        r = await h.call(remove, {"member": BOB}, iss=ADMIN)
        assert r.status_code == 200 and r.json() == {"removed": True}
        assert (await h.call(remove, {"member": BOB}, iss=ADMIN)).json() == {"removed": False}
        # ... takes effect at once (the in-memory view follows every write) ...
        assert await can_write(h, BOB) == 403
        # ... but cannot make or unmake admins, nor touch the captain.
        assert (await h.call(add, {"member": BOB, "role": "admin"}, iss=ADMIN)).status_code == 403
        assert (await h.call(add, {"member": BOB, "permissions": ["crew:admin"]}, iss=ADMIN)).status_code == 403
        other = "did:plc:otheradminotheradmin0000"
        assert (await h.call(add, {"member": other, "role": "admin"}, iss=OWNER)).status_code == 200
        assert (await h.call(remove, {"member": other}, iss=ADMIN)).status_code == 403
        assert (await h.call(add, {"member": other, "role": "read"}, iss=ADMIN)).status_code == 403
        assert (await h.call(remove, {"member": OWNER}, iss=ADMIN)).status_code == 403
        assert (await h.call(remove, {"member": OWNER}, iss=OWNER)).status_code == 403
        assert (await h.call(add, {"member": OWNER, "role": "read"}, iss=OWNER)).status_code == 403
        # The captain can.
        assert (await h.call(remove, {"member": other}, iss=OWNER)).json() == {"removed": True}
        # Bad input is a 400 naming the field.
        r = await h.call(add, {"member": "not-a-did"}, iss=OWNER)
        assert r.status_code == 400 and "member" in r.json()["message"]
        r = await h.call(add, {"member": BOB, "role": "owner"}, iss=OWNER)
        assert r.status_code == 400
        r = await h.call(add, {"member": BOB, "permissions": ["blob:delete"]}, iss=OWNER)
        assert r.status_code == 400


async def test_crew_survives_a_restart(make_hold: MakeHold) -> None:
    async with make_hold("same", hold_public=False) as h:
        await staff(h)
    async with make_hold("same", hold_public=False) as h:
        assert await can_write(h, WRITER) == 200
        assert await can_write(h, READER) == 403
        members = {r["value"]["member"]: r["value"]["role"] for r in await h.records(CREW)}
        assert members == {OWNER: "owner", ADMIN: "admin", WRITER: "write", READER: "read"}


async def test_captain_record_wins_over_changed_settings(make_hold: MakeHold) -> None:
    """The captain record is the hold's published state; restarting with other flags changes nothing."""
    async with make_hold("same", hold_public=False) as h:
        digest = await staff(h)
    async with make_hold("same", hold_public=True) as h:
        assert await can_read(h, None, digest) == 401
