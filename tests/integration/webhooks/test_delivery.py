"""Webhook delivery against a real receiver and a real Valkey: signatures, retries, crashes, SSRF."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from appview.auth.sessions import SessionCipher
from appview.webhooks.errors import WebhookUrlRefused
from appview.webhooks.events import WebhookEvents, emit_scan_event
from appview.webhooks.store import WebhookStore
from appview.webhooks.worker import DeliveryWorker, backoff
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.valkey import connect
from tests.support.ui_stack import _own_valkey
from tests.support.webhook_receiver import Receiver, await_for, running_receiver

pytestmark = pytest.mark.integration

SECRET = b"k" * 32
OWNER = "did:plc:owner0000000000000000000"


@pytest.fixture(scope="module", params=["single", "cluster"])
def own_valkey_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A Valkey of this module's own: every AppView on the session's Valkey runs a delivery
    worker, which would claim these deliveries (and refuse this test's loopback receiver).
    The same tests run on the session's Valkey Cluster (no AppView runs on it meanwhile): the
    queue's scripts must keep to one slot there (docs/cache.md)."""
    if request.param == "cluster":
        yield str(request.getfixturevalue("valkey_cluster").url)
        return
    with _own_valkey() as url:
        yield url


@pytest.fixture
async def valkey(own_valkey_url: str) -> AsyncIterator[Any]:
    client = connect(own_valkey_url)
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


@pytest.fixture
async def http(receiver: Receiver) -> AsyncIterator[SafeHttpClient]:
    # Only the receiver is let through the SSRF guard (as ATCR_WEBHOOK_ALLOWED_HOSTS does).
    client = SafeHttpClient(policy=SsrfPolicy(allowed_hosts=frozenset({f"127.0.0.1:{receiver.port}"})), timeout=5)
    yield client
    await client.aclose()


def _store(valkey: Any) -> WebhookStore:
    return WebhookStore(valkey, SessionCipher(SECRET))


def _worker(store: WebhookStore, http: SafeHttpClient, **kw: Any) -> DeliveryWorker:
    return DeliveryWorker(store, http, **{"retry_base": 0.1, "poll": 0.05, **kw})


async def test_every_event_type_arrives_once_with_a_valid_signature(
    valkey: Any, receiver: Receiver, http: SafeHttpClient
) -> None:
    store = _store(valkey)
    hook, secret = await store.create(OWNER, receiver.url, ["push", "tag", "delete", "scan:first", "scan:all",
                                                          "scan:changed"], None)
    other, _ = await store.create("did:plc:someoneelse000000000000", receiver.url, ["push"], None)
    events = WebhookEvents(store, registry_host="registry.test", base_url="http://registry.test")
    worker = _worker(store, http)
    worker.start()
    try:
        await events.emit("push", OWNER, "alice.test", "app", actor_did=OWNER, tag="v1", digest="sha256:" + "a" * 64,
                          media_type="application/vnd.oci.image.manifest.v1+json", tags=["v1"])
        await events.emit("tag", OWNER, "alice.test", "app", tag="v1", digest="sha256:" + "a" * 64,
                          previousDigest=None)
        await events.emit("tag:deleted", OWNER, "alice.test", "app", tag="v1", digest="sha256:" + "a" * 64)
        await events.emit("manifest:deleted", OWNER, "alice.test", "app", digest="sha256:" + "a" * 64, tags=[])
        summary = {"critical": 1, "high": 2, "medium": 0, "low": 0, "total": 3, "scannerVersion": "grype 0.80"}
        await emit_scan_event(events, owner_did=OWNER, repository="app", digest="sha256:" + "a" * 64,
                              summary=summary, first=True, changed=True)
        await await_for(lambda: len(receiver.snapshot()) >= 7, what="7 deliveries")
        await await_for(lambda: _drained(store), what="queue drained")
    finally:
        await worker.stop()
    got = receiver.snapshot()
    verifier = Verifier(secret)
    types = []
    for req in got:
        event = verifier.verify(req.body, req.headers)  # raises unless the signature is right
        types.append(event["type"])
        assert event["data"]["registry"] == "registry.test"
        assert event["data"]["owner"]["did"] == OWNER
    assert sorted(types) == sorted(
        ["push", "tag", "tag:deleted", "manifest:deleted", "scan:all", "scan:first", "scan:changed"]
    )
    assert len({r.headers["webhook-id"] for r in got}) == 7  # once each
    push = next(json.loads(r.body) for r in got if json.loads(r.body)["type"] == "push")
    assert push["data"]["tag"] == "v1" and push["data"]["url"] == "http://registry.test/r/alice.test/app"
    scan = next(json.loads(r.body) for r in got if json.loads(r.body)["type"] == "scan:first")
    assert scan["data"]["scan"]["critical"] == 1
    log = await store.deliveries(hook.id)
    assert len(log) == 7 and {e["outcome"] for e in log} == {"delivered"} and all(e["status"] == 200 for e in log)
    assert await store.deliveries(other.id) == []


async def _drained(store: WebhookStore) -> bool:
    return await store.pending_count() == 0


async def test_repository_filter_and_event_filter(valkey: Any, receiver: Receiver, http: SafeHttpClient) -> None:
    store = _store(valkey)
    await store.create(OWNER, receiver.url, ["push"], "only-this")
    events = WebhookEvents(store, registry_host="r", base_url="http://r")
    assert await events.emit("push", OWNER, None, "other", digest="sha256:" + "b" * 64) == 0
    assert await events.emit("tag", OWNER, None, "only-this", digest="sha256:" + "b" * 64) == 0
    assert await events.emit("push", OWNER, None, "only-this", digest="sha256:" + "b" * 64) == 1


