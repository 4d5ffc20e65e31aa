"""Posts about pushes from the hold's account (`enableBlueskyPosts`): written on notifyManifest
push, one per repository per interval, listed by exportUserData and removed by deleteUserData."""

from __future__ import annotations

import pytest

from hold.posts import POST, push_post
from hold.userdata import NSID_EXPORT
from tests.integration.hold_crew.conftest import ALICE, BOB, MakeHold
from tests.support.pdsnet import TestNetwork, create_account

pytestmark = pytest.mark.integration


async def test_push_posts_are_rate_limited_per_repository_and_exported(make_hold: MakeHold) -> None:
    async with make_hold(hold_allow_all_crew=True, hold_bluesky_posts=True,
                         hold_appview_url="https://registry.example") as h:
        assert h.ledger.poster is not None
        for who in (ALICE, BOB):
            assert (await h.call("io.atcr.hold.requestCrew", {}, iss=who)).status_code == 200
        assert (await h.push_blob(b"layer-a", iss=ALICE)).status_code == 200
        assert (await h.push_blob(b"layer-b", iss=BOB)).status_code == 200
        for _ in range(3):  # three pushes to one repository: one post
            assert (await h.notify_push("tools/app", [b"layer-a"], iss=ALICE)).status_code == 200
        assert (await h.notify_push("tools/other", [b"layer-a"], iss=ALICE)).status_code == 200
        assert (await h.notify_push("tools/app", [b"layer-b"], iss=BOB)).status_code == 200
        await h.ledger.poster.drain()

        posts = [r["value"] for r in await h.records(POST)]
        assert len(posts) == 3
        texts = sorted(p["text"] for p in posts)
        # The harness DIDs have no handle: the DID stands in, with the link to the repository page.
        assert texts == sorted([
            f"{ALICE} pushed tools/app:latest\nhttps://registry.example/r/{ALICE}/tools/app",
            f"{ALICE} pushed tools/other:latest\nhttps://registry.example/r/{ALICE}/tools/other",
            f"{BOB} pushed tools/app:latest\nhttps://registry.example/r/{BOB}/tools/app",
        ])
        link = posts[0]["facets"][-1]
        assert link["features"][0]["$type"] == "app.bsky.richtext.facet#link"
        start, end = link["index"]["byteStart"], link["index"]["byteEnd"]
        assert posts[0]["text"].encode()[start:end].decode() == link["features"][0]["uri"]

        r = await h.client.get(f"{h.url}/xrpc/{NSID_EXPORT}", headers=h.hold.auth(NSID_EXPORT, iss=ALICE))
        exported = r.json()["blueskyPosts"]
        assert len(exported) == 2 and all(p["uri"].startswith(f"at://{h.did}/{POST}/") for p in exported)
        assert {p["text"].split("\n")[0] for p in exported} == {f"{ALICE} pushed tools/app:latest",
                                                                f"{ALICE} pushed tools/other:latest"}
        deleted = await h.call("io.atcr.hold.deleteUserData", None, iss=ALICE)
        assert deleted.json()["postsDeleted"] == 2
        assert [r["value"]["text"].split(" ")[0] for r in await h.records(POST)] == [BOB]


async def test_no_posts_unless_the_captain_enables_them(make_hold: MakeHold) -> None:
    async with make_hold(hold_allow_all_crew=True) as h:
        assert (await h.call("io.atcr.hold.requestCrew", {}, iss=ALICE)).status_code == 200
        assert (await h.push_blob(b"layer-a", iss=ALICE)).status_code == 200
        assert (await h.notify_push("tools/app", [b"layer-a"], iss=ALICE)).status_code == 200
        assert h.ledger.poster is not None
        await h.ledger.poster.drain()
        assert await h.records(POST) == []


async def test_a_real_handle_is_a_mention_facet(make_hold: MakeHold, pds_network: TestNetwork) -> None:
    account = create_account(pds_network.pds_url, "poster")
    async with make_hold(hold_bluesky_posts=True, hold_appview_url="https://registry.example",
                         atcr_plc_url=pds_network.plc_url) as h:
        assert h.ledger.poster is not None
        uri = await h.ledger.poster.post(account.did, "app", "v1")  # the hold resolves the DID at the PLC
        assert uri is not None
        post = (await h.records(POST))[0]["value"]
        assert post["text"].startswith(f"@{account.handle} pushed app:v1\n")
        mention = post["facets"][0]
        assert mention["features"] == [{"$type": "app.bsky.richtext.facet#mention", "did": account.did}]
        span = post["text"].encode()[mention["index"]["byteStart"]:mention["index"]["byteEnd"]]
        assert span.decode() == f"@{account.handle}"


def test_facet_offsets_are_utf8_bytes() -> None:
    post = push_post("zoë.example", "did:plc:x", "café", "v1", "https://r.example/r/zoë.example/café", "t")
    raw = post["text"].encode()
    for facet in post["facets"]:
        piece = raw[facet["index"]["byteStart"]:facet["index"]["byteEnd"]].decode()
        assert piece in ("@zoë.example", "https://r.example/r/zoë.example/café")
