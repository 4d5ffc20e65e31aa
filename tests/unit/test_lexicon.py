"""The lexicon documents load, real ATCR-shaped records pass, and each kind of violation names its field."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atcr import lexicon
from atcr.errors import AtcrError, LexiconError, RecordValidationError
from atcr.lexicon import (
    DEFAULT_LEXICON_DIR,
    LexiconRegistry,
    known_record_nsids,
    load_lexicons,
    parse_xrpc_params,
    validate_record,
    validate_xrpc_input,
    validate_xrpc_output,
)

pytestmark = pytest.mark.unit


def raw_cid(data: bytes) -> str:
    """A CIDv1 (raw codec, sha2-256) in base32, the form a PDS returns for blobs."""
    digest = hashlib.sha256(data).digest()
    return "b" + base64.b32encode(bytes([0x01, 0x55, 0x12, 0x20]) + digest).decode().lower().rstrip("=")


def dag_cid(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "b" + base64.b32encode(bytes([0x01, 0x71, 0x12, 0x20]) + digest).decode().lower().rstrip("=")


ALICE = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"
HOLD = "did:web:hold01.atcr.io"
NOW = "2025-10-21T16:05:15.123Z"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DIGEST = "sha256:" + hashlib.sha256(b"manifest").hexdigest()
MANIFEST_URI = f"at://{ALICE}/io.atcr.manifest/{DIGEST.removeprefix('sha256:')}"


def blob(mime: str, size: int, data: bytes = b"x") -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": raw_cid(data)}, "mimeType": mime, "size": size}


def descriptor(n: int, media_type: str = "application/vnd.oci.image.layer.v1.tar+gzip") -> dict[str, Any]:
    return {"mediaType": media_type, "size": 1000 + n, "digest": "sha256:" + hashlib.sha256(bytes([n])).hexdigest()}


def image_manifest() -> dict[str, Any]:
    return {
        "$type": "io.atcr.manifest",
        "repository": "myapp",
        "digest": DIGEST,
        "holdDid": HOLD,
        "mediaType": OCI_MANIFEST,
        "schemaVersion": 2,
        "config": descriptor(0, "application/vnd.oci.image.config.v1+json"),
        "layers": [descriptor(1), descriptor(2)],
        "annotations": {"org.opencontainers.image.source": "https://github.com/alice/myapp"},
        "manifestBlob": blob(OCI_MANIFEST, 1234, b"manifest"),
        "createdAt": NOW,
    }


def index_manifest() -> dict[str, Any]:
    return {
        "$type": "io.atcr.manifest",
        "repository": "myapp",
        "digest": DIGEST,
        "holdDid": HOLD,
        "mediaType": OCI_INDEX,
        "schemaVersion": 2,
        "manifests": [
            {**descriptor(3, OCI_MANIFEST), "platform": {"architecture": "amd64", "os": "linux"}},
            {
                **descriptor(4, OCI_MANIFEST),
                "platform": {
                    "architecture": "arm64",
                    "os": "linux",
                    "variant": "v8",
                    "osVersion": "6.1",
                    "osFeatures": ["sse4"],
                },
                "annotations": {"a": "b"},
            },
        ],
        "manifestBlob": blob(OCI_INDEX, 800),
        "createdAt": NOW,
    }


VALID_RECORDS: dict[str, dict[str, Any]] = {
    "manifest-image": image_manifest(),
    "manifest-index": index_manifest(),
    "manifest-legacy-endpoint": {
        **{k: v for k, v in image_manifest().items() if k not in {"holdDid", "manifestBlob"}},
        "holdEndpoint": "https://hold01.atcr.io",
    },
    "tag-with-manifest-uri": {
        "$type": "io.atcr.tag",
        "repository": "myapp",
        "tag": "latest",
        "manifest": MANIFEST_URI,
        "createdAt": NOW,
        "updatedAt": NOW,
    },
    "tag-digest-only": {"repository": "myapp", "tag": "v1.2.3", "manifestDigest": DIGEST, "createdAt": NOW},
    "profile": {
        "$type": "io.atcr.sailor.profile",
        "defaultHold": HOLD,
        "autoRemoveUntagged": False,
        "createdAt": NOW,
    },
    "star-uri": {
        "$type": "io.atcr.sailor.star",
        "subject": f"at://{ALICE}/io.atcr.repo.page/myapp",
        "createdAt": NOW,
    },
    "star-legacy-object": {"subject": {"did": ALICE, "repository": "myapp"}, "createdAt": NOW},
    "repo-page": {
        "$type": "io.atcr.repo.page",
        "repository": "myapp",
        "description": "# My app\n\nDoes things. Ünïcödé too. 🚢",
        "avatar": blob("image/png", 2_000_000),
        "createdAt": NOW,
        "updatedAt": "2025-10-22T08:00:00+02:00",
    },
    "repo-policy": {
        "$type": "io.atcr.repo.policy",
        "repository": "team/app",
        "immutableTags": ["v*", "release-[0-9]*"],
        "retention": {
            "keepNewest": [{"pattern": "build-*", "count": 3}],
            "untaggedOlderThanDays": 30,
            "protect": ["v*", "latest"],
        },
        "createdAt": NOW,
    },
    "captain": {
        "$type": "io.atcr.hold.captain",
        "owner": ALICE,
        "public": True,
        "allowAllCrew": True,
        "enableBlueskyPosts": False,
        "deployedAt": NOW,
        "region": "iad",
        "provider": "fly.io",
    },
    "crew": {
        "$type": "io.atcr.hold.crew",
        "member": ALICE,
        "role": "member",
        "permissions": ["blob:read", "blob:write"],
        "addedAt": NOW,
        "tier": "deckhand",
    },
    "layer": {
        "$type": "io.atcr.hold.layer",
        "digest": descriptor(1)["digest"],
        "size": 123456,
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "manifest": MANIFEST_URI,
        "userDid": ALICE,
        "createdAt": NOW,
    },
    "stats": {
        "$type": "io.atcr.hold.stats",
        "ownerDid": ALICE,
        "repository": "myapp",
        "pullCount": 12,
        "pushCount": 3,
        "lastPull": NOW,
        "lastPush": NOW,
        "updatedAt": NOW,
    },
    "scan": {
        "manifest": MANIFEST_URI,
        "repository": "myapp",
        "userDid": ALICE,
        "critical": 0,
        "high": 1,
        "medium": 2,
        "low": 3,
        "total": 6,
        "scannerVersion": "1.0.0",
        "scannedAt": NOW,
        "sbomBlob": blob("application/spdx+json", 5000),
        "vulnReportBlob": blob("application/vnd.atcr.vulnerabilities+json", 9000),
    },
    "webhook": {"holdDid": HOLD, "triggers": 0x05, "privateCid": dag_cid(b"secret"), "createdAt": NOW},
    "legacy-hold": {"endpoint": "https://hold01.atcr.io", "owner": ALICE, "public": True, "createdAt": NOW},
}

NSID_OF: dict[str, str] = {
    "manifest-image": "io.atcr.manifest",
    "manifest-index": "io.atcr.manifest",
    "manifest-legacy-endpoint": "io.atcr.manifest",
    "tag-with-manifest-uri": "io.atcr.tag",
    "tag-digest-only": "io.atcr.tag",
    "profile": "io.atcr.sailor.profile",
    "star-uri": "io.atcr.sailor.star",
    "star-legacy-object": "io.atcr.sailor.star",
    "repo-page": "io.atcr.repo.page",
    "repo-policy": "io.atcr.repo.policy",
    "captain": "io.atcr.hold.captain",
    "crew": "io.atcr.hold.crew",
    "layer": "io.atcr.hold.layer",
    "stats": "io.atcr.hold.stats",
    "scan": "io.atcr.hold.scan",
    "webhook": "io.atcr.sailor.webhook",
    "legacy-hold": "io.atcr.hold",
}

EXPECTED_RECORDS = frozenset(NSID_OF.values())
EXPECTED_METHODS = frozenset(
    f"io.atcr.hold.{m}"
    for m in (
        "initiateUpload",
        "getPartUploadUrl",
        "uploadPart",
        "completeUpload",
        "abortUpload",
        "notifyManifest",
        "requestCrew",
        "getQuota",
        "listTiers",
        "getLayersForManifest",
        "getStats",
        "listStats",
        "listGcRuns",
        "requestScan",
        "getScanStatus",
        "subscribeScanJobs",
        "exportUserData",
        "deleteUserData",
        "updateCrewTier",
        "setStats",
        "addCrew",
        "removeCrew",
    )
)


def refused(nsid: str, record: Any) -> RecordValidationError:
    with pytest.raises(RecordValidationError) as info:
        validate_record(nsid, record)
    assert info.value.nsid == nsid
    return info.value


# ---------------------------------------------------------------------------------------------
# Documents


def test_every_document_is_a_lexicon_v1_file_named_by_its_nsid() -> None:
    files = sorted(DEFAULT_LEXICON_DIR.rglob("*.json"))
    assert files
    registry = load_lexicons()
    for path in files:
        doc = json.loads(path.read_text())
        assert doc["lexicon"] == 1
        assert doc["id"] == ".".join(path.relative_to(DEFAULT_LEXICON_DIR).with_suffix("").parts)
        assert "main" in doc["defs"]
        assert doc["id"] in registry.nsids
    assert len(registry.nsids) == len(files)


def test_known_records_and_methods() -> None:
    assert known_record_nsids() == EXPECTED_RECORDS
    assert load_lexicons().known_method_nsids() == EXPECTED_METHODS
    assert "io.atcr.authFullApp" in load_lexicons().nsids


def test_record_keys_match_atcr() -> None:
    registry = load_lexicons()
    assert registry.record_key("io.atcr.manifest") == "tid"
    assert registry.record_key("io.atcr.tag") == "any"
    assert registry.record_key("io.atcr.sailor.profile") == "literal:self"
    assert registry.record_key("io.atcr.hold.captain") == "literal:self"
    assert registry.record_key("io.atcr.hold.layer") == "tid"
    with pytest.raises(LexiconError):
        registry.record_key("io.atcr.hold.getStats")


def test_permission_set_covers_the_user_collections() -> None:
    doc = load_lexicons().document("io.atcr.authFullApp")
    main = doc["defs"]["main"]
    assert main["type"] == "permission-set"
    (perm,) = main["permissions"]
    assert set(perm["collection"]) == {
        "io.atcr.manifest",
        "io.atcr.tag",
        "io.atcr.sailor.star",
        "io.atcr.sailor.profile",
        "io.atcr.repo.page",
    }


def test_document_returns_a_copy() -> None:
    doc = load_lexicons().document("io.atcr.tag")
    doc["defs"]["main"]["record"]["required"].append("bogus")
    validate_record("io.atcr.tag", VALID_RECORDS["tag-digest-only"])


def test_load_is_cached_and_explicit_directory_works(tmp_path: Path) -> None:
    assert load_lexicons() is load_lexicons(DEFAULT_LEXICON_DIR)
    (tmp_path / "com" / "example").mkdir(parents=True)
    (tmp_path / "com" / "example" / "thing.json").write_text(
        json.dumps(
            {
                "lexicon": 1,
                "id": "com.example.thing",
                "defs": {
                    "main": {
                        "type": "record",
                        "key": "tid",
                        "record": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "maxGraphemes": 3},
                                "tags": {"type": "array", "maxLength": 2, "items": {"type": "string"}},
                                "data": {"type": "bytes", "maxLength": 4},
                                "link": {"type": "cid-link"},
                                "kind": {"type": "string", "enum": ["a", "b"]},
                                "n": {"type": "integer", "const": 7},
                                "embed": {"type": "union", "refs": ["#one"], "closed": True},
                                "maybe": {"type": "string"},
                            },
                            "nullable": ["maybe"],
                        },
                    },
                    "one": {"type": "object", "properties": {"x": {"type": "integer"}}},
                },
            }
        )
    )
    registry = load_lexicons(tmp_path)
    assert registry is load_lexicons(str(tmp_path))
    assert registry.known_record_nsids() == {"com.example.thing"}
    ok = {
        "name": "👍🏽é\u0301x",
        "tags": ["a"],
        "data": {"$bytes": "AAEC"},
        "link": {"$link": dag_cid(b"z")},
        "kind": "a",
        "n": 7,
        "embed": {"$type": "com.example.thing#one", "x": 1},
        "maybe": None,
    }
    registry.validate_record("com.example.thing", ok)
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"name": "abcd"}, "name", "must be at most 3 characters"),
        ({"tags": ["a", "b", "c"]}, "tags", "must have at most 2 items"),
        ({"data": {"$bytes": "AAECAwQ"}}, "data", "must be at most 4 bytes"),
        ({"data": "AAEC"}, "data", "must be bytes"),
        ({"link": {"$link": "nope"}}, "link", "must be a CID link"),
        ({"kind": "c"}, "kind", "must be one of: a, b"),
        ({"n": 8}, "n", "must be 7"),
        ({"embed": {"$type": "com.example.other", "x": 1}}, "embed.$type", "must be one of"),
        ({"embed": {"x": 1}}, "embed.$type", "required field missing"),
        ({"embed": {"$type": "com.example.thing#one", "x": "1"}}, "embed.x", "must be an integer"),
        ({"name": None}, "name", "must not be null"),
    ]
    for change, path, message in cases:
        with pytest.raises(RecordValidationError) as info:
            registry.validate_record("com.example.thing", {**ok, **change})
        assert (info.value.path, message in info.value.reason) == (path, True), info.value


def _write(root: Path, nsid: str, doc: dict[str, Any]) -> None:
    path = root.joinpath(*nsid.split(".")).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _record_doc(nsid: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "lexicon": 1,
        "id": nsid,
        "defs": {
            "main": {"type": "record", "key": "tid", "record": {"type": "object", "properties": properties}},
            **extra,
        },
    }


@pytest.mark.parametrize(
    ("nsid", "doc", "message"),
    [
        ("com.example.a", {**_record_doc("com.example.a", {}), "id": "com.example.b"}, "does not match its path"),
        ("com.example.a", {**_record_doc("com.example.a", {}), "lexicon": 2}, "'lexicon' must be 1"),
        ("com.example.a", _record_doc("com.example.a", {"x": {"type": "ref", "ref": "#nope"}}), "points at nothing"),
        ("com.example.a", _record_doc("com.example.a", {"x": {"type": "string", "format": "email"}}), "format"),
        ("com.example.a", _record_doc("com.example.a", {"x": {"type": "float"}}), "unsupported field type"),
        ("com.example.a", _record_doc("com.example.a", {"x": {"type": "array"}}), "needs 'items'"),
        (
            "com.example.a",
            _record_doc("com.example.a", {}, other={"type": "record", "record": {"type": "object"}}),
            "only be the 'main' def",
        ),
        (
            "com.example.perms",
            {
                "lexicon": 1,
                "id": "com.example.perms",
                "defs": {
                    "main": {
                        "type": "permission-set",
                        "permissions": [
                            {"type": "permission", "resource": "repo", "collection": ["app.bsky.feed.post"]}
                        ],
                    }
                },
            },
            "outside namespace",
        ),
    ],
)
def test_malformed_documents_are_lexicon_errors(tmp_path: Path, nsid: str, doc: dict[str, Any], message: str) -> None:
    _write(tmp_path, nsid, doc)
    with pytest.raises(LexiconError, match=message):
        LexiconRegistry.from_directory(tmp_path)


def test_unreadable_json_and_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(LexiconError, match="not found"):
        LexiconRegistry.from_directory(tmp_path / "missing")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(LexiconError, match="cannot read"):
        LexiconRegistry.from_directory(tmp_path)


def test_unknown_nsid_is_a_lexicon_error() -> None:
    with pytest.raises(LexiconError, match="no such lexicon"):
        validate_record("io.atcr.nope", {})
    with pytest.raises(LexiconError, match="not a record"):
        validate_record("io.atcr.hold.getStats", {})
    with pytest.raises(LexiconError, match="not a query or procedure"):
        validate_xrpc_input("io.atcr.manifest", {})
    assert issubclass(LexiconError, AtcrError)


# ---------------------------------------------------------------------------------------------
# Records


@pytest.mark.parametrize("name", sorted(VALID_RECORDS))
def test_valid_records_pass(name: str) -> None:
    validate_record(NSID_OF[name], VALID_RECORDS[name])


def test_unknown_fields_are_allowed() -> None:
    validate_record("io.atcr.tag", {**VALID_RECORDS["tag-digest-only"], "futureField": {"any": ["thing"]}})


def test_legacy_blob_shape_is_accepted() -> None:
    page = {**VALID_RECORDS["repo-page"], "avatar": {"cid": raw_cid(b"img"), "mimeType": "image/jpeg"}}
    validate_record("io.atcr.repo.page", page)


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


def _with_layer_size(value: Any) -> dict[str, Any]:
    record = image_manifest()
    record["layers"][1]["size"] = value
    return record


def _with_platform(value: Any) -> dict[str, Any]:
    record = index_manifest()
    record["manifests"][1]["platform"] = value
    return record


VIOLATIONS: list[tuple[str, str, Any, str, str]] = [
    # (case id, nsid, record, path, message fragment)
    ("missing required", "io.atcr.manifest", _without(image_manifest(), "digest"), "digest", "required field missing"),
    ("missing createdAt", "io.atcr.sailor.profile", {"defaultHold": HOLD}, "createdAt", "required field missing"),
    ("wrong type", "io.atcr.manifest", {**image_manifest(), "schemaVersion": "2"}, "schemaVersion", "integer"),
    ("bool is not int", "io.atcr.hold.stats", {**VALID_RECORDS["stats"], "pullCount": True}, "pullCount", "integer"),
    ("float is not int", "io.atcr.hold.stats", {**VALID_RECORDS["stats"], "pushCount": 1.0}, "pushCount", "integer"),
    ("negative count", "io.atcr.hold.stats", {**VALID_RECORDS["stats"], "pushCount": -1}, "pushCount", "at least 0"),
    ("wrong bool", "io.atcr.hold.captain", {**VALID_RECORDS["captain"], "public": "yes"}, "public", "boolean"),
    (
        "repository too long",
        "io.atcr.manifest",
        {**image_manifest(), "repository": "a" * 256},
        "repository",
        "must be at most 255 characters",
    ),
    (
        "repository too long in utf-8",
        "io.atcr.tag",
        {**VALID_RECORDS["tag-digest-only"], "repository": "é" * 128},
        "repository",
        "must be at most 255 bytes (UTF-8)",
    ),
    ("tag too long", "io.atcr.tag", {**VALID_RECORDS["tag-digest-only"], "tag": "t" * 129}, "tag", "at most 128"),
    (
        "stats repository 256 ok but 257 not",
        "io.atcr.hold.stats",
        {**VALID_RECORDS["stats"], "repository": "r" * 257},
        "repository",
        "at most 256",
    ),
    (
        "description too long",
        "io.atcr.repo.page",
        {**VALID_RECORDS["repo-page"], "description": "x" * 100_001},
        "description",
        "at most 100000",
    ),
    ("bad did", "io.atcr.manifest", {**image_manifest(), "holdDid": "hold01.atcr.io"}, "holdDid", "valid DID"),
    ("did upper method", "io.atcr.hold.crew", {**VALID_RECORDS["crew"], "member": "did:PLC:abc"}, "member", "DID"),
    (
        "bad at-uri",
        "io.atcr.tag",
        {**VALID_RECORDS["tag-with-manifest-uri"], "manifest": "https://example.com/x"},
        "manifest",
        "valid AT-URI",
    ),
    (
        "at-uri with bad collection",
        "io.atcr.hold.layer",
        {**VALID_RECORDS["layer"], "manifest": f"at://{ALICE}/not a nsid/abc"},
        "manifest",
        "valid AT-URI",
    ),
    (
        "bad datetime",
        "io.atcr.tag",
        {**VALID_RECORDS["tag-digest-only"], "createdAt": "2025-10-21 16:05:15"},
        "createdAt",
        "valid datetime",
    ),
    (
        "datetime without timezone",
        "io.atcr.hold.stats",
        {**VALID_RECORDS["stats"], "lastPull": "2025-10-21T16:05:15"},
        "lastPull",
        "valid datetime",
    ),
    (
        "impossible date",
        "io.atcr.sailor.profile",
        {**VALID_RECORDS["profile"], "createdAt": "2025-02-30T00:00:00Z"},
        "createdAt",
        "valid datetime",
    ),
    ("nested layer size type", "io.atcr.manifest", _with_layer_size("1000"), "layers[1].size", "integer"),
    ("nested layer size missing", "io.atcr.manifest", _with_layer_size(None), "layers[1].size", "null"),
    (
        "nested platform missing os",
        "io.atcr.manifest",
        _with_platform({"architecture": "arm64"}),
        "manifests[1].platform.os",
        "required field missing",
    ),
    ("layers not array", "io.atcr.manifest", {**image_manifest(), "layers": {}}, "layers", "must be an array"),
    ("layer not object", "io.atcr.manifest", {**image_manifest(), "layers": ["sha256:x"]}, "layers[0]", "object"),
    ("wrong $type", "io.atcr.manifest", {**image_manifest(), "$type": "io.atcr.tag"}, "$type", "'io.atcr.manifest'"),
    ("non-string $type", "io.atcr.tag", {**VALID_RECORDS["tag-digest-only"], "$type": 1}, "$type", "io.atcr.tag"),
    (
        "blob mimeType not accepted",
        "io.atcr.repo.page",
        {**VALID_RECORDS["repo-page"], "avatar": blob("image/gif", 100)},
        "avatar.mimeType",
        "image/png, image/jpeg, image/webp",
    ),
    (
        "blob too large",
        "io.atcr.repo.page",
        {**VALID_RECORDS["repo-page"], "avatar": blob("image/png", 3_000_001)},
        "avatar.size",
        "at most 3000000 bytes",
    ),
    (
        "blob bad ref",
        "io.atcr.repo.page",
        {**VALID_RECORDS["repo-page"], "avatar": {**blob("image/png", 1), "ref": {"$link": "Qm123"}}},
        "avatar.ref",
        "CID link",
    ),
    (
        "blob not a blob",
        "io.atcr.manifest",
        {**image_manifest(), "manifestBlob": "bafkrei"},
        "manifestBlob",
        "must be a blob",
    ),
    (
        "manifest blob wrong type",
        "io.atcr.manifest",
        {**image_manifest(), "manifestBlob": blob("text/plain", 10)},
        "manifestBlob.mimeType",
        "must be one of",
    ),
    ("bad uri", "io.atcr.manifest", {**image_manifest(), "holdEndpoint": "not a url"}, "holdEndpoint", "URI"),
    ("bad cid", "io.atcr.sailor.webhook", {**VALID_RECORDS["webhook"], "privateCid": "bafy"}, "privateCid", "CID"),
    ("bad handle", "io.atcr.hold.layer", {**VALID_RECORDS["layer"], "userHandle": "-x-.com"}, "userHandle", "handle"),
    ("annotations not object", "io.atcr.manifest", {**image_manifest(), "annotations": "a=b"}, "annotations", "object"),
    ("star subject number", "io.atcr.sailor.star", {"subject": 5, "createdAt": NOW}, "subject", "AT-URI or an object"),
    ("star subject bad uri", "io.atcr.sailor.star", {"subject": "myapp", "createdAt": NOW}, "subject", "AT-URI"),
    (
        "star legacy missing repository",
        "io.atcr.sailor.star",
        {"subject": {"did": ALICE}, "createdAt": NOW},
        "subject.repository",
        "required field missing",
    ),
    (
        "star legacy bad did",
        "io.atcr.sailor.star",
        {"subject": {"did": "alice", "repository": "x"}, "createdAt": NOW},
        "subject.did",
        "valid DID",
    ),
    ("star subject list", "io.atcr.sailor.star", {"subject": [ALICE], "createdAt": NOW}, "subject", "AT-URI"),
    ("record not an object", "io.atcr.tag", ["repository"], "", "must be an object"),
    ("lone surrogate", "io.atcr.tag", {**VALID_RECORDS["tag-digest-only"], "tag": "a\ud800"}, "tag", "Unicode"),
]


@pytest.mark.parametrize(
    ("nsid", "record", "path", "message"), [v[1:] for v in VIOLATIONS], ids=[v[0] for v in VIOLATIONS]
)
def test_violations_name_the_field(nsid: str, record: Any, path: str, message: str) -> None:
    error = refused(nsid, record)
    assert error.path == path
    assert message in error.reason
    assert path in str(error)


def test_limits_are_inclusive() -> None:
    validate_record("io.atcr.manifest", {**image_manifest(), "repository": "a" * 255})
    validate_record("io.atcr.hold.stats", {**VALID_RECORDS["stats"], "repository": "r" * 256})
    validate_record("io.atcr.repo.page", {**VALID_RECORDS["repo-page"], "avatar": blob("image/webp", 3_000_000)})


def test_mapping_that_is_not_a_dict_is_accepted() -> None:
    from types import MappingProxyType

    validate_record("io.atcr.tag", MappingProxyType(VALID_RECORDS["tag-with-manifest-uri"]))


# ---------------------------------------------------------------------------------------------
# Formats


GOOD_FORMATS: dict[str, list[str]] = {
    "did": [ALICE, HOLD, "did:web:localhost%3A5000", "did:web:172.28.0.3%3A8080", "did:method:val:two"],
    "handle": ["alice.bsky.social", "evan.jarrett.net", "XN--ls8h.test", "a.co", "jo-hn.test"],
    "at-uri": [
        f"at://{ALICE}",
        f"at://{ALICE}/io.atcr.manifest",
        MANIFEST_URI,
        "at://alice.bsky.social/io.atcr.repo.page/myapp",
        f"at://{ALICE}/io.atcr.tag/self#/foo",
    ],
    "datetime": [
        "1985-04-12T23:20:50.123Z",
        "1985-04-12T23:20:50Z",
        "1985-04-12T23:20:50.123456789+05:30",
        "2025-10-21T16:05:15-07:00",
    ],
    "cid": [raw_cid(b"a"), dag_cid(b"b")],
    "uri": ["https://hold01.atcr.io", "http://localhost:5000/x?y=1", "did:plc:abc", "at://x.com", "mailto:a@b.c"],
    "nsid": ["io.atcr.manifest", "com.atproto.repo.putRecord", "a.b.c", "io.atcr.hold.getStats"],
    "tid": ["3jzfcijpj2z2a", "2222222222222"],
    "record-key": ["self", "3jzfcijpj2z2a", "a" * 64, "repo.page:x~y_z-1"],
    "at-identifier": [ALICE, "alice.bsky.social"],
    "language": ["en", "en-US", "pt-BR", "i-klingon", "zh-Hant"],
}

BAD_FORMATS: dict[str, list[str]] = {
    "did": ["did:plc", "did:PLC:abc", "did:web:", "did:web:a:", "did:web:a%", "did:web:a%zz", "DID:plc:abc", "x"],
    "handle": ["alice", "alice.", ".alice.com", "a..com", "alice.com.1", "al ice.com", "-a.com", "a" * 64 + ".com"],
    "at-uri": [
        "at://",
        "at:/x.com",
        "https://x.com",
        f"at://{ALICE}/",
        f"at://{ALICE}/nsid/rkey/extra",
        f"at://{ALICE}/io.atcr.tag/a b",
        f"at://{ALICE}/io.atcr.tag/self?x=1",
        "at://not_a_handle",
    ],
    "datetime": [
        "1985-04-12",
        "1985-04-12T23:20Z",
        "1985-04-12t23:20:50Z",
        "1985-04-12T23:20:50z",
        "1985-04-12T23:20:50-00:00",
        "1985-04-12T23:20:50+0000",
        "0000-01-01T00:00:00Z",
        "1985-13-12T23:20:50Z",
        "1985-04-12T24:20:50Z",
        " 1985-04-12T23:20:50Z",
        "1985-04-12T23:20:50Z\n",
        "1985-04-12T23:20:50.Z",
        "١٩٨٥-04-12T23:20:50Z",
    ],
    "cid": ["Qmbafy", "bafy", raw_cid(b"a").upper(), raw_cid(b"a")[:-3], "z" + raw_cid(b"a")[1:], ""],
    "uri": ["", "no-scheme", "https://", "http:// space.com", "1http://x"],
    "nsid": ["io.atcr", "io..atcr.x", "io.atcr.1x", "io.atcr.x-y", "io.atcr.x.", "io atcr x"],
    "tid": ["3jzfcijpj2z2", "kjzfcijpj2z2a", "3JZFCIJPJ2Z2A", "3jzfcijpj2z21"],
    "record-key": [".", "..", "", "a/b", "a b", "a" * 513],
    "at-identifier": ["alice", "did:x"],
    "language": ["", "e", "englishlanguage", "en_US", "i"],
}


@pytest.mark.parametrize(("fmt", "value"), [(f, v) for f, vs in GOOD_FORMATS.items() for v in vs])
def test_format_accepts(fmt: str, value: str) -> None:
    assert lexicon._FORMATS[fmt][0](value), value


@pytest.mark.parametrize(("fmt", "value"), [(f, v) for f, vs in BAD_FORMATS.items() for v in vs])
def test_format_refuses(fmt: str, value: str) -> None:
    assert not lexicon._FORMATS[fmt][0](value), value


def test_every_format_in_the_documents_is_implemented() -> None:
    used: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("format"), str):
                used.add(node["format"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for path in DEFAULT_LEXICON_DIR.rglob("*.json"):
        walk(json.loads(path.read_text()))
    assert used <= set(lexicon._FORMATS)
    assert {"did", "at-uri", "datetime", "cid", "uri"} <= used


@pytest.mark.parametrize(
    ("text", "count"),
    [("abc", 3), ("a\r\nb", 3), ("é", 1), ("e\u0301", 1), ("👍🏽", 1), ("👨‍👩‍👧", 1), ("🇫🇷🇩🇪", 2), ("한국어", 3)],
)
def test_grapheme_count(text: str, count: int) -> None:
    assert lexicon._grapheme_len(text) == count


# ---------------------------------------------------------------------------------------------
# XRPC bodies


def notify_body() -> dict[str, Any]:
    return {
        "repository": "myapp",
        "userDid": ALICE,
        "manifestDigest": DIGEST,
        "tag": "latest",
        "operation": "push",
        "manifest": {
            "mediaType": OCI_MANIFEST,
            "config": {"digest": descriptor(0)["digest"], "size": 10},
            "layers": [
                {"digest": d["digest"], "size": d["size"], "mediaType": d["mediaType"]} for d in (descriptor(1),)
            ],
            "manifests": [
                {
                    "digest": DIGEST,
                    "size": 5,
                    "mediaType": OCI_MANIFEST,
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        },
    }


def test_xrpc_inputs_and_outputs() -> None:
    validate_xrpc_input("io.atcr.hold.initiateUpload", {"digest": DIGEST})
    validate_xrpc_output("io.atcr.hold.initiateUpload", {"uploadId": "u-1"})
    validate_xrpc_input("io.atcr.hold.getPartUploadUrl", {"uploadId": "u-1", "partNumber": 1})
    validate_xrpc_output(
        "io.atcr.hold.getPartUploadUrl",
        {"url": "https://s3.example.com/b?X-Amz-Signature=x", "method": "PUT", "headers": {"Content-Type": "x"}},
    )
    validate_xrpc_input("io.atcr.hold.uploadPart", b"raw bytes have no schema")
    validate_xrpc_output("io.atcr.hold.uploadPart", {"etag": '"abc"'})
    validate_xrpc_input(
        "io.atcr.hold.completeUpload",
        {
            "uploadId": "u-1",
            "digest": DIGEST,
            "parts": [{"partNumber": 1, "etag": "a"}, {"partNumber": 2, "etag": "b"}],
        },
    )
    validate_xrpc_output("io.atcr.hold.completeUpload", {"status": "completed", "digest": DIGEST})
    validate_xrpc_input("io.atcr.hold.abortUpload", {"uploadId": "u-1"})
    validate_xrpc_output("io.atcr.hold.abortUpload", {"status": "aborted"})
    validate_xrpc_input("io.atcr.hold.notifyManifest", notify_body())
    validate_xrpc_input("io.atcr.hold.notifyManifest", {**_without(notify_body(), "manifest"), "operation": "pull"})
    validate_xrpc_output(
        "io.atcr.hold.notifyManifest",
        {"success": True, "operation": "push", "statsUpdated": True, "layersCreated": 1, "postCreated": False},
    )
    validate_xrpc_input("io.atcr.hold.requestCrew", {})
    validate_xrpc_input("io.atcr.hold.requestCrew", {"role": "member", "permissions": ["blob:read", "blob:write"]})
    validate_xrpc_output(
        "io.atcr.hold.requestCrew",
        {
            "status": "created",
            "uri": f"at://{HOLD}/io.atcr.hold.crew/3jzfcijpj2z2a",
            "cid": dag_cid(b"c"),
            "message": "ok",
        },
    )
    validate_xrpc_input("io.atcr.hold.getQuota", {"userDid": ALICE})
    validate_xrpc_output(
        "io.atcr.hold.getQuota", {"userDid": ALICE, "uniqueBlobs": 3, "totalSize": 9, "tier": "deckhand"}
    )
    validate_xrpc_output(
        "io.atcr.hold.listTiers",
        {"tiers": [{"name": "deckhand", "quotaBytes": 5_000_000_000, "quotaFormatted": "5 GB", "scanOnPush": False}]},
    )
    validate_xrpc_output("io.atcr.hold.getLayersForManifest", {"layers": [VALID_RECORDS["layer"]]})
    validate_xrpc_output("io.atcr.hold.getStats", VALID_RECORDS["stats"])
    validate_xrpc_output("io.atcr.hold.listStats", {"stats": [VALID_RECORDS["stats"]], "cursor": "abc"})
    validate_xrpc_output("io.atcr.hold.listStats", {"stats": []})
    validate_xrpc_output(
        "io.atcr.hold.deleteUserData", {"success": True, "crewDeleted": True, "layersDeleted": 2, "statsDeleted": 1}
    )
    validate_xrpc_input("io.atcr.hold.updateCrewTier", {"userDid": ALICE, "tierRank": 0})
    validate_xrpc_input("io.atcr.hold.setStats", {"ownerDid": ALICE, "repository": "myapp", "pullCount": 4})
    validate_xrpc_output(
        "io.atcr.hold.exportUserData",
        {
            "exportedAt": NOW,
            "holdDid": HOLD,
            "userDid": ALICE,
            "isCaptain": False,
            "crewRecord": {"role": "member", "tier": "deckhand", "addedAt": NOW, "permissions": ["blob:read"]},
            "layerRecords": [VALID_RECORDS["layer"]],
            "statsRecords": [VALID_RECORDS["stats"]],
            "blueskyPosts": [
                {"uri": f"at://{HOLD}/app.bsky.feed.post/3jzfcijpj2z2a", "text": "pushed", "createdAt": NOW}
            ],
        },
    )


XRPC_VIOLATIONS: list[tuple[str, str, str, Any, str, str]] = [
    # (case id, direction, nsid, body, path, message fragment)
    ("initiate no digest", "in", "io.atcr.hold.initiateUpload", {}, "digest", "required field missing"),
    (
        "part number zero",
        "in",
        "io.atcr.hold.getPartUploadUrl",
        {"uploadId": "u", "partNumber": 0},
        "partNumber",
        "at least 1",
    ),
    (
        "complete parts etag type",
        "in",
        "io.atcr.hold.completeUpload",
        {"uploadId": "u", "digest": DIGEST, "parts": [{"partNumber": 1, "etag": "a"}, {"partNumber": 2, "etag": 2}]},
        "parts[1].etag",
        "must be a string",
    ),
    ("notify bad did", "in", "io.atcr.hold.notifyManifest", {**notify_body(), "userDid": "alice"}, "userDid", "DID"),
    (
        "notify nested layer size",
        "in",
        "io.atcr.hold.notifyManifest",
        {**notify_body(), "manifest": {"mediaType": OCI_MANIFEST, "layers": [{"digest": DIGEST, "size": "1"}]}},
        "manifest.layers[0].size",
        "integer",
    ),
    (
        "notify cross-doc platform",
        "in",
        "io.atcr.hold.notifyManifest",
        {
            **notify_body(),
            "manifest": {"mediaType": OCI_INDEX, "manifests": [{"digest": DIGEST, "size": 1, "platform": {}}]},
        },
        "manifest.manifests[0].platform.architecture",
        "required field missing",
    ),
    ("body not object", "in", "io.atcr.hold.abortUpload", "u-1", "", "must be an object"),
    (
        "getStats missing count",
        "out",
        "io.atcr.hold.getStats",
        _without(VALID_RECORDS["stats"], "pullCount"),
        "pullCount",
        "required",
    ),
    (
        "listStats bad item",
        "out",
        "io.atcr.hold.listStats",
        {"stats": [VALID_RECORDS["stats"], {**VALID_RECORDS["stats"], "ownerDid": "x"}]},
        "stats[1].ownerDid",
        "DID",
    ),
    ("getQuota no userDid", "in", "io.atcr.hold.getQuota", {}, "userDid", "required field missing"),
    ("listStats limit", "in", "io.atcr.hold.listStats", {"limit": 101}, "limit", "at most 100"),
    ("tiers missing", "out", "io.atcr.hold.listTiers", {}, "tiers", "required field missing"),
]


@pytest.mark.parametrize(
    ("direction", "nsid", "body", "path", "message"),
    [v[1:] for v in XRPC_VIOLATIONS],
    ids=[v[0] for v in XRPC_VIOLATIONS],
)
def test_xrpc_violations_name_the_field(direction: str, nsid: str, body: Any, path: str, message: str) -> None:
    validate = validate_xrpc_input if direction == "in" else validate_xrpc_output
    with pytest.raises(RecordValidationError) as info:
        validate(nsid, body)
    assert (info.value.nsid, info.value.path) == (nsid, path)
    assert message in info.value.reason


def test_parse_query_params() -> None:
    assert parse_xrpc_params("io.atcr.hold.listStats", {"ownerDid": ALICE, "limit": "20", "extra": "dropped"}) == {
        "ownerDid": ALICE,
        "limit": 20,
    }
    assert parse_xrpc_params("io.atcr.hold.listStats", {"limit": ["5"]}) == {"limit": 5}
    assert parse_xrpc_params("io.atcr.hold.listStats", {}) == {}
    bad_queries: list[tuple[dict[str, Any], str, str]] = [
        ({"limit": "ten"}, "limit", "must be an integer"),
        ({"limit": "0"}, "limit", "at least 1"),
        ({"limit": ["1", "2"]}, "limit", "single value"),
        ({"ownerDid": "nope"}, "ownerDid", "DID"),
    ]
    for query, path, message in bad_queries:
        with pytest.raises(RecordValidationError) as info:
            parse_xrpc_params("io.atcr.hold.listStats", query)
        assert info.value.path == path
        assert message in info.value.reason
    with pytest.raises(RecordValidationError, match="userDid"):
        parse_xrpc_params("io.atcr.hold.getQuota", {})


# ---------------------------------------------------------------------------------------------
# Robustness: whatever arrives off the wire, the validator answers with RecordValidationError only.

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text()
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)
# Keys the lexicons care about, so random records reach deep into the compiled checks.
interesting_keys = st.sampled_from(
    sorted(
        {k for r in VALID_RECORDS.values() for k in r}
        | {"ref", "$link", "mimeType", "size", "cid", "did", "platform", "os", "architecture", "digest"}
    )
)
record_like = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(interesting_keys | st.text(max_size=5), children, max_size=6)
    ),
    max_leaves=25,
)
RECORD_NSIDS = sorted(EXPECTED_RECORDS)
METHOD_NSIDS = sorted(EXPECTED_METHODS)


def _never_crashes(call: Any, *args: Any) -> None:
    try:
        call(*args)
    except RecordValidationError as e:
        assert isinstance(e.path, str)
        assert e.reason


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(nsid=st.sampled_from(RECORD_NSIDS), value=json_values | record_like)
def test_random_values_only_raise_record_validation_error(nsid: str, value: Any) -> None:
    _never_crashes(validate_record, nsid, value)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(VALID_RECORDS)), data=st.data())
def test_mutated_valid_records_only_raise_record_validation_error(name: str, data: st.DataObject) -> None:
    record = copy.deepcopy(VALID_RECORDS[name])
    node: Any = record
    # Walk a random path into the record and replace what is there with a random value.
    for _ in range(data.draw(st.integers(0, 3))):
        if isinstance(node, dict) and node:
            key = data.draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict | list) or data.draw(st.booleans()):
                node[key] = data.draw(json_values)
                break
            node = node[key]
        elif isinstance(node, list) and node:
            i = data.draw(st.integers(0, len(node) - 1))
            if not isinstance(node[i], dict | list):
                node[i] = data.draw(json_values)
                break
            node = node[i]
    _never_crashes(validate_record, NSID_OF[name], record)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    nsid=st.sampled_from(METHOD_NSIDS),
    value=json_values | record_like,
    query=st.dictionaries(
        st.text(max_size=8) | st.sampled_from(["limit", "ownerDid", "userDid", "manifest"]),
        st.text() | st.lists(st.text(), max_size=2),
    ),
)
def test_random_xrpc_bodies_only_raise_record_validation_error(nsid: str, value: Any, query: dict[str, Any]) -> None:
    _never_crashes(validate_xrpc_input, nsid, value)
    _never_crashes(validate_xrpc_output, nsid, value)
    _never_crashes(parse_xrpc_params, nsid, query)


@settings(max_examples=300, deadline=None, database=None)
@given(fmt=st.sampled_from(sorted(lexicon._FORMATS)), value=st.text(max_size=80))
def test_format_predicates_are_total(fmt: str, value: str) -> None:
    assert lexicon._FORMATS[fmt][0](value) in {True, False}
