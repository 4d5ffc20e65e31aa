"""The AppView's small Valkey stores (rate limits, login limits, upload sessions and their cap,
saved pull counts, the refresh lock) on a single node and on a real 3+3 Valkey Cluster.

On the cluster every former MULTI/EXEC is one Lua script on one slot (hash tags); these tests
show the stores behave the same on both, and that a command spanning slots is refused whole.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from valkey.exceptions import ValkeyClusterException

from appview import unsent_pulls
from appview.auth.loginlimit import LoginLimiter
from appview.errors import TooManyRequests
from appview.holds.pulls import PullCounter
from appview.oci.uploads import UploadStore
from appview.ratelimit import Limit, RateLimiter
from atcr.valkey import atomic, compare_and_delete, is_cluster, mget
from tests.support.valkey_cluster import ON_SINGLE_AND_CLUSTER

pytestmark = [pytest.mark.integration, ON_SINGLE_AND_CLUSTER]


async def test_rate_limit_is_shared_across_replicas(valkey: Any) -> None:
    a = RateLimiter(valkey, {"address": Limit(10, 60)})
    b = RateLimiter(valkey, {"address": Limit(10, 60)})
    # Many identities: their counters land on every shard of a cluster in one pipeline.
    for i in range(50):
        assert all(a.hit("address", f"10.0.0.{i}") is None for _ in range(6))
    await a.sync()
    assert all(b.hit("address", "10.0.0.7") is None for _ in range(4))
    await b.sync()
    await a.sync()
    assert a.hit("address", "10.0.0.7") is not None
    assert b.hit("address", "10.0.0.7") is not None
    assert a.hit("address", "10.0.0.8") is None


async def test_login_limit_counts_atomically_per_address(valkey: Any) -> None:
    limiter = LoginLimiter(valkey, per_account=3, per_address=100)
    reservations = await asyncio.gather(*[limiter.reserve("192.0.2.1", "alice") for _ in range(3)])
    assert all(r is not None for r in reservations)
    with pytest.raises(TooManyRequests):
        await limiter.reserve("192.0.2.1", "alice")
    assert await limiter.reserve("192.0.2.1", "bob") is not None  # another account, same address
    first = reservations[0]
    assert first is not None
    await first.release()
    assert await limiter.reserve("192.0.2.1", "alice") is not None
    assert not limiter._failing  # counted in Valkey, not in the per-process fallback


async def test_upload_sessions_and_their_cap(valkey: Any) -> None:
    store = UploadStore(valkey, max_open=3)
    sessions = await asyncio.gather(*[store.create("did:plc:u", "app", "did:web:h") for _ in range(3)])
    with pytest.raises(TooManyRequests):
        await store.create("did:plc:u", "app", "did:web:h")
    await store.create("did:plc:other", "app", "did:web:h")
    s = sessions[0]
    await store.save(s, b"tail-bytes")
    assert await store.tail(s) == b"tail-bytes"
    token = await store.lock(s.id)
    await store.unlock(s.id, token)
    await store.delete(s.id)
    assert await store.tail(s) == b""
    await store.create("did:plc:u", "app", "did:web:h")  # a deleted session frees its place


async def test_saved_pull_counts_are_taken_once(valkey: Any) -> None:
    class Down:
        async def notify_manifest(self, *a: Any, **k: Any) -> dict[str, Any]:
            raise ConnectionError("hold down")

    counter = PullCounter(Down())
    for _ in range(4):
        counter.count("did:web:hold.test", "did:plc:owner", "app", "sha256:" + "a" * 64)
    await counter.stop()
    assert await unsent_pulls.save(valkey, counter) == 4
    taken = await asyncio.gather(*[unsent_pulls.restore(valkey, PullCounter(Down())) for _ in range(4)])
    assert sorted(taken) == [0, 0, 0, 4]


async def test_lock_release_only_by_its_owner(valkey: Any) -> None:
    await valkey.set("av:pdssess-lock:did:plc:x", b"mine", px=10_000)
    assert not await compare_and_delete(valkey, "av:pdssess-lock:did:plc:x", b"theirs")
    assert await compare_and_delete(valkey, "av:pdssess-lock:did:plc:x", b"mine")
    assert await valkey.exists("av:pdssess-lock:did:plc:x") == 0


async def test_multi_key_helpers(valkey: Any) -> None:
    names = [f"av:id:did:plc:{i}" for i in range(40)]  # spread over every shard of a cluster
    for i, name in enumerate(names[::2]):
        await valkey.set(name, str(i))
    values = await mget(valkey, names)
    assert values[::2] == [str(i).encode() for i in range(20)] and values[1::2] == [None] * 20
    assert await valkey.delete(*names) == 20
    if is_cluster(valkey):
        with pytest.raises(ValkeyClusterException):
            await atomic(valkey, ("SET", "av:a", "1"), ("SET", "av:b", "2"))  # two slots: refused whole
        assert await valkey.exists("av:a", "av:b") == 0


async def test_near_cache_turns_itself_off_on_a_cluster(valkey: Any, caplog: pytest.LogCaptureFixture) -> None:
    from appview.cache import Loader
    from atcr.http import SafeHttpClient, SsrfPolicy
    from atcr.identity import IdentityResolver

    http = SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=5)
    try:
        with caplog.at_level(logging.INFO, logger="appview.cache"):
            loader = Loader(valkey, http, IdentityResolver(http, plc_url="http://127.0.0.1:9"))
        off = [r for r in caplog.records if "near cache off" in r.getMessage()]
        assert (loader.near is None, len(off)) == ((True, 1) if is_cluster(valkey) else (False, 0))
    finally:
        await http.aclose()


async def test_hold_usage_index_rebuild_pipelines_its_script(valkey: Any) -> None:
    from types import SimpleNamespace

    from hold.quota import UsageIndex

    users = [f"did:plc:user{i}" for i in range(12)]  # one hash tag each: spread over the shards
    records = [
        SimpleNamespace(value={"userDid": u, "digest": f"sha256:{i:064x}", "size": 10 * (i + 1),
                               "manifest": f"at://{u}/io.atcr.manifest/{i:064x}"})
        for i, u in enumerate(users * 2)
    ]

    class Repo:
        async def list_records(self, collection: str, *, limit: int, cursor: str | None, reverse: bool) -> Any:
            start = int(cursor or 0)
            more = start + limit < len(records)
            return SimpleNamespace(records=records[start : start + limit], cursor=str(start + limit) if more else None)

    index = UsageIndex(valkey, "did:web:hold.test")
    await valkey.script_flush()  # the pipeline must load what it runs
    assert await index.rebuild(Repo(), page=7) == 24  # type: ignore[arg-type]
    usage = await index.usage(users[3])
    assert (usage.unique_blobs, usage.total_size) == (2, 40 + 160)


async def test_cluster_client_rides_out_its_own_connection_resets(valkey_cluster: Any) -> None:
    """A connection error anywhere makes valkey-py's cluster client close every node's
    connections and forget its slot map (what a failover does to it): commands and pipelines
    in flight at that moment are retried, never failed (atcr/valkey.py `_connect_cluster`)."""
    from atcr.valkey import connect

    v: Any = connect(valkey_cluster.url)
    names = [f"av:id:did:plc:{i}" for i in range(6)]  # several shards
    for name in names:
        await v.set(name, name)

    async def reader() -> None:
        for _ in range(40):
            pipe = v.pipeline(transaction=False)
            for name in names:
                pipe.get(name)
            assert await pipe.execute() == [n.encode() for n in names]
            assert await v.get(names[0]) == names[0].encode()

    async def resetter() -> None:
        for _ in range(15):
            await v._reset_for_reinitialize()  # what the client itself does on a ConnectionError
            await asyncio.sleep(0.01)

    try:
        await asyncio.gather(*[reader() for _ in range(8)], resetter())
    finally:
        await v.delete(*names)
        await v.aclose()


async def test_cluster_pipeline_follows_moved_while_the_client_has_no_default_node(valkey_cluster: Any) -> None:
    """A slot moved since the client read the slot map (MOVED), while a concurrent reset has
    left the client without a default node: the pipeline still answers."""
    from valkey.cluster import key_slot

    from atcr.valkey import connect

    v: Any = connect(valkey_cluster.url)
    name = "av:id:did:plc:moved"
    try:
        await v.set(name, b"here")
        slot = key_slot(name.encode())
        source = next(n for n in valkey_cluster.primaries() if any(lo <= slot <= hi for lo, hi in valkey_cluster.slots_of(n)))
        target = next(n for n in valkey_cluster.primaries() if n.port != source.port)
        await asyncio.to_thread(valkey_cluster.migrate, source, target, slot, slot)
        v.nodes_manager.default_node = None  # what `_reset_for_reinitialize` leaves until the next refresh
        pipe = v.pipeline(transaction=False)
        pipe.get(name)
        assert await pipe.execute() == [b"here"]
    finally:
        await v.delete(name)
        await v.aclose()
