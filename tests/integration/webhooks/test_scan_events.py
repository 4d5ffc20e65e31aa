"""A hold's scan records fire the owner's scan:* webhooks, through the real consumer path.

A real hold repo (signed commits, its own subscribeRepos) gets `io.atcr.hold.scan` records from
the hold's scan service (job queued on push or rescan, leased, a scanner's result recorded);
the Jetstream double follows its firehose; the real consumer applies the stream to a real
Valkey and queues the events; a real delivery worker signs them to a real HTTP receiver.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import Webhook as Verifier

from appview.auth.sessions import SessionCipher
from appview.webhooks.store import WebhookStore
from appview.webhooks.worker import DeliveryWorker
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.readmodel import keys
from atcr.readmodel.events import RecordChange, apply_records
from atcr.runtime import Runtime
from atcr.valkey import connect
from hold.repo import Put, Repo
from hold.scan.blobs import RepoBlobs
from hold.scan.queue import ScanQueue
from hold.scan.service import ScanService
from jetstream.consumer import Consumer
from jetstream.metrics import Metrics
from jetstream.scanhooks import SCAN, last_key
from tests.integration.hold_repo.conftest import serving
from tests.integration.jetstream.helpers import Writer, consumer_settings, eventually, manifest_record, new_digest
from tests.support.jetstream_server import JetstreamServer
from tests.support.pdsnet import TestNetwork, create_account
from tests.support.ui_stack import _own_valkey
from tests.support.webhook_receiver import Receiver, await_for, running_receiver
from tests.unit.hold_repo.support import HOLD_DID, make_signer

pytestmark = pytest.mark.integration

OTHER_HOLD = "did:web:other-hold.example.com"
SECRET = b"s" * 32


@pytest.fixture(scope="module")
def own_valkey_url() -> Iterator[str]:
    """Not the session's Valkey: its AppViews' delivery workers would claim these deliveries."""
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


def scan_record(owner: str, repository: str, digest: str, scanned_at: str, critical: int, high: int) -> dict[str, Any]:
    return {
        "$type": SCAN,
        "manifest": f"at://{owner}/{keys.MANIFEST}/{keys.manifest_rkey(digest)}",
        "repository": repository,
        "userDid": owner,
        "critical": critical,
        "high": high,
        "medium": 0,
        "low": 0,
        "total": critical + high,
        "scannerVersion": "atcr-scanner test",
        "scannedAt": scanned_at,
    }


def scan_outcomes(consumer: Consumer) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in consumer.metrics.registry.collect():
        for s in metric.samples:
            if s.name == "atcr_jetstream_events_total" and s.labels.get("kind") == "scan":
                out[s.labels["outcome"]] = out.get(s.labels["outcome"], 0) + s.value
    return out


async def test_first_scan_rescan_and_replay_fire_the_right_webhooks(
    valkey: Any, own_valkey_url: str, pds_network: TestNetwork, tmp_path: Path
) -> None:
    digest, foreign_digest, uncached_digest = new_digest(), new_digest(), new_digest()
    owner = Writer(create_account(pds_network.pds_url, "scanhook"))
    owner_did = owner.did
    # The owner's manifests, as the consumer stores them from the owner's PDS: one on this
    # hold, one on another hold (whose scans this hold may not announce); and one only in the
    # owner's PDS (the read model lost it): the hold rule is then checked there.
    await owner.put(keys.MANIFEST, keys.manifest_rkey(uncached_digest),
                    manifest_record("app", uncached_digest, holdDid=HOLD_DID))
    await owner.aclose()
    await apply_records(valkey, [
        RecordChange(owner_did, keys.MANIFEST, keys.manifest_rkey(digest),
                     manifest_record("app", digest, holdDid=HOLD_DID), None, None),
        RecordChange(owner_did, keys.MANIFEST, keys.manifest_rkey(foreign_digest),
                     manifest_record("app", foreign_digest, holdDid=OTHER_HOLD), None, None),
    ])
    store = WebhookStore(valkey, SessionCipher(SECRET))
    signer = make_signer("k256")
    repo = await Repo.open(tmp_path / "hold.sqlite", HOLD_DID, signer)
    with running_receiver() as receiver:
        _, secret = await store.create(owner_did, receiver.url, ["scan:first", "scan:all", "scan:changed"], None)
        http = SafeHttpClient(policy=SsrfPolicy(allowed_hosts=frozenset({f"127.0.0.1:{receiver.port}"})), timeout=5)
        worker = DeliveryWorker(store, http, retry_base=0.1, poll=0.05)
        worker.start()
        async with serving(repo, signer) as hold:
            # Stopped from a thread: its follower's close handshake needs this loop (the hold's).
            server = JetstreamServer([hold.url]).start()
            try:
                settings = consumer_settings(
                    valkey_url=own_valkey_url, plc_url=pds_network.plc_url, pds_url=pds_network.pds_url,
                    jetstream_url=server.url, relay_url=server.relay_url, ATCR_BACKFILL_ENABLED="false",
                    ATCR_JETSTREAM_REWIND="600", ATCR_BASE_URL="https://registry.test",
                )
                runtimes: list[tuple[Consumer, Runtime]] = []

                async def start_consumer() -> Consumer:
                    rt = Runtime.from_settings(settings)
                    assert rt.valkey is not None
                    consumer = Consumer(settings, rt.valkey, rt.http, rt.resolver, metrics=Metrics())
                    runtimes.append((consumer, rt))
                    hellos = len(server.hellos)
                    await consumer.start()
                    # Live from here (a cursorless connection starts its stream once greeted).
                    await eventually(lambda: _up(consumer, server, hellos), timeout=30)
                    return consumer

                try:
                    consumer = await start_consumer()
                    clock = Clock()
                    service = ScanService(ScanQueue(valkey, HOLD_DID), RepoBlobs(tmp_path / "blobs"), lambda: repo,
                                          hold_did=HOLD_DID, hold_endpoint=hold.url, scan_on_push=_always,
                                          clock=clock)
                    await _scenario(hold.repo, service, clock, consumer, receiver, valkey, owner_did,
                                    digest, foreign_digest, uncached_digest)
                    # Replay: the consumer restarts from its saved cursor minus the rewind
                    # (ATCR_JETSTREAM_REWIND) and is sent every scan again. Each is recognized
                    # (its scannedAt was seen) and fires nothing.
                    await consumer.stop()
                    again = await start_consumer()

                    async def replayed() -> bool:
                        return scan_outcomes(again) == {"replayed": 4, "foreign": 1}

                    await eventually(replayed, timeout=30)
                    assert await store.pending_count() == 0
                    assert len(receiver.snapshot()) == 7
                finally:
                    for c, rt in runtimes:
                        await c.stop()
                        await rt.aclose()
                    await worker.stop()
                    await http.aclose()
            finally:
                await asyncio.to_thread(server.stop)
        got = receiver.snapshot()

    verifier = Verifier(secret)
    events = [verifier.verify(r.body, r.headers) for r in got]  # raises unless every signature is right
    types = [e["type"] for e in events]
    assert sorted(types[:2]) == ["scan:all", "scan:first"]
    assert sorted(types[2:4]) == ["scan:all", "scan:changed"]
    assert types[4:5] == ["scan:all"]  # a rescan with the same counts
    assert sorted(types[5:]) == ["scan:all", "scan:first"]  # the manifest read from the PDS
    assert [e["data"]["digest"] for e in events] == [digest] * 5 + [uncached_digest] * 2
    for e in events:
        assert e["data"]["owner"]["did"] == owner_did
        assert e["data"]["registry"] == "registry.test"
        assert e["data"]["url"] == f"https://registry.test/r/{owner_did}/app"
    assert [e["data"]["scan"]["critical"] for e in events] == [2, 2, 0, 0, 0, 4, 4]
    assert [e["data"]["scan"]["scannedAt"][:10] for e in events] == ["2026-01-01"] * 2 + ["2026-01-02"] * 2 + [
        "2026-01-03"] + ["2026-01-04"] * 2
    assert {e["data"]["scan"]["scannerVersion"] for e in events} == {"atcr-scanner test"}
    assert len({r.headers["webhook-id"] for r in got}) == 7


async def _always(user: str) -> bool:
    return True


async def _up(consumer: Consumer, server: JetstreamServer, hellos: int) -> bool:
    return all(s.status.connected for s in consumer.sources) and len(server.hellos) > hellos


class Clock:
    """The hold's clock: each scan's `scannedAt` is what the test says."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _hold_scans(service: ScanService, clock: Clock, owner: str, digest: str, day: int, critical: int,
                      high: int, *, rescan: bool = False) -> None:
    """What the hold does for a push (or a rescan) and a scanner's answer, minus the scanner."""
    if rescan:
        await service.rescan(digest, owner)
    else:
        layer = {"digest": "sha256:" + "0" * 63 + "1", "size": 10, "mediaType": "application/vnd.oci.image.layer.v1.tar"}
        assert await service.on_push(owner, "app", digest, {"layers": [layer]}, manifest_uri=None, tag="v1")
    lease = await service.queue.lease()
    assert lease is not None and lease.digest == digest
    clock.now = datetime(2026, 1, day, tzinfo=UTC)
    summary = {"critical": critical, "high": high, "medium": 0, "low": 0, "total": critical + high}
    assert await service.result(lease, {"summary": summary, "sbom": {"spdxVersion": "SPDX-2.3"},
                                        "vulnReport": {"matches": []}, "scannerVersion": "atcr-scanner test"})


