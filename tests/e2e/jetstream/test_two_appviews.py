"""Two AppView instances sharing Valkey, the hold, and `atcr jetstream` following the network.

Each service is its own process, as in a deployment. An image pushed with skopeo through
AppView A shows in AppView B's tags list; then tags written and deleted *straight in the
PDS* (as any other AppView or client of the user's PDS would) show up and disappear in B.
B has just listed the repository, so its loader treats the collection as fresh and does not
ask the PDS again for 15 minutes (`ATCR_CACHE_FRESH_TTL` for B): only the consumer can bring
those changes (and the test checks that B did not list again). The waits only bound a hang; how fast is a benchmark's business.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from valkey import Valkey as SyncValkey

from atcr.identity import did_web_for_url
from atcr.readmodel import keys
from tests.integration.jetstream.helpers import Writer, tag_record
from tests.support.jetstream_server import JetstreamServer
from tests.support.ocilayout import Layout
from tests.support.pdsnet import TestNetwork, create_account, create_app_password
from tests.support.services import S3Endpoint, free_port
from tests.support.stack import Service, appview_env, hold_env, network_env, start_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Stack:
    a: Service
    b: Service
    hold: Service
    consumer: Service
    jetstream: JetstreamServer
    hold_did: str


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, valkey_url: str, pds_network: TestNetwork, s3_endpoint: S3Endpoint
) -> Iterator[Stack]:
    work: Path = tmp_path_factory.mktemp("two-appviews")
    bucket = f"hold-{uuid.uuid4().hex[:10]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    net = network_env(valkey_url, pds_network.plc_url, pds_network.pds_url)
    hold_port, a_port, b_port, js_port = free_port(), free_port(), free_port(), free_port()
    s3 = s3_endpoint.hold_env(bucket)
    started: list[Service] = []
    with JetstreamServer([pds_network.pds_url]) as jetstream:
        try:
            hold = start_service(
                "hold", "hold", {**net, **hold_env(work, hold_port, s3=s3)}, work, f"http://127.0.0.1:{hold_port}"
            )
            started.append(hold)
            hold_did = did_web_for_url(f"http://localhost:{hold_port}")
            for name, port in (("appview-a", a_port), ("appview-b", b_port)):
                env = {**net, **appview_env(work / name, port, hold_did)}
                if name == "appview-b":  # fresh for longer than the test's waits add up to
                    env["ATCR_CACHE_FRESH_TTL"] = "900"
                started.append(start_service(name, "appview", env, work / name, f"http://127.0.0.1:{port}"))
            consumer_env = {
                **net,
                "JETSTREAM_URL": jetstream.url,
                "ATCR_RELAY_ENDPOINT": jetstream.relay_url,
                "ATCR_JETSTREAM_STATUS_ADDR": f"127.0.0.1:{js_port}",
                # ... and the hold's own repository, straight from its firehose (verified).
                "ATCR_FIREHOSE_URLS": f"http://127.0.0.1:{hold_port}",
            }
            consumer = start_service(
                "jetstream", "jetstream", consumer_env, work / "jetstream", f"http://127.0.0.1:{js_port}"
            )
            started.append(consumer)
            yield Stack(
                a=started[1], b=started[2], hold=hold, consumer=consumer, jetstream=jetstream, hold_did=hold_did
            )
        finally:
            for svc in reversed(started):
                svc.stop()


def _token(url: str, handle: str | None, password: str | None, scope: str) -> str:
    auth = (handle, password) if handle and password else None
    host = url.removeprefix("http://")
    r = httpx.get(f"{url}/auth/token", params={"service": host, "scope": scope}, auth=auth, timeout=30)
    r.raise_for_status()
    return str(r.json()["token"])


def _tags(url: str, name: str) -> list[str]:
    token = _token(url, None, None, f"repository:{name}:pull")
    r = httpx.get(f"{url}/v2/{name}/tags/list", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    if r.status_code == 404:
        return []
    r.raise_for_status()
    return sorted(r.json().get("tags") or [])


def _page_shows(url: str, handle: str, repo: str, text: str) -> bool:
    """B's server-rendered repository page (what a person sees) mentions `text`."""
    r = httpx.get(f"{url}/r/{handle}/{repo}", timeout=10)
    return r.status_code == 200 and f">{text}<" in r.text  # the tag as element text, not a substring


