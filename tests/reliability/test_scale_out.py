"""Scale-out: two AppView replicas (separate processes) on one Valkey and one hold.

Push through one replica and pull through the other; an upload started on one is finished on
the other; registry tokens, PDS sessions and web sessions made by one work on the other; and
nothing is lost when both take concurrent writes and reads (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time

import httpx
import pytest

from atcr.readmodel.keys import stats_rkey
from tests.reliability.stack import (
    OCI_MANIFEST,
    RelStack,
    User,
    bearer,
    digest_of,
    image_manifest,
    list_records,
    push_image,
    token,
    upload_blob,
)
from tests.support import loadgen
from tests.support.faultproxy import Rule, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_push_on_one_replica_pull_on_the_other(rel: RelStack, rel_user: User) -> None:
    name = f"{rel_user.handle}/app"
    # A token from replica A (signed with the shared key, for the shared public name) ...
    tok = token(rel.a.url, rel.service, rel_user, f"repository:{name}:pull,push")
    digest, raw, blobs = push_image(rel.a.url, rel.service, rel_user, "app", "v1", tok=tok)
    with httpx.Client(timeout=30) as client:
        # ... is good on replica B, whose read model is the same Valkey: the tag is there at once.
        r = client.get(f"{rel.b.url}/v2/{name}/manifests/v1", headers={**bearer(tok), "Accept": OCI_MANIFEST})
        assert r.status_code == 200, r.text
        assert r.headers["Docker-Content-Digest"] == digest
        assert r.content == raw
        for blob in blobs:
            r = client.get(f"{rel.b.url}/v2/{name}/blobs/{blob}", headers=bearer(tok))
            assert r.status_code == 307, r.text
            assert hashlib.sha256(client.get(r.headers["Location"]).content).hexdigest() == blob[7:]
        # B pushes a second tag with the PDS session A opened at login (B never saw the password).
        config, layer = b'{"architecture":"arm64","os":"linux"}', os.urandom(1000)
        cfg = upload_blob(client, rel.b.url, name, tok, config)
        lay = upload_blob(client, rel.b.url, name, tok, layer)
        body = image_manifest((cfg, len(config)), [(lay, len(layer))])
        r = client.put(f"{rel.b.url}/v2/{name}/manifests/v2", content=body,
                       headers={**bearer(tok), "Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        tags = client.get(f"{rel.a.url}/v2/{name}/tags/list", headers=bearer(tok)).json()["tags"]
        assert tags == ["v1", "v2"]
        # Through the load balancer (the public name both replicas share), alternately A and B.
        for _ in range(4):
            r = client.get(f"{rel.base_url}/v2/{name}/manifests/v2", headers={**bearer(tok), "Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == digest_of(body)


def test_a_tag_moved_on_one_replica_is_pulled_from_the_other_at_once(rel: RelStack, rel_user: User) -> None:
    """Each replica keeps hot answers in memory (the near cache); Valkey's invalidation messages
    must reach the other replica before a client that pushed through one can ask the other."""
    name = f"{rel_user.handle}/moving"
    tok = token(rel.a.url, rel.service, rel_user, f"repository:{name}:pull,push")
    accept = {**bearer(tok), "Accept": OCI_MANIFEST}
    stale = 0
    with httpx.Client(timeout=30) as client:
        for _ in range(12):
            digest, _, _ = push_image(rel.a.url, rel.service, rel_user, "moving", "latest", tok=tok)
            for _ in range(3):  # the first read fills B's memory; the next ones come from it
                r = client.get(f"{rel.b.url}/v2/{name}/manifests/latest", headers=accept)
                assert r.status_code == 200, r.text
                stale += r.headers["Docker-Content-Digest"] != digest
    assert stale == 0, f"{stale} reads after a re-tag on the other replica returned the old digest"


def test_upload_started_on_one_replica_finished_on_the_other(rel: RelStack, rel_user: User) -> None:
    name = f"{rel_user.handle}/chunked"
    tok = token(rel.b.url, rel.service, rel_user, f"repository:{name}:pull,push")
    # 40 MiB in four chunks over both replicas: parts of 16 MiB are sent to the hold by
    # whichever replica fills them, and the tail travels between replicas through Valkey.
    data = os.urandom(40 * 1024 * 1024 + 123)
    chunks = [data[i : i + 11 * 1024 * 1024] for i in range(0, len(data), 11 * 1024 * 1024)]
    with httpx.Client(timeout=120) as client:
        r = client.post(f"{rel.a.url}/v2/{name}/blobs/uploads/", headers=bearer(tok))
        assert r.status_code == 202, r.text
        location = r.headers["Location"]
        offset = 0
        for i, chunk in enumerate(chunks):
            replica = rel.replicas[i % 2]
            r = client.patch(
                replica.url + location, content=chunk,
                headers={**bearer(tok), "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
                         "Content-Type": "application/octet-stream"},
            )
            assert r.status_code == 202, r.text
            offset += len(chunk)
            assert r.headers["Range"] == f"0-{offset - 1}"
            # Either replica reports the same progress.
            status = client.get(rel.replicas[(i + 1) % 2].url + location, headers=bearer(tok))
            assert (status.status_code, status.headers["Range"]) == (204, f"0-{offset - 1}")
        digest = digest_of(data)
        r = client.put(rel.b.url + location, params={"digest": digest}, headers=bearer(tok))
        assert r.status_code == 201, r.text
        r = client.get(f"{rel.a.url}/v2/{name}/blobs/{digest}", headers=bearer(tok))
        assert r.status_code == 307
        got = client.get(r.headers["Location"]).content
        assert len(got) == len(data) and hashlib.sha256(got).hexdigest() == digest[7:]


def test_twenty_concurrent_pushes_to_one_tag_across_replicas(rel: RelStack, rel_user: User) -> None:
    """20 different manifests PUT to one tag at once, alternating replicas: no 5xx, every
    manifest record written, and the tag ends on one of them, the same everywhere."""
    name = f"{rel_user.handle}/race"
    tok = token(rel.a.url, rel.service, rel_user, f"repository:{name}:pull,push")
    config = b'{"architecture":"amd64","os":"linux"}'
    with httpx.Client(timeout=60) as client:
        cfg = upload_blob(client, rel.a.url, name, tok, config)
        bodies = []
        for i in range(20):
            layer = f"layer-{i}-{os.urandom(8).hex()}".encode()
            lay = upload_blob(client, rel.replicas[i % 2].url, name, tok, layer)
            bodies.append(image_manifest((cfg, len(config)), [(lay, len(layer))], note=str(i)))

    async def put_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(
                client.put(f"{rel.replicas[i % 2].url}/v2/{name}/manifests/race", content=body,
                           headers={**bearer(tok), "Content-Type": OCI_MANIFEST})
                for i, body in enumerate(bodies)
            ))

    started = time.monotonic()
    responses = asyncio.run(put_all())
    took = time.monotonic() - started
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses if r.status_code != 201]
    digests = {digest_of(b) for b in bodies}
    pds = rel.network.pds_url
    assert digests <= {m["value"]["digest"] for m in list_records(pds, rel_user.did, "io.atcr.manifest")}
    race = [t for t in list_records(pds, rel_user.did, "io.atcr.tag") if t["value"]["tag"] == "race"]
    assert len(race) == 1
    winner = race[0]["value"]["manifestDigest"]
    assert winner in digests
    with httpx.Client(timeout=30) as client:
        for replica in rel.replicas:
            r = client.get(f"{replica.url}/v2/{name}/manifests/race", headers={**bearer(tok), "Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == winner
            for d in digests:  # every manifest stays pullable by digest
                assert client.head(f"{replica.url}/v2/{name}/manifests/{d}", headers=bearer(tok)).status_code == 200
    print(f"\n[figure] 20 concurrent pushes to one tag over 2 replicas: 20x201 in {took:.2f}s, 20/20 records")


def _pull_count(rel: RelStack, owner: str, repository: str) -> int:
    r = httpx.get(
        f"{rel.hold.url}/xrpc/com.atproto.repo.getRecord",
        params={"repo": rel.hold_did, "collection": "io.atcr.hold.stats", "rkey": stats_rkey(owner, repository)},
        timeout=10,
    )
    if r.status_code != 200:
        return 0
    return int(r.json()["value"].get("pullCount", 0))


def test_thousand_concurrent_pulls_counted_exactly(rel: RelStack, rel_user: User) -> None:
    """1,000 manifest GETs over both replicas (200 connections): the hold's pullCount is exactly
    1,000, although one in ten of the AppView's count notifications loses its answer (the
    hold counted it, the AppView saw a 502 and sent it again)."""
    digest, _, _ = push_image(rel.a.url, rel.service, rel_user, "popular", "latest")
    name = f"{rel_user.handle}/popular"
    tok = token(rel.b.url, rel.service, None, f"repository:{name}:pull")
    lost = rel.hold_front.add(Rule(
        lambda r: r.path.endswith("io.atcr.hold.notifyManifest") and b'"pull"' in r.body and b"popular" in r.body,
        lose_answer=True, times=3,
    ))
    assert _pull_count(rel, rel_user.did, "popular") == 0

    auth = (("Authorization", f"Bearer {tok}"), ("Accept", OCI_MANIFEST))
    jobs = [
        loadgen.Job(f"{rel.replicas[i % 2].url}/v2/{name}/manifests/{'latest' if i % 3 else digest}", auth)
        for i in range(1000)
    ]
    # 1,000 connections at once, one pull each, half on each replica.
    result = asyncio.run(loadgen.run(jobs, concurrency=1000))
    assert result.statuses == {200: 1000}, (result.statuses, result.errors)
    took = result.seconds
    waited = wait_until(lambda: _pull_count(rel, rel_user.did, "popular") >= 1000, 30, "pull count reaches 1,000")
    time.sleep(1.5)  # a late duplicate would land within one more flush interval
    assert _pull_count(rel, rel_user.did, "popular") == 1000
    assert lost.hits >= 1
    print(f"\n[figure] 1,000 concurrent pulls over 2 replicas in {took:.2f}s ({1000 / took:.0f}/s, "
          f"p99 {result.percentile(99) * 1000:.0f} ms); "
          f"pullCount exactly 1,000 after {waited:.1f}s; {lost.hits} notification answer(s) lost and retried")


def _signed_in_browser(rel: RelStack, user: User) -> httpx.Client:
    """A browser-like client signed in through the real PDS OAuth pages, via the load balancer."""
    from tests.support.ui_stack import sign_in

    client = httpx.Client(base_url=rel.base_url, timeout=60, follow_redirects=False)
    sign_in(client, user.account, next_path="/")
    return client


def test_concurrent_star_and_unstar_by_many_users_count_exactly(rel: RelStack) -> None:
    """Ten signed-in users star and unstar one repository at the same time, each through
    both replicas in turn (star, unstar, star ... through the UI's own route): the star count
    is exactly the number of users whose last action was a star, in the read model and in
    the users' PDSes. Web sessions made through the load balancer work on either replica."""
    from concurrent.futures import ThreadPoolExecutor

    from atcr.readmodel import keys
    from tests.support.ui_stack import csrf_of

    owner = rel.user("starred")
    push_image(rel.a.url, rel.service, owner, "famous", "v1")
    fans = [rel.user(f"fan{i}") for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        browsers = list(pool.map(lambda u: _signed_in_browser(rel, u), fans))
    path = f"/r/{owner.handle}/famous"
    try:
        tokens = []
        for i, browser in enumerate(browsers):
            page = browser.get(rel.replicas[i % 2].url + path)
            assert page.status_code == 200, page.text[:300]
            tokens.append(csrf_of(page.text))
        # Users 0-5 end starred (star, unstar, star); 6-9 end unstarred (star, unstar).
        plans = [[1, 0, 1] if i < 6 else [1, 0] for i in range(10)]

        def act(i: int) -> list[int]:
            seen = []
            for step, on in enumerate(plans[i]):
                replica = rel.replicas[(i + step) % 2]
                r = browsers[i].post(
                    replica.url + path + "/-/star", data={"star": str(on), "csrf_token": tokens[i]},
                    headers={"Accept": "application/json"},
                )
                assert r.status_code == 200, r.text[:300]
                assert r.json()["starred"] is bool(on)
                seen.append(r.status_code)
            return seen

        started = time.monotonic()
        with ThreadPoolExecutor(10) as pool:
            list(pool.map(act, range(10)))
        took = time.monotonic() - started
        client = rel.valkey_client()
        try:
            assert client.scard(keys.stars(owner.did, "famous")) == 6
        finally:
            client.close()
        starred_in_pds = 0
        for fan in fans:
            records = list_records(rel.network.pds_url, fan.did, "io.atcr.sailor.star")
            starred_in_pds += sum(1 for r in records if "famous" in json.dumps(r["value"]))
        assert starred_in_pds == 6
        # Re-starring is idempotent, and both replicas report the same count.
        for i in (0, 1):
            r = browsers[i].post(rel.replicas[i].url + path + "/-/star", data={"star": "1", "csrf_token": tokens[i]},
                                 headers={"Accept": "application/json"})
            assert r.json() == {"starred": True, "count": 6}
    finally:
        for browser in browsers:
            browser.close()
    print(f"\n[figure] 10 users x 2-3 concurrent star/unstar over 2 replicas in {took:.2f}s: count 6 = 6 PDS records")
