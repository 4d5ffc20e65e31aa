from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.hold.harness import Hold, running_hold, s3_env

DRIVERS = ["filesystem", "s3"]

MakeHold = Callable[..., AbstractAsyncContextManager[Hold]]


@pytest.fixture
def make_hold(tmp_path: Path, valkey_url: str, request: pytest.FixtureRequest) -> MakeHold:
    """`async with make_hold(driver, **env) as hold:` a running hold with that storage driver."""
    counter = iter(range(1000))

    @asynccontextmanager
    async def factory(driver: str = "filesystem", **env: Any) -> AsyncIterator[Hold]:
        s3 = None
        if driver == "s3":
            endpoint = request.getfixturevalue("s3_endpoint")
            bucket = request.getfixturevalue("s3_bucket")
            s3 = s3_env(endpoint.url, bucket)
        workdir = tmp_path / f"hold{next(counter)}"
        async with running_hold(
            workdir, valkey_url, driver=driver, s3=s3, env={k.upper(): str(v) for k, v in env.items()}
        ) as hold:
            hold.extra["s3"] = s3
            yield hold

    return factory


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)
