"""The near cache against a real Valkey: other replicas' writes, flushes and lost connections.

Each loader here stands for one AppView process. Their near caches keep answers for 30 s, far
longer than any assertion waits, so an answer that changes in time can only have changed
because Valkey's invalidation message reached the process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from appview.cache import Loader
from atcr.http import SafeHttpClient
from atcr.readmodel import keys
from atcr.valkey import connect
from atcr.xrpc import BearerAuth, XrpcClient
from tests.integration.readmodel.conftest import ProxiedResolver, manifest_bytes, now, push
from tests.support.counting_proxy import CountingProxy
from tests.support.pdsnet import Account, TestNetwork

pytestmark = pytest.mark.integration

LONG = 30.0
# How long a test waits for something to happen: only bounds a hang, and stays below LONG so
# that an answer changing within it cannot be the near cache's own expiry.
WITHIN = 10.0


async def started(make_loader: Callable[..., Loader]) -> Loader:
    loader = make_loader(near_ttl=LONG)
    loader.start()
    assert loader.near is not None
    assert await loader.near.wait_ready(WITHIN), "the near cache never subscribed to invalidations"
    return loader


async def retag(http: SafeHttpClient, acct: Account, writer: Loader, repository: str, tag: str, digest: str) -> None:
    """Move a tag in the PDS and write it through one replica, as a push through it would."""
    client = XrpcClient(http, acct.pds_url, BearerAuth(acct.access_jwt))
    rkey = keys.tag_rkey(repository, tag)
    record = {
        "repository": repository,
        "tag": tag,
        "manifest": f"at://{acct.did}/{keys.MANIFEST}/{digest[7:]}",
        "createdAt": now(),
    }
    out = await client.put_record(acct.did, keys.TAG, rkey, record)
    await writer.wrote_record(acct.did, keys.TAG, rkey, record, cid=out["cid"], rev=out.get("commit", {}).get("rev"))


async def valkey_reads(valkey: Any) -> int:
    """Read commands Valkey has answered since its statistics were last reset."""
    stats = await valkey.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k.split("_", 1)[-1] in ("get", "hget", "hvals", "hmget"))


async def digest_of(loader: Loader, did: str, repository: str, tag: str) -> str | None:
    entry = await loader.tag(did, repository, tag)
    return entry.digest if entry else None


async def until(loader: Loader, did: str, repository: str, tag: str, want: str | None, within: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await digest_of(loader, did, repository, tag) == want:
            return time.monotonic() - start
        await asyncio.sleep(0.005)
    raise AssertionError(f"{tag} still not {want} after {within}s")


async def from_memory(
    valkey: Any, proxy: CountingProxy | None, reads: Callable[[], Awaitable[None]], within: float = WITHIN
) -> None:
    """Wait until `reads` are answered from the process's memory: no Valkey read, no PDS call.

    A replica's first reads load Valkey, and those writes' invalidations drop what it kept
    when they arrive, whenever that is. So: read once more (to fill the memory), then read
    again with Valkey's statistics reset; repeat until a whole round touched neither.
    """
    deadline = time.monotonic() + within
    while True:
        await reads()
        if proxy is not None:
            proxy.reset()
        await valkey.config_resetstat()
        await reads()
        if await valkey_reads(valkey) == 0 and (proxy is None or sum(proxy.calls.values()) == 0):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"reads still reach Valkey or the PDS: {await valkey.info('commandstats')}")
        await asyncio.sleep(0.02)


async def test_a_tag_moved_by_another_replica_is_seen_at_once(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    did = pds_account.did
    first = await push(http, pds_account, "near", "v1", manifest_bytes())
    second = await push(http, pds_account, "near", None, manifest_bytes())
    a, b = await started(make_loader), await started(make_loader)

    assert await digest_of(a, did, "near", "v1") == first

    async def fifty_reads() -> None:
        for _ in range(50):  # served from a's memory: no PDS call, no Valkey read, the same answer
            assert await digest_of(a, did, "near", "v1") == first

    await from_memory(valkey, proxy, fifty_reads)

    # a's memory would keep the old answer for LONG (30 s): seeing the new one within WITHIN
    # (10 s) can only be the invalidation's doing, however slow the machine.
    await retag(http, pds_account, b, "near", "v1", second)
    await until(a, did, "near", "v1", second, within=WITHIN)
    # The writing replica reads its own write with no wait at all.
    assert await digest_of(b, did, "near", "v1") == second
    await retag(http, pds_account, b, "near", "v1", first)
    assert await digest_of(b, did, "near", "v1") == first


async def test_manifest_bytes_and_identity_come_from_memory_until_changed(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader], proxy: CountingProxy
) -> None:
    raw = manifest_bytes()
    digest = await push(http, pds_account, "near-m", "v1", raw)
    a = await started(make_loader)
    ident = await a.identity(pds_account.handle)
    entry = await a.manifest(pds_account.did, "near-m", digest)
    assert entry is not None and entry.raw == raw

    async def twenty_reads() -> None:
        for _ in range(20):  # from memory: Valkey is not asked again
            assert (await a.identity(pds_account.handle.upper())).did == ident.did  # same scope, case-folded
            again = await a.manifest(pds_account.did, "near-m", digest)
            assert again is not None and again.raw == raw

    await from_memory(valkey, None, twenty_reads)

    # Once the invalidation arrives, the next read goes back to Valkey (gone) and the PDS; until
    # then reads come from memory and ask nobody. The memory would keep it for LONG (30 s).
    proxy.reset()
    await valkey.delete(keys.identity(pds_account.handle.lower()))
    deadline = time.monotonic() + WITHIN
    while proxy.count("com.atproto.identity.resolveHandle") == 0:
        assert time.monotonic() < deadline, "the deleted identity is still served from memory"
        assert (await a.identity(pds_account.handle)).did == ident.did
        await asyncio.sleep(0.005)
    assert proxy.count("com.atproto.identity.resolveHandle") == 1
    again = await a.manifest(pds_account.did, "near-m", digest)
    assert again is not None and again.raw == raw


async def test_a_flush_empties_every_process_cache(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader]
) -> None:
    did = pds_account.did
    first = await push(http, pds_account, "near-f", "v1", manifest_bytes())
    second = await push(http, pds_account, "near-f", None, manifest_bytes())
    a = await started(make_loader)
    assert await digest_of(a, did, "near-f", "v1") == first

    # The tag moves in the PDS only (no write-through, no Jetstream); an operator flushes Valkey.
    client = XrpcClient(http, pds_account.pds_url, BearerAuth(pds_account.access_jwt))
    rkey = keys.tag_rkey("near-f", "v1")
    record = {"repository": "near-f", "tag": "v1", "manifest": f"at://{did}/{keys.MANIFEST}/{second[7:]}",
              "createdAt": now()}
    await client.put_record(did, keys.TAG, rkey, record)
    await valkey.flushdb()
    await until(a, did, "near-f", "v1", second, within=WITHIN)


async def test_a_lost_invalidation_connection_drops_what_it_might_have_missed(
    valkey: Any, http: SafeHttpClient, pds_account: Account, make_loader: Callable[..., Loader]
) -> None:
    did = pds_account.did
    first = await push(http, pds_account, "near-k", "v1", manifest_bytes())
    second = await push(http, pds_account, "near-k", None, manifest_bytes())
    a, b = await started(make_loader), await started(make_loader)
    assert a.near is not None
    assert await digest_of(a, did, "near-k", "v1") == first
    before = a.near.connections

    # Replica a's invalidation connection dies; the write's message goes nowhere.
    await valkey.execute_command("CLIENT", "KILL", "ID", str(a.near.client_id))
    await retag(http, pds_account, b, "near-k", "v1", second)
    deadline = time.monotonic() + WITHIN
    while a.near.connections == before and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert a.near.connections > before, "the near cache did not reconnect"
    assert await digest_of(a, did, "near-k", "v1") == second


async def test_a_valkey_that_refuses_tracking_only_turns_the_near_cache_off(
    valkey: Any, valkey_url: str, http: SafeHttpClient, pds_account: Account, pds_network: TestNetwork,
    proxy: CountingProxy, caplog: pytest.LogCaptureFixture,
) -> None:
    user = f"no-tracking-{pds_account.did[-6:]}"
    await valkey.execute_command("ACL", "SETUSER", user, "on", ">pw", "~*", "&*", "+@all", "-client")
    scheme, rest = valkey_url.split("://", 1)
    limited = connect(f"{scheme}://{user}:pw@{rest}")
    digest = await push(http, pds_account, "near-acl", "v1", manifest_bytes())
    loader = Loader(limited, http, ProxiedResolver(http, pds_network, proxy.url), near_ttl=LONG)
    try:
        with caplog.at_level(logging.WARNING, logger="appview.cache.near"):
            loader.start()
            assert loader.near is not None
            assert not await loader.near.wait_ready(1.0)
            assert await digest_of(loader, pds_account.did, "near-acl", "v1") == digest

            def refused() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "refused client tracking" in r.getMessage()]

            deadline = time.monotonic() + WITHIN
            while not refused():  # the first attempt's refusal, however late it comes
                assert time.monotonic() < deadline, "no warning that Valkey refused client tracking"
                await asyncio.sleep(0.01)
            assert not loader.near.ready
        assert len(refused()) == 1
    finally:
        await loader.aclose()
        await limited.aclose()
        await valkey.execute_command("ACL", "DELUSER", user)
