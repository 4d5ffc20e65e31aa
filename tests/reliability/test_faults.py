"""Faults: Valkey killed under load or flushed, one user's PDS down, the hold down, S3
throttling and timing out. Each test names what must keep working, what must fail fast with
a clear error, and that nothing is lost or half-written (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

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
from tests.support.faultproxy import Req, Rule, wait_until
from tests.support.services import S3Endpoint
from tests.support.stack import start_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _code(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


def _pull_count(rel: RelStack, owner: str, repository: str) -> int:
    r = httpx.get(
        f"{rel.hold.url}/xrpc/com.atproto.repo.getRecord",
        params={"repo": rel.hold_did, "collection": "io.atcr.hold.stats", "rkey": stats_rkey(owner, repository)},
        timeout=10,
    )
    return int(r.json()["value"].get("pullCount", 0)) if r.status_code == 200 else 0


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


# --- Valkey ---------------------------------------------------------------------------------


def test_valkey_killed_during_a_load_run(rel: RelStack, rel_user: User) -> None:
    """SIGKILL Valkey in the middle of 8 s of pulls over both replicas, restart it 3 s later.

    Every pull (manifest by tag and by digest, blob redirect, tags list, anonymous token) is
    still answered while Valkey is gone: from the PDS and the hold. What needs Valkey (an
    upload) fails fast with 503 + Retry-After; a login is checked at the PDS. Service comes
    back by itself, and the hold's pull count equals the pulls served, outage included."""
    name = f"{rel_user.handle}/loadrun"
    digest, _, blobs = push_image(rel.a.url, rel.service, rel_user, "loadrun", "v1")
    push_tok = token(rel.a.url, rel.service, rel_user, f"repository:{name}:pull,push")
    tok = token(rel.b.url, rel.service, None, f"repository:{name}:pull")
    auth = (("Authorization", f"Bearer {tok}"), ("Accept", OCI_MANIFEST))
    jobs = []
    for replica in rel.replicas:
        jobs += [
            loadgen.Job(f"{replica.url}/v2/{name}/manifests/v1", auth, label="manifest"),
            loadgen.Job(f"{replica.url}/v2/{name}/manifests/{digest}", auth, label="manifest"),
            loadgen.Job(f"{replica.url}/v2/{name}/blobs/{blobs[1]}", auth, label="blob"),
            loadgen.Job(f"{replica.url}/v2/{name}/tags/list", auth, label="tags"),
            loadgen.Job(f"{replica.url}/auth/token?scope=repository:{name}:pull", label="token"),
        ]
    before = _pull_count(rel, rel_user.did, "loadrun")
    box: dict[str, loadgen.Result] = {}
    deadline = time.monotonic() + 8.0
    runner = threading.Thread(target=lambda: box.setdefault("r", asyncio.run(
        loadgen.run(jobs, concurrency=16, until=deadline, timeout=30))))
    runner.start()
    try:
        time.sleep(1.5)
        killed_at = time.monotonic()
        rel.valkey.kill()  # SIGKILL: no shutdown, no final save
        time.sleep(0.3)
        # What needs Valkey fails fast and says when to come back.
        t0 = time.monotonic()
        r = httpx.post(f"{rel.a.url}/v2/{name}/blobs/uploads/", headers=bearer(push_tok), timeout=30)
        upload_refused_in = time.monotonic() - t0
        assert r.status_code == 503 and _code(r) == "UNAVAILABLE", r.text
        # Fast: no wait for a timeout (a figure below; the bound only catches a hang).
        assert int(r.headers["Retry-After"]) > 0 and upload_refused_in < 10
        assert not _ready(rel.a.url) and not _ready(rel.b.url)
        # A Docker login is checked at the user's PDS: pulls of logged-in clients keep working.
        login = httpx.get(f"{rel.b.url}/auth/token", params={"service": rel.service, "scope": f"repository:{name}:pull"},
                          auth=(rel_user.handle, rel_user.app_password), timeout=30)
        assert login.status_code == 200, login.text
        time.sleep(max(0.0, killed_at + 3.0 - time.monotonic()))
        url = rel.valkey.start()
        restarted_at = time.monotonic()
        assert url == rel.valkey_url, "valkey came back on another port"
        recovered = wait_until(lambda: _ready(rel.a.url) and _ready(rel.b.url), 20, "replicas ready again")
    finally:
        runner.join(60)
        if not rel.valkey.is_running():
            rel.valkey.start()
    result = box["r"]
    outage = [e for e in result.timeline if killed_at <= e[0] < restarted_at]
    bad = [e for e in result.timeline if e[2] not in (200, 307)]
    assert len(outage) >= 10, len(outage)  # pulls kept running through the outage (and none failed)
    assert bad == [], bad[:20]
    # Back to normal without a restart: an upload works again.
    data = os.urandom(512)
    with httpx.Client(timeout=60) as client:
        upload_blob(client, rel.a.url, name, push_tok, data)
    # Counts sent while the hold's Valkey was gone were kept and re-sent: none lost, none doubled.
    served = sum(1 for e in result.timeline if e[3] == "manifest" and e[2] == 200)
    waited = wait_until(lambda: _pull_count(rel, rel_user.did, "loadrun") - before >= served, 30, "pull counts")
    time.sleep(1.5)
    assert _pull_count(rel, rel_user.did, "loadrun") - before == served
    by_label: dict[str, int] = {}
    for e in outage:
        by_label[e[3]] = by_label.get(e[3], 0) + 1
    print(f"\n[figure] valkey SIGKILLed under load: {result.total} requests in 8 s, {len(outage)} during the "
          f"{restarted_at - killed_at:.1f} s outage ({by_label}), all answered 200/307; upload refused 503 in "
          f"{upload_refused_in * 1000:.0f} ms; ready {recovered:.1f} s after restart; "
          f"{served} pulls counted exactly ({waited:.1f} s)")


