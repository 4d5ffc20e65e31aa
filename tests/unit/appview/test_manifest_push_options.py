"""Manifest PUT options from distribution-spec main: `?tag=` (several tags at once, `OCI-Tag`
headers) and sparse indexes (children the repository lacks), with fakes only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar import Litestar, Response, get
from litestar.testing import TestClient

from appview.errors import DigestInvalid, ManifestBlobUnknown, ManifestInvalid
from appview.oci.registry import Registry, RepoRef, push_target, refused_references
from appview.oci.routes import RepeatedHeaders
from appview.settings import AppViewSettings
from atcr.oci import parse_manifest
from atcr.settings import load

pytestmark = pytest.mark.unit

OWNER, HOLD = "did:plc:owner", "did:web:hold.example.com"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
PRESENT, ABSENT, CONFIG = ("sha256:" + c * 64 for c in "abc")
SHA512 = "sha512:" + "d" * 128


# --- ?tag= ---------------------------------------------------------------------------------------


def test_push_by_digest_with_tags_names_the_digest_and_each_tag_once() -> None:
    digest, tags = push_target(PRESENT, ["v1", "latest", "v1"])
    assert str(digest) == PRESENT
    assert tags == ["v1", "latest"]


def test_push_by_sha512_digest_keeps_the_algorithm() -> None:
    digest, tags = push_target(SHA512, ["v1"])
    assert digest is not None and digest.algorithm == "sha512" and str(digest) == SHA512
    assert tags == ["v1"]


def test_push_by_tag_puts_the_reference_tag_first() -> None:
    digest, tags = push_target("v2", ["latest", "v2"])
    assert digest is None
    assert tags == ["v2", "latest"]


@pytest.mark.parametrize("bad", ["", "-dash", ".dot", "a" * 129, "sp ace", "tag/slash", "t:colon"])
def test_an_invalid_query_tag_refuses_the_push_before_anything_is_written(bad: str) -> None:
    with pytest.raises(ManifestInvalid) as info:
        push_target(PRESENT, ["ok", bad])
    assert info.value.code == "MANIFEST_INVALID" and info.value.status == 400
    assert info.value.detail == {"tag": bad[:200]}


def test_invalid_references_keep_their_errors() -> None:
    with pytest.raises(DigestInvalid):
        push_target("sha256:baddigeststring", ["ok"])
    with pytest.raises(ManifestInvalid):
        push_target(".INVALID_MANIFEST_NAME")


def test_oci_tag_is_one_header_line_per_tag() -> None:
    @get("/")
    async def handler() -> Response[Any]:
        return RepeatedHeaders(b"", status_code=201, headers={"Docker-Content-Digest": PRESENT},
                               repeated=[("OCI-Tag", "a"), ("OCI-Tag", "b"), ("OCI-Tag", "c")])

    with TestClient(Litestar([handler])) as client:
        r = client.get("/")
    assert r.status_code == 201
    assert r.headers.get_list("OCI-Tag") == ["a", "b", "c"]
    assert [k for k, _ in r.headers.raw].count(b"oci-tag") == 3
    assert r.headers["Docker-Content-Digest"] == PRESENT


# --- sparse indexes ------------------------------------------------------------------------------


def test_refused_references() -> None:
    assert refused_references([], [ABSENT], sparse_indexes=True) == []
    assert refused_references([], [ABSENT], sparse_indexes=False) == [ABSENT]
    assert refused_references([CONFIG], [ABSENT], sparse_indexes=True) == [CONFIG]
    assert refused_references([CONFIG, CONFIG], [ABSENT, PRESENT], sparse_indexes=False) == [PRESENT, ABSENT, CONFIG]


def test_the_setting_is_on_by_default_and_can_be_turned_off() -> None:
    hold = "did:web:127.0.0.1%3A8080"
    assert load(AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": hold}).sparse_indexes is True
    for off in ("0", "false"):
        assert load(AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": hold, "ATCR_SPARSE_INDEXES": off}).sparse_indexes is False


class Model:
    """The reads `_check_references` makes: which manifests the repository has."""

    def __init__(self, present: set[str]) -> None:
        self.present = present
        self.asked: list[str] = []

    async def manifest(self, did: str, repository: str, digest: str) -> Any:
        self.asked.append(digest)
        return object() if digest in self.present else None

    async def manifests(self, did: str, repository: str) -> list[Any]:
        return []

    async def profile(self, did: str) -> dict[str, Any] | None:
        return None

    async def blob_hint(self, did: str, digest: str) -> tuple[str, int] | None:
        return None


class Holds:
    def __init__(self, blobs: set[str]) -> None:
        self.blobs = blobs

    def reachable(self, hold_did: str) -> bool:
        return True

    async def stat_blob(self, hold_did: str, digest: str, *, user_did: str | None = None) -> int | None:
        return 10 if digest in self.blobs else None


def registry(present: set[str], blobs: set[str], *, sparse: bool) -> tuple[Registry, Model]:
    model = Model(present)
    reg = Registry(model, Holds(blobs), None, None, default_hold_did=HOLD, sparse_indexes=sparse)  # type: ignore[arg-type]
    return reg, model


REF = RepoRef(name="owner.test/app", did=OWNER, handle="owner.test", repository="app", pds="https://pds.test")


def index(media_type: str = OCI_INDEX, child_type: str = OCI_MANIFEST) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": [
        {"mediaType": child_type, "digest": PRESENT, "size": 500, "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": child_type, "digest": ABSENT, "size": 1024, "platform": {"architecture": "arm64", "os": "linux"}},
    ]}).encode()


@pytest.mark.parametrize(("media_type", "child_type"), [(OCI_INDEX, OCI_MANIFEST), (DOCKER_LIST, DOCKER_MANIFEST)])
async def test_sparse_index_is_accepted_when_on_and_every_child_is_still_looked_up(
    media_type: str, child_type: str
) -> None:
    reg, model = registry({PRESENT}, set(), sparse=True)
    await reg._check_references(REF, OWNER, parse_manifest(index(media_type, child_type), media_type), HOLD)
    assert sorted(model.asked) == sorted([PRESENT, ABSENT])


async def test_sparse_index_is_refused_when_off() -> None:
    reg, _ = registry({PRESENT}, set(), sparse=False)
    with pytest.raises(ManifestBlobUnknown) as info:
        await reg._check_references(REF, OWNER, parse_manifest(index(), OCI_INDEX), HOLD)
    assert info.value.detail == {"digests": [ABSENT]}


async def test_a_complete_index_is_accepted_either_way() -> None:
    for sparse in (True, False):
        reg, _ = registry({PRESENT, ABSENT}, set(), sparse=sparse)
        await reg._check_references(REF, OWNER, parse_manifest(index(), OCI_INDEX), HOLD)


async def test_missing_blobs_are_refused_whatever_the_setting() -> None:
    image = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": CONFIG,
                                   "size": 10}}).encode()
    for sparse in (True, False):
        reg, _ = registry(set(), set(), sparse=sparse)
        with pytest.raises(ManifestBlobUnknown) as info:
            await reg._check_references(REF, OWNER, parse_manifest(image, OCI_MANIFEST), HOLD)
        assert info.value.detail == {"digests": [CONFIG]}
