"""How the hold's answer to notifyManifest(push) becomes the answer to the manifest PUT."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from appview.errors import Denied, ManifestBlobUnknown
from appview.holds.client import HoldError
from appview.oci.registry import Registry, RepoRef

pytestmark = pytest.mark.unit
HOLD = "did:web:hold.example"


class Holds:
    def __init__(self, refusal: HoldError | None) -> None:
        self.refusal = refusal
        self.calls = 0

    async def notify_manifest(self, hold_did: str, user_did: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.refusal is not None:
            raise self.refusal
        return {}


def admit(refusal: HoldError | None) -> None:
    registry = Registry.__new__(Registry)
    registry.holds = cast(Any, Holds(refusal))
    registry._push_body = lambda *args: {}  # type: ignore[method-assign]
    ref = cast(RepoRef, object())
    asyncio.run(registry._admit_manifest(ref, "did:plc:user", HOLD, cast(Any, None), "v1", "rkey"))


def test_a_layer_gone_from_storage_is_manifest_blob_unknown_and_nothing_is_written() -> None:
    with pytest.raises(ManifestBlobUnknown):
        admit(HoldError(400, "LayerNotStored", "sha256:abc is not in this hold's storage"))


def test_quota_is_denied_naming_the_hold() -> None:
    with pytest.raises(Denied, match="quota exceeded on"):
        admit(HoldError(403, "QuotaExceeded", "over 3 MB"))


def test_an_unknown_refusal_from_an_older_hold_does_not_lose_the_push() -> None:
    admit(HoldError(400, "InvalidRequest", "unknown field manifestUri"))
    admit(None)



def test_a_push_head_asks_the_hold_afresh_while_other_lookups_use_the_remembered_location() -> None:
    from atcr.ttlcache import TtlCache

    registry = Registry.__new__(Registry)
    registry._locations = TtlCache(ttl=30.0)
    asked: list[bool] = []
    answer: list[tuple[str, int] | None] = [(HOLD, 10)]

    async def locate(ref: Any, digest: str, *, user_did: Any, prefer: Any, only: bool = False) -> Any:  # noqa: ARG001
        asked.append(only)
        return answer[0]

    registry._locate = locate  # type: ignore[method-assign]
    ref = RepoRef.__new__(RepoRef)
    object.__setattr__(ref, "did", "did:plc:user")
    object.__setattr__(ref, "repository", "app")
    digest = "sha256:" + "a" * 64

    async def run() -> None:
        assert await registry.locate_blob(ref, digest, user_did="did:plc:user", prefer=HOLD) == (HOLD, 10)
        assert await registry.locate_blob(ref, digest, user_did="did:plc:user", prefer=HOLD) == (HOLD, 10)
        assert asked == [False]  # the pull's second question came from memory
        # A manifest's reference check may use what the push's own HEADs just learned.
        assert await registry.locate_blob(ref, digest, user_did="did:plc:user", prefer=HOLD, only=True) == (HOLD, 10)
        assert asked == [False]
        answer[0] = None  # the hold's GC deleted the blob
        found = await registry.locate_blob(ref, digest, user_did="did:plc:user", prefer=HOLD, only=True, fresh=True)
        assert found is None and asked == [False, True]  # the HEAD before an upload asked the hold

    asyncio.run(run())
