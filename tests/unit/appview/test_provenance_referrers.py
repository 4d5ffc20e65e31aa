"""appview/provenance: the proof artifact, its storage by digest, and which listings show it."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any

import fakeredis
import pytest

from appview.oci.registry import RepoRef
from appview.provenance.oci import proof_blob, proof_manifest, proof_referrers
from appview.provenance.service import EMPTY_DIGEST, ProvenanceService, Subject, artifact_manifest
from atcr.oci import OCI_MANIFEST
from atcr.provenance import CAR_MEDIA_TYPE, SIGNATURE_ARTIFACT_TYPE, RecordProof
from atcr.readmodel.keys import MANIFEST

pytestmark = pytest.mark.unit

DID = "did:plc:alice000000000000000000"
DIGEST = "sha256:" + "ab" * 32
REPO = RepoRef(name=f"{DID}/app", did=DID, handle="alice.test", repository="app", pds="http://pds.invalid")
CAR = b"\x01car bytes"


class Entry:
    digest = DIGEST
    media_type = OCI_MANIFEST
    raw = b"{}" * 10


class FakeRegistry:
    async def get_manifest(self, ref: RepoRef, reference: str) -> Entry:
        return Entry()


class FakeVerifier:
    def __init__(self) -> None:
        self.calls = 0

    async def manifest_proof(self, pds: str, did: str, repository: str, digest: str) -> RecordProof:
        self.calls += 1
        return RecordProof(
            did=did, collection=MANIFEST, rkey=digest[7:], rev="3n3ziuxowvk2q", commit_cid="bafycommit",
            signed_bytes=b"", sig=b"", record_cid="bafyrecord", record={"digest": digest}, car=CAR,
        )


def service(mode: str = "all") -> tuple[ProvenanceService, FakeVerifier]:
    svc = ProvenanceService.__new__(ProvenanceService)
    svc._v = fakeredis.FakeAsyncValkey()
    svc.referrers = mode
    fake = FakeVerifier()
    svc.verifier = svc.page_verifier = fake  # type: ignore[assignment]
    return svc, fake


def test_artifact_manifest_shape() -> None:
    raw = artifact_manifest(Subject(DIGEST, OCI_MANIFEST, 20), CAR, did=DID, uri="at://x", rev="3n3ziuxowvk2q", commit="c")
    doc = json.loads(raw)
    assert doc["artifactType"] == SIGNATURE_ARTIFACT_TYPE and doc["mediaType"] == OCI_MANIFEST
    assert doc["subject"] == {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 20}
    assert doc["config"]["digest"] == EMPTY_DIGEST == "sha256:" + hashlib.sha256(b"{}").hexdigest()
    (layer,) = doc["layers"]
    assert layer["mediaType"] == CAR_MEDIA_TYPE and layer["digest"] == "sha256:" + hashlib.sha256(CAR).hexdigest()
    assert doc["annotations"]["io.atcr.provenance.did"] == DID
    assert doc["annotations"]["org.opencontainers.image.created"].startswith("2026-")


@pytest.mark.parametrize(
    ("mode", "artifact_type", "listed"),
    [
        ("all", None, True),
        ("all", SIGNATURE_ARTIFACT_TYPE, True),
        ("all", "application/vnd.example.sig", False),
        ("filtered", None, False),
        ("filtered", SIGNATURE_ARTIFACT_TYPE, True),
        ("off", SIGNATURE_ARTIFACT_TYPE, False),
    ],
)
def test_which_listings_show_the_proof(mode: str, artifact_type: str | None, listed: bool) -> None:
    svc, _ = service(mode)
    found = asyncio.run(proof_referrers(svc, FakeRegistry(), REPO, DIGEST, artifact_type))  # type: ignore[arg-type]
    assert bool(found) is listed


def test_listed_proof_is_served_by_digest_and_cached() -> None:
    svc, fake = service()

    async def run() -> tuple[list[dict[str, Any]], Any, Any, Any, Any]:
        (desc,) = await proof_referrers(svc, FakeRegistry(), REPO, DIGEST, None)  # type: ignore[arg-type]
        again = await proof_referrers(svc, FakeRegistry(), REPO, DIGEST, None)  # type: ignore[arg-type]
        manifest = await proof_manifest(svc, REPO, desc["digest"], head=False)
        layer = json.loads(manifest.content)["layers"][0]  # type: ignore[union-attr]
        blob = await proof_blob(svc, REPO, layer["digest"], head=False)
        config = await proof_blob(svc, REPO, EMPTY_DIGEST, head=False)
        unknown = await proof_manifest(svc, REPO, "sha256:" + "0" * 64, head=False)
        return [desc, *again], manifest, blob, config, unknown

    descs, manifest, blob, config, unknown = asyncio.run(run())
    assert descs[0] == descs[1] and fake.calls == 1  # the second listing came from Valkey
    assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == descs[0]["digest"]
    assert hashlib.sha256(manifest.content).hexdigest() == descs[0]["digest"][7:]
    assert blob.content == CAR and config.content == b"{}" and unknown is None