# Each of the four waits for a change straight in the PDS: together well inside B's 15 minutes
# of freshness, so B listing the PDS again cannot be what brought the change.
FRESH_WAIT = 60.0


def _within(seconds: float, check: Any) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise AssertionError(f"not within {seconds}s")
        time.sleep(0.05)
    return time.monotonic() - started


def test_push_through_a_appears_on_b_and_direct_pds_changes_arrive_by_the_consumer(
    stack: Stack, pds_network: TestNetwork, tmp_path: Path, valkey_url: str
) -> None:
    account = create_account(pds_network.pds_url, "twoav")
    password = create_app_password(account, "docker")
    name = f"{account.handle}/web"
    layout = Layout(tmp_path / "img")
    desc = layout.image()
    layout.tag(desc, "v1")
    ref = "v1"
    subprocess.run(
        [
            "skopeo", "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
            f"--dest-creds={account.handle}:{password}",
            f"oci:{layout.root}:{ref}", f"docker://{stack.a.url.removeprefix('http://')}/{name}:v1",
        ],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    _within(30.0, lambda: _tags(stack.b.url, name) == ["v1"])

    # B has listed the repository just now (fresh for 15 minutes): it does not ask the PDS again.
    digest = str(desc["digest"])
    model = SyncValkey.from_url(valkey_url)
    listed_at = model.hget(keys.sync(account.did), f"{keys.TAG}|at")
    assert listed_at is not None  # B's loader listed the tags once, for the first answer

    async def direct(delete: bool = False) -> None:
        writer = Writer(account)
        try:
            if delete:
                await writer.delete(keys.TAG, keys.tag_rkey("web", "direct"))
            else:
                record = tag_record(account.did, "web", "direct", digest)
                await writer.put(keys.TAG, keys.tag_rkey("web", "direct"), record)
        finally:
            await writer.aclose()

    asyncio.run(direct())
    _within(FRESH_WAIT, lambda: _tags(stack.b.url, name) == ["direct", "v1"])
    _within(FRESH_WAIT, lambda: _page_shows(stack.b.url, account.handle, "web", "direct"))

    asyncio.run(direct(delete=True))
    _within(FRESH_WAIT, lambda: _tags(stack.b.url, name) == ["v1"])
    _within(FRESH_WAIT, lambda: not _page_shows(stack.b.url, account.handle, "web", "direct"))
    # Nobody listed the PDS again in between: those two changes came through the consumer.
    assert model.hget(keys.sync(account.did), f"{keys.TAG}|at") == listed_at
    model.close()

    # A tag deleted through A disappears from B as well.
    token = _token(stack.a.url, account.handle, password, f"repository:{name}:pull,push,delete")
    r = httpx.delete(f"{stack.a.url}/v2/{name}/manifests/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 202, r.text
    _within(30.0, lambda: _tags(stack.b.url, name) == [])
    status = httpx.get(f"{stack.consumer.url}/status", timeout=5).json()
    assert status["sources"][0]["connected"] and status["events_total"] >= 4
    assert "Traceback" not in stack.consumer.logs()


def test_hold_records_arrive_from_the_holds_own_firehose(stack: Stack, valkey_url: str) -> None:
    """The push above made the pusher crew of the hold: the hold's commit reaches the model
    through the firehose source (signature and MST proof checked against the hold's did:web),
    and the hold, first named by the manifest, was listed once as a whole."""
    hold_did = httpx.get(f"{stack.hold.url}/.well-known/did.json", timeout=10).json()["id"]
    model = SyncValkey.from_url(valkey_url)
    try:
        _within(30.0, lambda: model.hlen(keys.crew(hold_did)) > 0)
        _within(30.0, lambda: model.hget(keys.sync(hold_did), f"{keys.CREW}|at") is not None)
    finally:
        model.close()
    status = httpx.get(f"{stack.consumer.url}/status", timeout=5).json()
    firehose = [s for s in status["sources"] if s["kind"] == "firehose"]
    assert firehose and firehose[0]["connected"] and firehose[0]["malformed"] == 0
    assert status["cursors"][firehose[0]["name"]]["applied"] is not None