def test_flushing_valkey_loses_no_user_data(rel: RelStack, rel_user: User) -> None:
    """FLUSHALL: images, tags and pull counts are all still there (PDS, hold); only the PDS
    session is gone, so a push asks to log in again, and after `docker login` it works."""
    name = f"{rel_user.handle}/keep"
    digest, raw, blobs = push_image(rel.a.url, rel.service, rel_user, "keep", "v1")
    tok = token(rel.a.url, rel.service, rel_user, f"repository:{name}:pull,push")
    with httpx.Client(timeout=30) as client:
        client.get(f"{rel.b.url}/v2/{name}/manifests/v1", headers={**bearer(tok), "Accept": OCI_MANIFEST})
        wait_until(lambda: _pull_count(rel, rel_user.did, "keep") == 1, 20, "pull counted")
        keys_before = rel.valkey_client().dbsize()
        rel.valkey_client().flushall()
        r = client.get(f"{rel.b.url}/v2/{name}/manifests/v1", headers={**bearer(tok), "Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == raw
        r = client.get(f"{rel.a.url}/v2/{name}/tags/list", headers=bearer(tok))
        assert r.json()["tags"] == ["v1"]
        r = client.get(f"{rel.a.url}/v2/{name}/blobs/{blobs[1]}", headers=bearer(tok))
        assert r.status_code == 307
        assert _pull_count(rel, rel_user.did, "keep") >= 1
        # The PDS session lived in Valkey: the old token still verifies, the push asks for a login.
        r = client.post(f"{rel.a.url}/v2/{name}/blobs/uploads/", params={"digest": digest_of(b"x")}, content=b"x",
                        headers=bearer(tok))
        assert r.status_code == 401 and "login" in r.json()["errors"][0]["message"], r.text
        fresh = token(rel.a.url, rel.service, rel_user, f"repository:{name}:pull,push")
        upload_blob(client, rel.a.url, name, fresh, b"x")
    print(f"\n[figure] FLUSHALL of {keys_before} keys: manifest, tag, blob, pull count all served afterwards; "
          "0 user records lost; sessions re-made by one login")


# --- one user's PDS -------------------------------------------------------------------------


def test_one_users_pds_down(rel: RelStack) -> None:
    """The victim's PDS answers 503, then hangs. Their cached image still pulls (stale entries
    are served), other users are untouched, writes fail at once with a clear 503, and a write
    cut off half-way leaves no tag pointing at a missing manifest."""
    victim = rel.user("victim", victim=True)
    other = rel.user("bystander")
    name = f"{victim.handle}/app"
    digest, raw, blobs = push_image(rel.a.url, rel.service, victim, "app", "v1")
    tok = token(rel.a.url, rel.service, victim, f"repository:{name}:pull,push")
    assert rel.pds.count() > 0  # the victim's PDS traffic goes through the proxy
    config, layer = b'{"architecture":"arm64","os":"linux"}', os.urandom(900)
    with httpx.Client(timeout=60) as client:
        cfg = upload_blob(client, rel.a.url, name, tok, config)
        lay = upload_blob(client, rel.a.url, name, tok, layer)
    body = image_manifest((cfg, len(config)), [(lay, len(layer))])
    records_before = len(list_records(rel.network.pds_url, victim.did, "io.atcr.manifest"))

    rel.pds.fail_all()
    time.sleep(2.2)  # past ATCR_CACHE_FRESH_TTL: what is served now is served stale
    timings = []
    with httpx.Client(timeout=30) as client:
        for replica in rel.replicas:
            for ref in ("v1", digest):
                t0 = time.monotonic()
                r = client.get(f"{replica.url}/v2/{name}/manifests/{ref}", headers={**bearer(tok), "Accept": OCI_MANIFEST})
                timings.append(time.monotonic() - t0)
                assert r.status_code == 200 and r.content == raw, r.text
            assert client.get(f"{replica.url}/v2/{name}/blobs/{blobs[1]}", headers=bearer(tok)).status_code == 307
        # Writes fail fast and say why; nothing reaches the PDS.
        t0 = time.monotonic()
        r = client.put(f"{rel.b.url}/v2/{name}/manifests/v2", content=body,
                       headers={**bearer(tok), "Content-Type": OCI_MANIFEST})
        put_refused_in = time.monotonic() - t0
        assert r.status_code == 503 and "PDS" in r.json()["errors"][0]["message"], r.text
        assert r.headers["Retry-After"]
        r = client.post(f"{rel.a.url}/v2/{name}/blobs/uploads/", params={"digest": digest_of(b"new")},
                        content=b"new", headers=bearer(tok))
        assert r.status_code == 503 and "PDS" in r.json()["errors"][0]["message"], r.text
        assert len(list_records(rel.network.pds_url, victim.did, "io.atcr.manifest")) == records_before
        # Everyone else is unaffected.
        push_image(rel.b.url, rel.service, other, "fine", "v1")

        # A PDS that hangs: pulls do not wait for it.
        rel.pds.clear()
        rel.pds.hang_all()
        time.sleep(2.2)
        t0 = time.monotonic()
        r = client.get(f"{rel.a.url}/v2/{name}/manifests/v1", headers={**bearer(tok), "Accept": OCI_MANIFEST})
        hang_pull = time.monotonic() - t0
        # A stale answer is served at once; one that waited for the hanging PDS would take the
        # 5 s ATCR_CACHE_UPSTREAM_TIMEOUT (and still be 200, stale): 4 s leaves a busy machine room.
        assert r.status_code == 200 and hang_pull < 4.0, hang_pull
        rel.pds.clear()

        # Cut off half-way: the manifest record is written, the tag write fails.
        cut = rel.pds.add(Rule(lambda q: q.path.endswith("com.atproto.repo.putRecord") and b"io.atcr.tag" in q.body,
                               status=503, body=b'{"error":"Unavailable"}'))
        r = client.put(f"{rel.a.url}/v2/{name}/manifests/v1", content=body,
                       headers={**bearer(tok), "Content-Type": OCI_MANIFEST})
        assert r.status_code == 503, r.text
        assert cut.hits >= 1
        rel.pds.clear()
        manifests = {m["value"]["digest"] for m in list_records(rel.network.pds_url, victim.did, "io.atcr.manifest")}
        tags = list_records(rel.network.pds_url, victim.did, "io.atcr.tag")
        assert tags and all(t["value"]["manifestDigest"] in manifests for t in tags)
        assert {t["value"]["tag"]: t["value"]["manifestDigest"] for t in tags} == {"v1": digest}
        # Recovered: the same push goes through, and every replica serves it.
        r = client.put(f"{rel.a.url}/v2/{name}/manifests/v1", content=body,
                       headers={**bearer(tok), "Content-Type": OCI_MANIFEST})
        assert r.status_code == 201, r.text
        r = client.get(f"{rel.b.url}/v2/{name}/manifests/v1", headers={**bearer(tok), "Accept": OCI_MANIFEST})
        assert r.headers["Docker-Content-Digest"] == digest_of(body)
    print(f"\n[figure] one user's PDS down (503, then hanging): 4/4 stale pulls served, slowest "
          f"{max(timings) * 1000:.0f} ms (hanging PDS: {hang_pull * 1000:.0f} ms); manifest PUT refused 503 in "
          f"{put_refused_in * 1000:.0f} ms; half-cut push left 0 dangling tags")


# --- the hold -------------------------------------------------------------------------------


def _page_warns(rel: RelStack, url: str, path: str) -> bool:
    page = httpx.get(url + path, timeout=30)
    assert page.status_code == 200, page.text[:300]
    return 'id="hold-warning"' in page.text


def test_hold_down_fails_fast_and_recovers(rel: RelStack, rel_user: User) -> None:
    """The hold process is SIGKILLed. Manifests still pull; a blob the AppView has not just
    redirected fails at once with 503 + Retry-After naming the hold; the repository page warns
    that the hold is unreachable. When the hold is back, everything works without a restart."""
    name = f"{rel_user.handle}/held"
    _, _, warm_blobs = push_image(rel.a.url, rel.service, rel_user, "held", "v1")
    digest2, raw2, cold_blobs = push_image(rel.a.url, rel.service, rel_user, "held", "v2")
    tok = token(rel.a.url, rel.service, rel_user, f"repository:{name}:pull,push")
    path = f"/r/{rel_user.handle}/held"
    with httpx.Client(timeout=30) as client:
        warm = client.get(f"{rel.a.url}/v2/{name}/blobs/{warm_blobs[1]}", headers=bearer(tok))
        assert warm.status_code == 307
        rel.hold.proc.kill()
        rel.hold.proc.wait(10)
        try:
            r = client.get(f"{rel.b.url}/v2/{name}/manifests/v2", headers={**bearer(tok), "Accept": OCI_MANIFEST})
            assert r.status_code == 200 and r.content == raw2
            t0 = time.monotonic()
            r = client.get(f"{rel.b.url}/v2/{name}/blobs/{cold_blobs[1]}", headers=bearer(tok))
            blob_refused_in = time.monotonic() - t0
            assert (r.status_code, _code(r)) == (503, "UNAVAILABLE"), r.text
            assert "hold" in r.json()["errors"][0]["message"] and int(r.headers["Retry-After"]) > 0
            assert blob_refused_in < 10
            # A redirect handed out a moment ago still leads to the bytes: they are in S3, not the hold.
            again = client.get(f"{rel.a.url}/v2/{name}/blobs/{warm_blobs[1]}", headers=bearer(tok))
            assert again.status_code == 307 and client.get(again.headers["Location"]).status_code == 200
            # Pushes say where the trouble is.
            r = client.post(f"{rel.a.url}/v2/{name}/blobs/uploads/", params={"digest": digest_of(b"y")},
                            content=b"y", headers=bearer(tok))
            assert r.status_code == 503 and "hold" in r.json()["errors"][0]["message"], r.text
            wait_until(lambda: _page_warns(rel, rel.b.url, path), 15, "the page to warn")
            # Without even a proxy in front: connection refused is just as fast.
            rel.hold_front.stop()
            t0 = time.monotonic()
            r = client.get(f"{rel.a.url}/v2/{name}/blobs/{cold_blobs[0]}", headers=bearer(tok))
            refused_in = time.monotonic() - t0
            assert r.status_code == 503 and refused_in < 10, r.text
        finally:
            rel.hold_front.start()
            rel.hold = start_service("hold", "hold", rel.hold_env, rel.work, rel.hold.url)
        t_back = time.monotonic()
        wait_until(lambda: client.get(f"{rel.b.url}/v2/{name}/blobs/{cold_blobs[1]}",
                                      headers=bearer(tok)).status_code == 307, 20, "blob pulls work again")
        recovered = time.monotonic() - t_back
        wait_until(lambda: not _page_warns(rel, rel.b.url, path), 15, "the page stops warning")
        push_image(rel.b.url, rel.service, rel_user, "held", "v3", tok=tok)
    print(f"\n[figure] hold SIGKILLed: manifests 200, uncached blob 503 in {blob_refused_in * 1000:.0f} ms "
          f"(connection refused: {refused_in * 1000:.0f} ms), page warns; blob pulls back {recovered:.1f} s after "
          "the hold restarted, no AppView restart")


# --- S3 -------------------------------------------------------------------------------------


def _slowdown(match: Callable[[Req], bool], times: int | None = None) -> Rule:
    body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
            b"<Message>Please reduce your request rate.</Message></Error>")
    return Rule(match, status=503, body=body, headers={"content-type": "application/xml"}, times=times)


def _is_part(q: Req) -> bool:
    return q.method == "PUT" and "partNumber=" in q.query


def _is_complete(q: Req) -> bool:
    return q.method == "POST" and "uploadId=" in q.query


def test_s3_throttling_and_timeouts(rel: RelStack, rel_user: User, s3_endpoint: S3Endpoint) -> None:
    """Through a proxy in front of moto: SlowDown answers and a read timeout are retried with
    backoff and the push completes; S3 that keeps refusing makes the upload fail with a clear
    503, the client aborts it, and the S3 multipart upload is gone with it."""
    name = f"{rel_user.handle}/s3"
    tok = token(rel.a.url, rel.service, rel_user, f"repository:{name}:pull,push")
    parts = rel.s3.add(_slowdown(_is_part, times=2))
    completes = rel.s3.add(_slowdown(_is_complete, times=1))
    data = os.urandom(300_000)
    with httpx.Client(timeout=120) as client:
        t0 = time.monotonic()
        digest = upload_blob(client, rel.a.url, name, tok, data)
        throttled_in = time.monotonic() - t0
        assert (parts.hits, completes.hits) == (2, 1)
        rel.s3.clear()
        # A part upload that S3 does not answer within S3_READ_TIMEOUT (2 s) is sent again.
        slow = rel.s3.add(Rule(_is_part, delay=3.0, times=1))
        t0 = time.monotonic()
        upload_blob(client, rel.a.url, name, tok, os.urandom(200_000))
        timed_out_in = time.monotonic() - t0
        assert slow.hits == 1 and timed_out_in >= 2.0
        rel.s3.clear()
        # Persistent throttling: bounded retries, then a clear error; the upload can be aborted.
        s3 = s3_endpoint.client()
        open_before = len(s3.list_multipart_uploads(Bucket=rel.bucket).get("Uploads", []))
        refusing = rel.s3.add(_slowdown(_is_part))
        doomed = os.urandom(100_000)
        start = client.post(f"{rel.b.url}/v2/{name}/blobs/uploads/", headers=bearer(tok))
        location = start.headers["Location"]
        t0 = time.monotonic()
        r = client.put(rel.a.url + location, params={"digest": digest_of(doomed)}, content=doomed,
                       headers={**bearer(tok), "Content-Type": "application/octet-stream"})
        gave_up_in = time.monotonic() - t0
        assert r.status_code == 503 and "storage" in r.json()["errors"][0]["message"], r.text
        assert refusing.hits == 5  # S3_MAX_ATTEMPTS
        assert len(s3.list_multipart_uploads(Bucket=rel.bucket).get("Uploads", [])) == open_before + 1
        assert client.delete(rel.b.url + location, headers=bearer(tok)).status_code == 204
        assert len(s3.list_multipart_uploads(Bucket=rel.bucket).get("Uploads", [])) == open_before
        assert client.head(f"{rel.a.url}/v2/{name}/blobs/{digest_of(doomed)}", headers=bearer(tok)).status_code == 404
        rel.s3.clear()
        upload_blob(client, rel.a.url, name, tok, doomed)
        r = client.get(f"{rel.b.url}/v2/{name}/blobs/{digest}", headers=bearer(tok))
        assert client.get(r.headers["Location"]).content == data
    print(f"\n[figure] S3 SlowDown x3: push done in {throttled_in:.2f}s; part timeout: done in {timed_out_in:.2f}s; "
          f"S3 refusing: 5 attempts, 503 in {gave_up_in:.2f}s, upload aborted, 0 multipart uploads left")
