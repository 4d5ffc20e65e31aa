"""A sparse index (children the repository lacks) renders: a missing child is shown as missing."""

from __future__ import annotations

import json

import pytest

from atcr.readmodel.models import ManifestEntry
from tests.unit.web.fakes import HOLD, OWNER, FakeLoader, manifest
from tests.unit.web.test_pages_render import render, service

pytestmark = pytest.mark.unit

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ABSENT = "sha256:" + "e" * 64


def sparse_scene() -> tuple[FakeLoader, ManifestEntry, ManifestEntry]:
    child = manifest("multi", 1)
    children = [
        {"mediaType": child.media_type, "digest": child.digest, "size": child.size,
         "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": child.media_type, "digest": ABSENT, "size": 1024,
         "platform": {"architecture": "arm64", "os": "linux"}},
    ]
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    digest = "sha256:" + "f" * 64
    record = {"repository": "multi", "digest": digest, "mediaType": OCI_INDEX, "schemaVersion": 2,
              "manifests": children, "createdAt": "2026-11-20T00:00:00Z"}
    index = ManifestEntry(did=OWNER, repository="multi", digest=digest, media_type=OCI_INDEX, raw=raw,
                          hold_did=HOLD, record=record, cid=None, subject_digest=None, artifact_type=None,
                          annotations={}, size=len(raw), created_at=record["createdAt"])
    loader = FakeLoader()
    loader.repos = {"multi": [index, child]}
    return loader, index, child


async def test_manifest_page_marks_the_absent_child_and_links_the_present_one() -> None:
    loader, index, child = sparse_scene()
    page = await service(loader).manifest("owner.test", "multi", index.digest, None)
    assert [(c.digest, c.platform, c.present) for c in page.children] == [
        (child.digest, "linux/amd64", True), (ABSENT, "linux/arm64", False)
    ]
    html = render("manifest.html", page=page)
    assert f"/manifest/{child.digest}" in html
    assert f"/manifest/{ABSENT}" not in html
    assert "not in this repository" in html


async def test_repo_page_lists_the_index_and_its_present_child() -> None:
    loader, index, child = sparse_scene()
    page = await service(loader).repo("owner.test", "multi", None)
    rows = [(r.digest, r.parent, r.platform) for r in page.manifests]
    assert rows == [(index.digest, None, ""), (child.digest, index.digest, "linux/amd64")]
    html = render("repo.html", page=page)
    assert ABSENT not in html
