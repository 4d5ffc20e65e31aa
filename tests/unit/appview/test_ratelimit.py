from __future__ import annotations

import fakeredis
import pytest
from valkey.exceptions import ConnectionError as ValkeyConnectionError

from appview.ratelimit import Limit, RateLimiter

pytestmark = pytest.mark.unit


async def test_limit_per_identity_and_shared_across_replicas() -> None:
    server = fakeredis.FakeServer()
    a = RateLimiter(fakeredis.FakeAsyncRedis(server=server), {"address": Limit(10, 60)})
    b = RateLimiter(fakeredis.FakeAsyncRedis(server=server), {"address": Limit(10, 60)})
    assert all(a.hit("address", "1.2.3.4") is None for _ in range(6))
    await a.sync()
    assert all(b.hit("address", "1.2.3.4") is None for _ in range(4))
    await b.sync()
    await a.sync()
    wait = a.hit("address", "1.2.3.4")
    assert wait is not None and 1 <= wait <= 60
    assert b.hit("address", "1.2.3.4") is not None
    assert a.hit("address", "5.6.7.8") is None


async def test_zero_disables_and_unknown_kind_passes() -> None:
    limiter = RateLimiter(fakeredis.FakeAsyncRedis(), {"address": Limit(0, 60)})
    assert all(limiter.hit("address", "x") is None for _ in range(1000))
    assert limiter.hit("other", "x") is None


async def test_fails_open_but_keeps_local_limit_when_valkey_down() -> None:
    class Down:
        def pipeline(self, transaction: bool = False):  # type: ignore[no-untyped-def]
            raise ValkeyConnectionError("down")

    limiter = RateLimiter(Down(), {"user": Limit(5, 60)})  # type: ignore[arg-type]
    for _ in range(5):
        assert limiter.hit("user", "did:plc:a") is None
    await limiter.sync()
    assert limiter.hit("user", "did:plc:a") is not None


async def test_over_counts_nothing() -> None:
    limiter = RateLimiter(fakeredis.FakeAsyncRedis(), {"login": Limit(2, 600)})
    assert limiter.over("login", "a") is None
    limiter.hit("login", "a")
    limiter.hit("login", "a")
    assert limiter.over("login", "a") is not None
