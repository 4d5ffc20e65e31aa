"""Normalizing records of every shape ATCR AppViews have written (ATCR-NOTES.md §3.1, §7)."""

from __future__ import annotations

import json

import pytest

from atcr.errors import DigestMismatch
from atcr.readmodel import keys, verify_digest
from atcr.readmodel.models import TagEntry
from atcr.readmodel.read import pick_tags
from atcr.readmodel.records import hold_did_of, normalize, star_subject, tag_digest, timestamp_ms

DID = "did:plc:abc"
D = "sha256:" + "1" * 64


def test_tag_digest_prefers_the_manifest_uri() -> None:
    uri = f"at://{DID}/io.atcr.manifest/{'2' * 64}"
    assert tag_digest({"manifest": uri, "manifestDigest": D}) == ("sha256:" + "2" * 64, None)
    assert tag_digest({"manifestDigest": D}) == (D, None)
    assert tag_digest({"manifest": f"at://{DID}/io.atcr.manifest/3kabc", "manifestDigest": D}) == (D, None)
    assert tag_digest({"manifest": f"at://{DID}/io.atcr.manifest/3kabc"}) == ("", "3kabc")
    assert tag_digest({"manifestDigest": "sha256:short"}) == ("", None)


@pytest.mark.parametrize(
    ("record", "want"),
    [
        ({"holdDid": "did:web:hold01.atcr.io"}, "did:web:hold01.atcr.io"),
        ({"holdEndpoint": "https://hold01.atcr.io"}, "did:web:hold01.atcr.io"),
        ({"holdEndpoint": "http://172.28.0.3:8080/"}, "did:web:172.28.0.3%3A8080"),
        ({"holdEndpoint": "did:web:legacy.example"}, "did:web:legacy.example"),
        ({"holdDid": "not a did", "holdEndpoint": "https://h.example"}, "did:web:h.example"),
        ({}, None),
    ],
)
def test_hold_did_from_current_and_legacy_fields(record: dict[str, str], want: str | None) -> None:
    assert hold_did_of(record) == want


def test_star_subjects_both_schemas() -> None:
    assert star_subject({"subject": f"at://{DID}/io.atcr.repo.page/app"}) == (DID, "app")
    assert star_subject({"subject": {"did": DID, "repository": "app"}}) == (DID, "app")
    assert star_subject({"subject": "https://example.com"}) is None


def test_manifest_normalization_keeps_the_record_and_derives_fields() -> None:
    rec = {
        "repository": "team/app",
        "digest": D,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", "digest": D, "size": 1},
        "subject": {"mediaType": "x", "digest": "sha256:" + "3" * 64, "size": 1},
        "annotations": {"a": "b", "n": 1},
        "manifestBlob": {"$type": "blob", "ref": {"$link": "bafkreiabc"}, "mimeType": "x", "size": 321},
        "createdAt": "2026-01-02T03:04:05Z",
    }
    norm = normalize(DID, keys.MANIFEST, "1" * 64, rec, "cid1")
    assert norm is not None and norm.kind == "manifest"
    assert norm.ptr == {
        "repo": "team/app",
        "dg": D,
        "sub": "sha256:" + "3" * 64,
        "ts": str(timestamp_ms(rec["createdAt"])),
    }
    payload = json.loads(norm.payload)
    assert payload["record"] == rec and payload["artifact_type"] == "application/vnd.cncf.helm.config.v1+json"
    assert payload["annotations"] == {"a": "b"} and payload["size"] == 321 and payload["blob_cid"] == "bafkreiabc"


@pytest.mark.parametrize(
    ("collection", "rkey", "record"),
    [
        (keys.MANIFEST, "x", {"repository": "App!", "digest": D}),
        (keys.MANIFEST, "x", {"repository": "app", "digest": "md5:abc"}),
        (keys.TAG, "x", {"repository": "app", "tag": "-bad"}),
        (keys.PROFILE, "notself", {"createdAt": "x"}),
        (keys.STAR, "x", {"subject": 42}),
        (keys.CREW, "x", {"member": "bob"}),
        ("app.bsky.feed.post", "x", {"text": "hi"}),
    ],
)
def test_unusable_records_are_not_kept(collection: str, rkey: str, record: dict[str, object]) -> None:
    assert normalize(DID, collection, rkey, record, "cid") is None


def test_pick_tags_newest_record_wins_then_our_rkey() -> None:
    ours = keys.tag_rkey("app", "v1")
    entries = [
        TagEntry(DID, "app", "v1", D, "zzz", None, "2026-01-01T00:00:00Z"),
        TagEntry(DID, "app", "v1", "sha256:" + "2" * 64, ours, None, "2026-01-01T00:00:00Z"),
        TagEntry(DID, "app", "v2", "sha256:" + "3" * 64, "a", None, "2025-01-01T00:00:00Z"),
        TagEntry(DID, "app", "v2", "sha256:" + "4" * 64, "b", None, "2026-01-01T00:00:00Z"),
        TagEntry(DID, "app", "v3", "", "c", None, "2026-01-01T00:00:00Z"),
    ]
    picked = pick_tags(entries)
    assert {t: e.digest[-1] for t, e in picked.items()} == {"v1": "2", "v2": "4"}


def test_verify_digest() -> None:
    import hashlib

    verify_digest("sha512:" + hashlib.sha512(b"x").hexdigest(), b"x")
    with pytest.raises(DigestMismatch):
        verify_digest("sha256:" + hashlib.sha256(b"x").hexdigest(), b"y")
    with pytest.raises(DigestMismatch):
        verify_digest("md5:abc", b"x")
