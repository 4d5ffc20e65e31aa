"""Records as found in PDSes -> the normalized entries the read model stores.

Records written by any ATCR AppView are read the same way (ATCR-NOTES.md §3.1, §7): tags that
point at the manifest by AT-URI or only by ``manifestDigest``, under any rkey; manifests that
name their hold by ``holdDid`` or by a legacy ``holdEndpoint`` URL; stars with an AT-URI or a
legacy ``{did, repository}`` subject. Records that cannot be read (no repository, bad digest)
are skipped instead of half-stored: they would only produce entries no route could serve.

Each `normalize` result is a pointer (the few strings the apply script needs to find and undo
derived entries later, when only an rkey is known) plus the payload stored for readers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from atcr.errors import InvalidIdentifier
from atcr.identity import did_web_for_url
from atcr.readmodel import keys
from atcr.syntax import is_did, is_oci_repository, is_oci_tag

_DIGEST = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_AT_URI = re.compile(r"^at://([^/]+)/([^/]+)/([^/#?]+)$")


@dataclass(frozen=True)
class Normalized:
    """What the apply script needs: the kind of derived state, its pointer and its payload."""

    kind: str
    ptr: dict[str, str]
    payload: str

    @property
    def ptr_json(self) -> str:
        return dumps(self.ptr)


def dumps(value: Any) -> str:
    """Compact, key-sorted JSON: equal values give equal strings (the apply script compares them)."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def is_digest(value: object) -> bool:
    return isinstance(value, str) and bool(_DIGEST.match(value))


def timestamp_ms(value: object) -> int:
    """Milliseconds of an RFC 3339 datetime; 0 when absent or unparsable (sorts oldest)."""
    if not isinstance(value, str) or not value:
        return 0
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except (ValueError, OverflowError):
        return 0


def hold_did_of(record: dict[str, Any]) -> str | None:
    """``holdDid``, else the did:web of a legacy ``holdEndpoint`` URL (what ATCR's processor does)."""
    hold = record.get("holdDid")
    if isinstance(hold, str) and is_did(hold):
        return hold
    endpoint = record.get("holdEndpoint")
    if isinstance(endpoint, str) and endpoint:
        if is_did(endpoint):  # some legacy records put the DID itself in the endpoint field
            return endpoint
        try:
            return did_web_for_url(endpoint)
        except InvalidIdentifier:
            return None
    return None


