"""Identity and account events from the real PDS: drop identity, hide, restore."""

from __future__ import annotations

import json
from typing import Any

import pytest

from atcr.readmodel import keys, read
from atcr.readmodel.events import account_marker
from tests.integration.jetstream.conftest import ConsumerFactory
from tests.integration.jetstream.helpers import Writer, eventually

pytestmark = pytest.mark.integration


async def test_deactivation_hides_and_activation_restores(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any
) -> None:
    consumer = await make_consumer(ATCR_JETSTREAM_CURSOR_SECONDS="0.1")

    async def settled() -> bool:
        return consumer.sources[0].status.connected and not consumer.backfill.status.running

    await eventually(settled)
    await writer.push("acct", "v1")

    async def shown() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "acct")
        return "v1" in tags

    await eventually(shown)
    assert await valkey.zscore(keys.bucket(keys.CATALOG, f"{writer.did}/acct"), f"{writer.did}/acct") is not None

    await writer.xrpc.procedure("com.atproto.server.deactivateAccount", {})

    async def hidden() -> bool:
        # The marker is written first and the account's keys dropped in the next round trip:
        # wait for all three, not for the marker alone (reading between the two was a flake).
        tags, _ = await read.read_tags(valkey, writer.did, "acct")
        return (
            await valkey.get(account_marker(writer.did)) == b"deactivated"
            and tags == {}
            and await valkey.zscore(keys.bucket(keys.CATALOG, f"{writer.did}/acct"), f"{writer.did}/acct") is None
        )

    await eventually(hidden)

    await writer.xrpc.procedure("com.atproto.server.activateAccount")

    async def restored() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "acct")
        return "v1" in tags and await valkey.get(account_marker(writer.did)) is None

    await eventually(restored)


async def test_identity_event_drops_cached_identity(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any
) -> None:
    consumer = await make_consumer(ATCR_BACKFILL_ENABLED="false")

    async def up() -> bool:
        return consumer.sources[0].status.connected

    await eventually(up)
    old = writer.account.handle
    cached = json.dumps({"did": writer.did, "handle": old, "pds": writer.account.pds_url})
    await valkey.set(keys.identity(writer.did), cached)
    await valkey.set(keys.identity(old), cached)
    new = "re-" + old
    await writer.xrpc.procedure("com.atproto.identity.updateHandle", {"handle": new})

    async def dropped() -> bool:
        return await valkey.exists(keys.identity(writer.did), keys.identity(old)) == 0

    await eventually(dropped)
