"""`atcr jetstream` killed (SIGKILL) while 500 records are written; restarted; nothing lost or doubled."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from atcr.readmodel import keys
from tests.integration.jetstream.helpers import Writer, eventually, manifest_record, new_digest, tag_record
from tests.support.jetstream_server import JetstreamServer
from tests.support.pdsnet import TestNetwork, create_account
from tests.support.services import free_port
from tests.support.stack import Service, network_env, start_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ACCOUNTS = 5
PER_ACCOUNT = 50  # manifests; as many tags: 5 * 100 = 500 records


def _start(tmp_path: Path, env: dict[str, str], port: int) -> Service:
    return start_service("jetstream", "jetstream", env, tmp_path, f"http://127.0.0.1:{port}", timeout=30)


def _status(port: int) -> dict[str, Any]:
    return httpx.get(f"http://127.0.0.1:{port}/status", timeout=5, trust_env=False).json()


async def test_kill_while_writing_then_restart_keeps_all_500_once(
    tmp_path: Path, valkey: Any, valkey_url: str, pds_network: TestNetwork, jetstream_server: JetstreamServer
) -> None:
    port = free_port()
    env = {
        **network_env(valkey_url, pds_network.plc_url, pds_network.pds_url),
        "JETSTREAM_URL": jetstream_server.url,
        "ATCR_RELAY_ENDPOINT": jetstream_server.relay_url,
        "ATCR_JETSTREAM_STATUS_ADDR": f"127.0.0.1:{port}",
        "ATCR_BACKFILL_ENABLED": "false",  # only the cursor may bring back what the kill interrupted
        "ATCR_JETSTREAM_CURSOR_EVERY": "50",
        "ATCR_JETSTREAM_CURSOR_SECONDS": "0.5",
    }
    svc = _start(tmp_path, env, port)
    writers = [Writer(create_account(pds_network.pds_url, f"crash{i}")) for i in range(ACCOUNTS)]
    try:
        deadline = time.monotonic() + 30
        while not _status(port)["sources"][0]["connected"]:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)

        # The last records of each account wait for the kill: however slow the consumer is next
        # to the writers on a busy machine, the kill lands while records are still being written.
        killed = asyncio.Event()

        async def write(w: Writer) -> None:
            for i in range(PER_ACCOUNT):
                if i == PER_ACCOUNT - 5:
                    await killed.wait()
                digest = new_digest()
                tag = digest[7:19]
                await w.put(keys.MANIFEST, keys.manifest_rkey(digest), manifest_record("crash", digest))
                await w.put(keys.TAG, keys.tag_rkey("crash", tag), tag_record(w.did, "crash", tag, digest))

        writing = asyncio.gather(*(write(w) for w in writers))
        deadline = time.monotonic() + 60
        while _status(port)["events_total"] < 100:
            assert time.monotonic() < deadline, "the consumer applied fewer than 100 events in 60 s"
            await asyncio.sleep(0.02)
        svc.proc.kill()  # SIGKILL: no shutdown, no final cursor save
        svc.proc.wait(10)
        assert not writing.done(), "the kill should land while records are still being written"
        killed.set()
        await writing
        svc.stop()
        first_log = svc.logs()

        svc = _start(tmp_path, env, port)

        async def complete() -> bool:
            for w in writers:
                if await valkey.hlen(keys.tags(w.did, "crash")) < PER_ACCOUNT:
                    return False
                if await valkey.hlen(keys.manifests(w.did, "crash")) < PER_ACCOUNT:
                    return False
            return True

        await eventually(complete, timeout=60, interval=0.1)
        for w in writers:
            assert await valkey.hlen(keys.tags(w.did, "crash")) == PER_ACCOUNT
            assert await valkey.hlen(keys.manifests(w.did, "crash")) == PER_ACCOUNT
            assert await valkey.hlen(keys.records(w.did, keys.TAG)) == PER_ACCOUNT
            assert await valkey.hlen(keys.records(w.did, keys.MANIFEST)) == PER_ACCOUNT
            assert await valkey.zcard(keys.repositories(w.did)) == 1
            assert await valkey.zscore(keys.bucket(keys.CATALOG, f"{w.did}/crash"), f"{w.did}/crash") is not None
        status = _status(port)
        assert status["sources"][0]["connected"]
        assert "Traceback" not in first_log + svc.logs()
    finally:
        svc.stop()
        for w in writers:
            await w.aclose()