async def _scenario(repo: Repo, service: ScanService, clock: Clock, consumer: Consumer, receiver: Receiver,
                    valkey: Any, owner: str, digest: str, foreign_digest: str, uncached_digest: str) -> None:
    async def delivered(n: int) -> None:
        await await_for(lambda: len(receiver.snapshot()) >= n, what=f"{n} deliveries")

    # A scan of a manifest that lives on another hold, written straight into this hold's repo
    # (any hold can): nothing. The first scan of a manifest stored here: scan:first + scan:all.
    await repo.apply_writes([Put(SCAN, keys.manifest_rkey(foreign_digest),
                                 scan_record(owner, "app", foreign_digest, "2026-01-01T00:00:00.000Z", 9, 9))])
    await _hold_scans(service, clock, owner, digest, 1, 2, 1)
    await delivered(2)
    assert scan_outcomes(consumer) == {"foreign": 1, "queued": 1}
    kept = await valkey.hgetall(last_key(owner, "app", digest))
    assert kept[b"at"] == b"2026-01-01T00:00:00.000Z" and kept[b"hold"] == HOLD_DID.encode()

    # Rescan, other counts: scan:all + scan:changed. Then the same counts again: scan:all only.
    await _hold_scans(service, clock, owner, digest, 2, 0, 1, rescan=True)
    await delivered(4)
    await _hold_scans(service, clock, owner, digest, 3, 0, 1, rescan=True)
    await delivered(5)
    await _hold_scans(service, clock, owner, uncached_digest, 4, 4, 0)
    await delivered(7)