async def test_a_500_then_200_is_delivered_on_the_retry(valkey: Any, receiver: Receiver, http: SafeHttpClient) -> None:
    store = _store(valkey)
    hook, secret = await store.create(OWNER, receiver.url, ["push"], None)
    receiver.statuses = [500]
    worker = _worker(store, http)
    worker.start()
    try:
        await WebhookEvents(store, registry_host="r", base_url="http://r").emit("push", OWNER, None, "app")
        await await_for(lambda: _drained(store), what="the retry to succeed")
    finally:
        await worker.stop()
    got = receiver.snapshot()
    assert len(got) == 2
    assert got[0].headers["webhook-id"] == got[1].headers["webhook-id"]  # the same message, retried
    Verifier(secret).verify(got[1].body, got[1].headers)
    log = await store.deliveries(hook.id)
    assert [(e["status"], e["outcome"], e["attempt"]) for e in log] == [(200, "delivered", 2), (500, "retrying", 1)]
    assert all(e["latencyMs"] >= 0 for e in log)
    assert not (await store.get(hook.id)).failing


async def test_retries_stop_after_max_age_and_the_webhook_is_marked_failing(
    valkey: Any, receiver: Receiver, http: SafeHttpClient
) -> None:
    store = _store(valkey)
    hook, _ = await store.create(OWNER, receiver.url, ["push"], None)
    receiver.statuses = [503] * 100
    # A second attempt needs the first to come within max_age of the event: 3 s leaves room for
    # a busy machine, retries 0.05 s apart make several attempts inside it.
    worker = _worker(store, http, max_age=3.0, retry_base=0.05)
    worker.start()
    try:
        await WebhookEvents(store, registry_host="r", base_url="http://r").emit("push", OWNER, None, "app")
        await await_for(lambda: _drained(store), what="the delivery to be given up")
    finally:
        await worker.stop()
    assert len(receiver.snapshot()) >= 2
    log = await store.deliveries(hook.id)
    assert log[0]["outcome"] == "failed" and all(e["outcome"] == "retrying" for e in log[1:])
    hook = await store.get(hook.id)
    assert hook.failing and hook.last_error == "HTTP 503"


def test_backoff_is_exponential_and_capped_about_a_day_of_retries() -> None:
    assert [backoff(n, 30) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
    assert backoff(40, 30) == 3600
    # With the defaults (30 s base, 1 day), a failing receiver is tried 30 times or so.
    total, n = 0.0, 0
    while total < 86400:
        n += 1
        total += backoff(n, 30)
    assert 25 <= n <= 35


async def test_a_private_address_is_refused_at_creation_and_at_delivery(
    valkey: Any, receiver: Receiver, http: SafeHttpClient
) -> None:
    from appview.webhooks.service import check_url

    policy = SsrfPolicy(allowed_hosts=frozenset({f"127.0.0.1:{receiver.port}"}))
    for url in ("http://10.0.0.8/hook", "http://127.0.0.1:1/x", "http://[::1]/x", "http://169.254.169.254/latest",
                "ftp://example.com/", "http://user:pw@127.0.0.1/x"):
        with pytest.raises(WebhookUrlRefused):
            await check_url(url, policy)
    await check_url(receiver.url, policy)  # the allow-listed receiver passes
    # Stored anyway (say the allow-list changed since): the delivery is refused, not sent.
    store = _store(valkey)
    hook, _ = await store.create(OWNER, "http://10.0.0.8/hook", ["push"], None)
    await WebhookEvents(store, registry_host="r", base_url="http://r").emit("push", OWNER, None, "app")
    worker = _worker(store, http)
    assert await worker.run_once() == 1
    log = await store.deliveries(hook.id)
    assert log[0]["outcome"] == "failed" and log[0]["status"] is None and "refused" in log[0]["error"]
    assert (await store.get(hook.id)).failing
    assert await store.pending_count() == 0


async def test_a_delivery_in_flight_when_the_worker_stops_is_finished_and_logged(
    valkey: Any, receiver: Receiver, http: SafeHttpClient
) -> None:
    """An AppView shutting down lets the deliveries it has sent finish: the receiver's answer is
    logged and the message leaves the queue, instead of being cut off and sent again later."""
    store = _store(valkey)
    hook, _ = await store.create(OWNER, receiver.url, ["push"], None)
    events = WebhookEvents(store, registry_host="registry.test", base_url="http://registry.test")
    worker = _worker(store, http)
    receiver.hold()
    worker.start()
    try:
        await events.emit("push", OWNER, "alice.test", "app", actor_did=OWNER, tag="v1", digest="sha256:" + "b" * 64,
                          media_type="application/vnd.oci.image.manifest.v1+json", tags=["v1"])
        await await_for(lambda: receiver.held >= 1, what="the delivery in flight")
        stopping = asyncio.ensure_future(worker.stop(grace=30))
        await asyncio.sleep(0)  # the stop has begun while the receiver still holds the request
        receiver.release()
        await stopping
    finally:
        receiver.release()
        await worker.stop()
    log = await store.deliveries(hook.id)
    assert [e["outcome"] for e in log] == ["delivered"], log
    assert await store.pending_count() == 0
    assert len(receiver.snapshot()) == 1