def blob_cid(blob: object) -> str | None:
    """The CID of a blob ref: ``{"$type":"blob","ref":{"$link":cid}}`` or the legacy ``{"cid":...}``."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
        return str(ref["$link"])
    if isinstance(ref, str):
        return ref
    cid = blob.get("cid")
    return cid if isinstance(cid, str) else None


def parse_at_uri(uri: object) -> tuple[str, str, str] | None:
    """(authority, collection, rkey) of a record AT-URI."""
    if not isinstance(uri, str):
        return None
    m = _AT_URI.match(uri)
    return (m.group(1), m.group(2), m.group(3)) if m else None


def tag_digest(record: dict[str, Any]) -> tuple[str, str | None]:
    """(digest or "", manifest rkey when the digest must be looked up by it).

    The ``manifest`` AT-URI wins; its rkey is the digest hex under ATCR's convention. A URI
    whose rkey is not hex (a TID) names the record only, so the digest comes from
    ``manifestDigest`` when present, else from the manifest record at read time.
    """
    parsed = parse_at_uri(record.get("manifest"))
    if parsed is not None and parsed[1] == keys.MANIFEST:
        from_rkey = keys.digest_from_rkey(parsed[2])
        if from_rkey:
            return from_rkey, None
        legacy = record.get("manifestDigest")
        return (str(legacy), None) if is_digest(legacy) else ("", parsed[2])
    legacy = record.get("manifestDigest")
    return (str(legacy), None) if is_digest(legacy) else ("", None)


def star_subject(record: dict[str, Any]) -> tuple[str, str] | None:
    """(owner DID, repository) of a star: AT-URI of the repo page, or legacy ``{did, repository}``."""
    subject = record.get("subject")
    if isinstance(subject, str):
        parsed = parse_at_uri(subject)
        # A nested repository's page rkey spells its "/" as ":" (record keys cannot hold "/",
        # repository names cannot hold ":"): see appview.web.ui.page_rkey.
        name = parsed[2].replace(":", "/") if parsed else ""
        if parsed and is_did(parsed[0]) and is_oci_repository(name):
            return parsed[0], name
        return None
    if isinstance(subject, dict):
        did, repo = subject.get("did"), subject.get("repository")
        if isinstance(did, str) and is_did(did) and isinstance(repo, str) and is_oci_repository(repo):
            return did, repo
    return None


_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAILY_FIELDS = ("dailyPulls", "pullsByDay", "daily")
DAILY_KEEP = 90


def daily_pulls(record: dict[str, Any]) -> dict[str, int]:
    """Pulls per UTC day from a hold stats record, for the UI's 30-day sparkline.

    Accepts a list of ``{date|day, count|pulls|pullCount}`` objects or a ``{"YYYY-MM-DD": n}``
    map under ``dailyPulls`` / ``pullsByDay`` / ``daily``; keeps the newest `DAILY_KEEP` days.
    Absent or malformed: empty (the counters above still count).
    """
    raw: Any = next((record[f] for f in DAILY_FIELDS if f in record), None)
    pairs: list[tuple[Any, Any]] = []
    if isinstance(raw, dict):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        for item in raw:
            if isinstance(item, dict):
                day = item.get("date", item.get("day"))
                n = next((item[k] for k in ("count", "pulls", "pullCount") if k in item), None)
                pairs.append((day, n))
    out: dict[str, int] = {}
    for day, n in pairs:
        if isinstance(day, str) and _DAY.match(day[:10]) and isinstance(n, int) and not isinstance(n, bool) and n > 0:
            out[day[:10]] = out.get(day[:10], 0) + n
    return dict(sorted(out.items())[-DAILY_KEEP:])


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def manifest_payload(did: str, rkey: str, record: dict[str, Any], cid: str | None) -> dict[str, Any] | None:
    repo, digest = record.get("repository"), record.get("digest")
    if not (isinstance(repo, str) and is_oci_repository(repo) and is_digest(digest)):
        return None
    subject = record.get("subject")
    subject_digest = subject.get("digest") if isinstance(subject, dict) else None
    config = record.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    artifact_type = record.get("artifactType") if isinstance(record.get("artifactType"), str) else config_type
    raw_annotations = record.get("annotations")
    annotations = (
        {k: v for k, v in raw_annotations.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(raw_annotations, dict)
        else {}
    )
    blob = record.get("manifestBlob")
    size = blob.get("size") if isinstance(blob, dict) else None
    return {
        "did": did,
        "repository": repo,
        "digest": digest,
        "media_type": _str(record.get("mediaType")),
        "hold_did": hold_did_of(record),
        "record": record,
        "cid": cid,
        "subject_digest": subject_digest if is_digest(subject_digest) else None,
        "artifact_type": artifact_type if isinstance(artifact_type, str) and artifact_type else None,
        "annotations": annotations,
        "size": size if isinstance(size, int) and size >= 0 else 0,
        "created_at": _str(record.get("createdAt")),
        "rkey": rkey,
        "blob_cid": blob_cid(blob),
    }


def normalize(did: str, collection: str, rkey: str, record: dict[str, Any], cid: str | None) -> Normalized | None:
    """The stored form of one record, or None when the model does not keep it."""
    if collection == keys.MANIFEST:
        entry = manifest_payload(did, rkey, record, cid)
        if entry is None:
            return None
        ptr = {"repo": entry["repository"], "dg": entry["digest"], "ts": str(timestamp_ms(entry["created_at"]))}
        if entry["subject_digest"]:
            ptr["sub"] = entry["subject_digest"]
        return Normalized("manifest", ptr, dumps(entry))

    if collection == keys.TAG:
        repo, tag = record.get("repository"), record.get("tag")
        if not (isinstance(repo, str) and is_oci_repository(repo) and isinstance(tag, str) and is_oci_tag(tag)):
            return None
        digest, manifest_rkey = tag_digest(record)
        updated = _str(record.get("updatedAt")) or _str(record.get("createdAt"))
        payload = {
            "tag": tag,
            "digest": digest,
            "rkey": rkey,
            "cid": cid,
            "updated_at": updated,
            "manifest_uri": record.get("manifest") if isinstance(record.get("manifest"), str) else None,
            "manifest_rkey": manifest_rkey,
        }
        return Normalized("tag", {"repo": repo, "tag": tag, "ts": str(timestamp_ms(updated))}, dumps(payload))

    if collection in (keys.PROFILE, keys.CAPTAIN):
        if rkey != "self":
            return None
        name = "profile" if collection == keys.PROFILE else "captain"
        return Normalized("single", {"k": name}, dumps({"record": record, "cid": cid}))

    if collection == keys.BSKY_PROFILE:
        if rkey != "self":
            return None
        avatar = record.get("avatar")
        payload = {
            "display_name": record.get("displayName") if isinstance(record.get("displayName"), str) else None,
            "avatar_cid": blob_cid(avatar),
            "avatar_mime": avatar.get("mimeType") if isinstance(avatar, dict) else None,
        }
        return Normalized("single", {"k": "bsky"}, dumps(payload))

    if collection == keys.REPO_PAGE:
        repo = record.get("repository")
        if not isinstance(repo, str) or not repo:
            repo = rkey
        if not is_oci_repository(repo):
            return None
        return Normalized("page", {"repo": repo}, dumps({"record": record, "cid": cid, "rkey": rkey}))

    if collection == keys.CREW:
        member = record.get("member")
        if not (isinstance(member, str) and is_did(member)):
            return None
        perms = record.get("permissions")
        payload = {
            "member": member,
            "role": _str(record.get("role")),
            "permissions": [p for p in perms if isinstance(p, str)] if isinstance(perms, list) else [],
            "rkey": rkey,
            "tier": record.get("tier") if isinstance(record.get("tier"), str) else None,
            "added_at": _str(record.get("addedAt")),
        }
        return Normalized("crew", {"m": member}, dumps(payload))

    if collection == keys.STAR:
        subject = star_subject(record)
        if subject is None:
            return None
        return Normalized("star", {"s": f"{subject[0]}/{subject[1]}"}, "")

    if collection == keys.STATS:
        owner, repo = record.get("ownerDid"), record.get("repository")
        if not (isinstance(owner, str) and is_did(owner) and isinstance(repo, str) and is_oci_repository(repo)):
            return None

        def count(name: str) -> int:
            value = record.get(name)
            return value if isinstance(value, int) and value >= 0 else 0

        counters: dict[str, Any] = {
            "pull": count("pullCount"),
            "push": count("pushCount"),
            "last_pull": record.get("lastPull") if isinstance(record.get("lastPull"), str) else None,
            "last_push": record.get("lastPush") if isinstance(record.get("lastPush"), str) else None,
        }
        daily = daily_pulls(record)
        if daily:
            counters["daily"] = daily
        return Normalized("stats", {"o": owner, "repo": repo}, dumps(counters))

    return None
