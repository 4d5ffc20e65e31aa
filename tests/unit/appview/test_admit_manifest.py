"""How the hold's answer to notifyManifest(push) becomes the answer to the manifest PUT."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from appview.errors import Denied, ManifestBlobUnknown, Unavailable
from appview.holds.client import HoldError, HoldUnavailable
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


class Model:
    def __init__(self) -> None:
        self.forgotten: list[tuple[str, list[str]]] = []

    async def forget_blob_hints(self, did: str, digests: list[str]) -> None:
        self.forgotten.append((did, list(digests)))


LAYER = "sha256:" + "a" * 64
CONFIG = "sha256:" + "c" * 64
MANIFEST = (
    b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":'
    b'"application/vnd.oci.image.config.v1+json","digest":"' + CONFIG.encode() + b'","size":2},"layers":[{"mediaType":'
    b'"application/vnd.oci.image.layer.v1.tar","digest":"' + LAYER.encode() + b'","size":3}]}'
)


def setup(refusal: HoldError | None) -> tuple[Registry, Model, RepoRef, Any]:
    from atcr.oci import parse_manifest
    from atcr.ttlcache import TtlCache

    registry = Registry.__new__(Registry)
    registry.holds = cast(Any, Holds(refusal))
    model = Model()
    registry.model = cast(Any, model)
    registry._locations = TtlCache(ttl=30.0)
    registry._push_body = lambda *args: {}  # type: ignore[method-assign]
    ref = RepoRef.__new__(RepoRef)
    object.__setattr__(ref, "did", "did:plc:user")
    object.__setattr__(ref, "repository", "app")
    manifest = parse_manifest(MANIFEST, "application/vnd.oci.image.manifest.v1+json", "sha256")
    return registry, model, ref, manifest


def admit(refusal: HoldError | None) -> None:
    registry, _, ref, manifest = setup(refusal)
    asyncio.run(registry._admit_manifest(ref, "did:plc:user", HOLD, manifest, "v1", "rkey"))


def test_a_layer_gone_from_storage_is_manifest_blob_unknown_and_nothing_is_written() -> None:
    with pytest.raises(ManifestBlobUnknown):
        admit(HoldError(400, "LayerNotStored", "sha256:abc is not in this hold's storage"))


def test_a_layer_gone_from_storage_drops_the_blob_hints_of_the_manifest() -> None:
    registry, model, ref, manifest = setup(HoldError(400, "LayerNotStored", "gone"))
    registry._locations.put(("did:plc:user", "app", LAYER, "did:plc:user"), (HOLD, 3))
    with pytest.raises(ManifestBlobUnknown):
        asyncio.run(registry._admit_manifest(ref, "did:plc:user", HOLD, manifest, "v1", "rkey"))
    assert model.forgotten == [("did:plc:user", [CONFIG, LAYER])]
    assert registry._locations.get(("did:plc:user", "app", LAYER, "did:plc:user")) is None


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
    hints: dict[str, tuple[str, int]] = {}

    class Hints:
        async def blob_hint(self, did: str, digest: str) -> tuple[str, int] | None:
            return hints.get(digest)

    registry.model = cast(Any, Hints())
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
        # ... unless a manifest of the owner named the blob on the push hold (a blob hint).
        hints[digest] = (HOLD, 10)
        found = await registry.locate_blob(ref, digest, user_did="did:plc:user", prefer=HOLD, only=True, fresh=True)
        assert found == (HOLD, 10) and asked == [False, True]
        hints[digest] = ("did:web:other.example", 10)  # a hint for another hold is no answer
        registry._locations = TtlCache(ttl=30.0)
        found = await registry.locate_blob(ref, digest, user_did="did:plc:user", prefer=HOLD, only=True, fresh=True)
        assert found is None and asked == [False, True, True]

    asyncio.run(run())


@pytest.mark.parametrize(
    ("refusal", "says"),
    [
        (HoldUnavailable(503, "PdsUnavailable", "your PDS is unreachable (service token): refused"), "your PDS"),
        (HoldUnavailable(503, "HoldUnavailable", "did not answer"), "your hold hold.example"),
    ],
    ids=["pds-down", "hold-down"],
)
def test_an_unreachable_side_is_named_503_with_nothing_written(refusal: HoldError, says: str) -> None:
    """notifyManifest needs a token the user's PDS issues: with the PDS down the push says so,
    not that the hold did not answer (the hold was never asked)."""
    with pytest.raises(Unavailable) as caught:
        admit(refusal)
    assert caught.value.message.startswith(says), caught.value.message
    assert "nothing was written" in caught.value.message
