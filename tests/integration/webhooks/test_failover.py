"""A Valkey failover right after a push loses no queued delivery: the enqueue waits until the
replica has it (WAIT), so the promoted replica's worker delivers it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import valkey
from standardwebhooks.webhooks import Webhook as Verifier

from appview.auth.sessions import SessionCipher
from appview.webhooks import store as store_module
from appview.webhooks.events import WebhookEvents
from appview.webhooks.store import DUE, WebhookStore
from appview.webhooks.worker import DeliveryWorker
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.valkey import connect
from tests.reliability.test_valkey_sentinel import Node, _start
from tests.support.webhook_receiver import Receiver, await_for, running_receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OWNER = "did:plc:owner0000000000000000000"


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[Node, Node]]:
    primary = _start(tmp_path / "primary", "primary", [])
    replica = _start(tmp_path / "replica", "replica", [f"replicaof 127.0.0.1 {primary.port}"])
    try:
        deadline = time.monotonic() + 15
        probe = valkey.Valkey(host="127.0.0.1", port=replica.port)
        while probe.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not sync"
            time.sleep(0.05)
        probe.close()
        yield primary, replica
    finally:
        replica.kill()
        primary.kill()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


async def test_a_delivery_queued_before_a_failover_is_delivered_by_the_new_primary(
    pair: tuple[Node, Node], receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The enqueue waits for the replica's acknowledgement at most REPLICA_WAIT_MS (then only
    # logs): a busy machine must not turn that bound into a lost check.
    monkeypatch.setattr(store_module, "REPLICA_WAIT_MS", 10_000)
    primary, replica = pair
    cipher = SessionCipher(b"k" * 32)
    old = connect(f"redis://127.0.0.1:{primary.port}/0")
    store = WebhookStore(old, cipher)
    hook, secret = await store.create(OWNER, receiver.url, ["push"], None)
    assert await WebhookEvents(store, registry_host="r", base_url="http://r").emit("push", OWNER, None, "app") == 1
    # No polling here: the enqueue returned only once the replica had it.
    on_replica = valkey.Valkey(host="127.0.0.1", port=replica.port)
    assert on_replica.zcard(DUE) == 1
    on_replica.close()
    primary.kill()  # SIGKILL: nothing more reaches the replica
    await old.aclose()

    promoted = connect(f"redis://127.0.0.1:{replica.port}/0")
    await promoted.execute_command("REPLICAOF", "NO", "ONE")
    http = SafeHttpClient(policy=SsrfPolicy(allowed_hosts=frozenset({f"127.0.0.1:{receiver.port}"})), timeout=5)
    worker = DeliveryWorker(WebhookStore(promoted, cipher), http, poll=0.05)
    worker.start()
    try:
        await await_for(receiver.snapshot, what="the delivery from the promoted replica")
    finally:
        await worker.stop()
        await http.aclose()
        await promoted.aclose()
    got = receiver.snapshot()
    assert len(got) == 1 and Verifier(secret).verify(got[0].body, got[0].headers)["type"] == "push"
