"""A hold's `io.atcr.hold.scan` record of a manifest, offered as two OCI referrers.

The hold writes the record (rkey = digest hex) with the SBOM and the vulnerability report as
blobs of its own repo; their CIDs are raw sha2-256, so each blob's OCI digest is the same
hash. For a scanned manifest the referrers list gains two image manifests, synthesized from
the record (the user pushes nothing): one per document, with the document as its one layer,
the manifest as `subject`, `artifactType` the document's type. They are built from the
record's fields only, so their digests are stable for as long as the record is. Their bytes
are kept in Valkey by digest (like the provenance artifact) so `GET /v2/<name>/manifests/<d>`
finds them, and a layer's bytes are fetched from the hold's `getBlob` when asked for.

The record is cached for RECORD_TTL (a missing one for MISSING_TTL, so a scan that finishes
shows up soon). A record is used only when it names the repository's owner and repository.

A private hold's repo records are public (they replicate like any PDS's), but the documents
are not: its `getBlob` wants a service token of a DID that may read (captain or crew). So
every document fetch goes first without a token and, when the hold refuses, again with one
minted for the viewer (the registry token's subject, or the signed-in web viewer) through
their PDS session. Whether a viewer may see a hold's documents (its *access*) decides whether
referrers are listed, artifacts download and pages show findings; it is cached per hold as
"public" when the hold answered without a token (anyone may then use it) and otherwise per
viewer, so one user's authorized answer is never served to another.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

from atcr.dagcbor import RAW, SHA2_256, Cid
from atcr.errors import AtcrError
from atcr.http import SafeHttpClient
from atcr.oci import OCI_EMPTY_JSON, OCI_MANIFEST
from atcr.readmodel.keys import PREFIX

log = logging.getLogger("appview.scans")

SBOM_TYPE: Final = "application/spdx+json"
REPORT_TYPE: Final = "application/vnd.atcr.vulnerabilities+json"
SCAN: Final = "io.atcr.hold.scan"
RECORD_TTL: Final = 60
MISSING_TTL: Final = 10
ARTIFACT_TTL: Final = 7 * 24 * 3600
MAX_DOCUMENT: Final = 64 * 1024 * 1024
EMPTY_JSON: Final = b"{}"
EMPTY_DIGEST: Final = "sha256:" + hashlib.sha256(EMPTY_JSON).hexdigest()
NSID_GET_BLOB: Final = "com.atproto.sync.getBlob"
PUBLIC: Final = "public"  # the hold serves the documents to anyone
GRANTED: Final = "granted"  # the hold serves them to this viewer's service token
PRIVATE: Final = "private"  # the hold refuses this viewer (anonymous, or not crew)
Access = Literal["public", "granted", "private"]
_VERDICTS: Final[dict[str, Access]] = {PUBLIC: PUBLIC, GRANTED: GRANTED, PRIVATE: PRIVATE}
# (user DID, hold DID, lxm) -> the Authorization header of a service token minted for that user.
Authorizer = Callable[[str, str, str], Awaitable[dict[str, str]]]
DOCUMENTS: Final = (("sbomBlob", SBOM_TYPE, "sbom.spdx.json"), ("vulnReportBlob", REPORT_TYPE, "vulnerabilities.json"))


def _key(did: str, kind: str, rest: str) -> str:
    return f"{PREFIX}scan:{{{did}}}:{kind}:{rest}"


async def forget_account(valkey: Any, did: str) -> int:
    """Drop the account's cached scan records and synthesized artifacts ("delete my data")."""
    found = [k async for k in valkey.scan_iter(match=f"{PREFIX}scan:{{{did}}}:*", count=500)]
    for key in found:  # one key at a time: a cluster client needs no cross-slot delete
        await valkey.delete(key)
    return len(found)


def blob_digest(blob: Any) -> tuple[str, int] | None:
    """(sha256 digest, size) of a record's blob object with a raw sha2-256 CID, else None."""
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    link = ref.get("$link") if isinstance(ref, dict) else None
    size = blob.get("size")
    if not isinstance(link, str) or not isinstance(size, int):
        return None
    try:
        raw = Cid.parse(link).raw
    except ValueError:
        return None
    if len(raw) != 36 or raw[1] != RAW or raw[2:4] != bytes((SHA2_256, 32)):
        return None
    return "sha256:" + raw[4:].hex(), size


def artifact(subject: dict[str, Any], record: dict[str, Any], field: str, media_type: str, title: str,
             hold_did: str) -> bytes | None:
    found = blob_digest(record.get(field))
    if found is None:
        return None
    digest, size = found
    annotations = {
        "org.opencontainers.image.created": str(record.get("scannedAt", "")),
        "io.atcr.scan.hold": hold_did,
        "io.atcr.scan.scanner": str(record.get("scannerVersion", "")),
    }
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": media_type,
        "config": {"mediaType": OCI_EMPTY_JSON, "digest": EMPTY_DIGEST, "size": len(EMPTY_JSON)},
        "layers": [{"mediaType": media_type, "digest": digest, "size": size,
                    "annotations": {"org.opencontainers.image.title": title}}],
        "subject": subject,
        "annotations": annotations,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ScanResults:
    def __init__(self, valkey: Any, http: SafeHttpClient, endpoint: Any, authorize: Authorizer | None = None) -> None:
        self._v = valkey
        self._http = http
        self._endpoint = endpoint  # async (hold_did) -> base URL (HoldClient.endpoint)
        self._authorize = authorize  # HoldClient.service_headers; None: private documents stay unread

    async def _get(self, hold_did: str, nsid: str, params: dict[str, str]) -> Any:
        base = await self._endpoint(hold_did)
        resp = await self._http.get(f"{base}/xrpc/{nsid}", params=params)
        if resp.status_code != 200:
            return None
        return resp.json()

    async def record(self, hold_did: str, did: str, repository: str, digest: str) -> dict[str, Any] | None:
        """The hold's scan record of `digest` when it is about this owner's repository."""
        key = _key(did, "r", f"{hold_did}|{digest}")
        cached = await self._v.get(key)
        if cached is not None:
            value = json.loads(cached)
        else:
            try:
                body = await self._get(hold_did, "com.atproto.repo.getRecord",
                                       {"repo": hold_did, "collection": SCAN, "rkey": digest.removeprefix("sha256:")})
            except (AtcrError, ValueError) as exc:
                log.info("scan record of %s on %s: %s", digest, hold_did, exc)
                return None
            value = body.get("value") if isinstance(body, dict) else None
            await self._v.set(key, json.dumps(value), ex=RECORD_TTL if value else MISSING_TTL)
        if not isinstance(value, dict) or value.get("userDid") != did or value.get("repository") != repository:
            return None
        return value

    async def status(self, hold_did: str, digest: str) -> dict[str, Any] | None:
        """The hold's getScanStatus answer (queued / scanning / done / failed / none), uncached."""
        try:
            body = await self._get(hold_did, "io.atcr.hold.getScanStatus", {"digest": digest})
        except (AtcrError, ValueError):
            return None
        return body if isinstance(body, dict) else None

    async def document(self, hold_did: str, record: dict[str, Any], field: str, viewer: str | None = None) -> Any:
        """One of the record's JSON documents, parsed (None when the hold does not give it to `viewer`)."""
        found = blob_digest(record.get(field))
        if found is None:
            return None
        owner = str(record.get("userDid", ""))
        _, data = await self._fetch(owner, hold_did, found[0], viewer)
        try:
            return json.loads(data) if data is not None else None
        except ValueError:
            return None

    async def access(self, owner: str, hold_did: str, record: dict[str, Any], viewer: str | None) -> Access | None:
        """Whether `viewer` may read the record's documents on the hold (None: the hold did not say)."""
        for field, _, _ in DOCUMENTS:
            found = blob_digest(record.get(field))
            if found is not None:
                return await self._access(owner, hold_did, found[0], viewer)
        return None

    async def _access(self, owner: str, hold_did: str, probe: str, viewer: str | None) -> Access | None:
        for who in ("*", viewer or "-"):
            cached = await self._v.get(_key(owner, "a", f"{hold_did}|{who}"))
            if cached is not None:
                known = _VERDICTS.get(_text(cached))
                if known is not None:
                    return known
        state, _ = await self._fetch(owner, hold_did, probe, viewer)
        return state

    async def _fetch(
        self, owner: str, hold_did: str, digest: str, viewer: str | None
    ) -> tuple[Access | None, bytes | None]:
        """A document's bytes and the access the hold's answer showed; the access is cached."""
        cid = str(Cid(bytes((1, RAW, SHA2_256, 32)) + bytes.fromhex(digest.removeprefix("sha256:"))))
        try:
            base = await self._endpoint(hold_did)
            url, params = f"{base}/xrpc/{NSID_GET_BLOB}", {"did": hold_did, "cid": cid}
            # Bounded, and redirects followed (through the guard): an ATCR hold may answer with one.
            resp = await self._http.request("GET", url, params=params, max_bytes=MAX_DOCUMENT)
            state: Access = PUBLIC
            if resp.status_code in (401, 403):
                state = PRIVATE
                headers = await self._headers(viewer, hold_did)
                if headers is None:
                    return None, None  # the viewer's PDS failed: nothing is known, nothing cached
                if headers:
                    resp = await self._http.request("GET", url, params=params, headers=headers, max_bytes=MAX_DOCUMENT)
                    state = PRIVATE if resp.status_code in (401, 403) else GRANTED
        except AtcrError as exc:
            log.info("scan document %s on %s: %s", digest, hold_did, exc)
            return None, None
        data = resp.content
        wrong = "sha256:" + hashlib.sha256(data).hexdigest() != digest
        if state != PRIVATE and (resp.status_code != 200 or len(data) > MAX_DOCUMENT or wrong):
            return None, None  # the hold failed or has no such blob: it said nothing about access
        if state == PUBLIC:
            await self._v.set(_key(owner, "a", f"{hold_did}|*"), PUBLIC, ex=RECORD_TTL)
        else:
            await self._v.set(_key(owner, "a", f"{hold_did}|{viewer or '-'}"), state, ex=RECORD_TTL)
        return state, None if state == PRIVATE else data

    async def _headers(self, viewer: str | None, hold_did: str) -> dict[str, str] | None:
        """The viewer's service token for getBlob; {} when anonymous or their PDS will not mint one
        (no session, refused), None when their PDS failed (so a passing outage is not cached)."""
        if viewer is None or self._authorize is None:
            return {}
        try:
            return await self._authorize(viewer, hold_did, NSID_GET_BLOB)
        except AtcrError as exc:
            log.info("service token of %s for %s: %s", viewer, hold_did, exc)
            return None if getattr(exc, "status", 0) >= 500 else {}

    async def referrers(
        self, did: str, repository: str, hold_did: str, subject: dict[str, Any], artifact_type: str | None,
        viewer: str | None = None,
    ) -> list[dict[str, Any]]:
        """The artifacts of the manifest's scan, when the hold lets `viewer` (the puller) read them."""
        if artifact_type and artifact_type not in (SBOM_TYPE, REPORT_TYPE):
            return []
        record = await self.record(hold_did, did, repository, str(subject["digest"]))
        if record is None or await self.access(did, hold_did, record, viewer) not in (PUBLIC, GRANTED):
            return []
        out = []
        async with self._v.pipeline(transaction=False) as pipe:
            for field, media_type, title in DOCUMENTS:
                if artifact_type and artifact_type != media_type:
                    continue
                raw = artifact(subject, record, field, media_type, title, hold_did)
                if raw is None:
                    continue
                digest = "sha256:" + hashlib.sha256(raw).hexdigest()
                layer = json.loads(raw)["layers"][0]["digest"]
                pipe.set(_key(did, "m", digest), raw, ex=ARTIFACT_TTL)
                pipe.set(_key(did, "b", layer), hold_did, ex=ARTIFACT_TTL)
                out.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(raw), "artifactType": media_type,
                            "annotations": json.loads(raw)["annotations"]})
            await pipe.execute()
        return out

    async def manifest(self, did: str, digest: str, viewer: str | None = None) -> bytes | None:
        """An artifact this AppView listed, when its hold lets `viewer` read the document in it."""
        raw = await self._v.get(_key(did, "m", digest))
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            hold_did, layer = str(doc["annotations"]["io.atcr.scan.hold"]), str(doc["layers"][0]["digest"])
        except (ValueError, KeyError, IndexError, TypeError):
            return None
        if await self._access(did, hold_did, layer, viewer) not in (PUBLIC, GRANTED):
            return None
        return bytes(raw)

    async def blob(self, did: str, digest: str, viewer: str | None = None) -> bytes | None:
        """A document layer of an artifact this AppView listed (or the empty config), as `viewer` may."""
        if digest == EMPTY_DIGEST:
            return EMPTY_JSON
        hold = await self._v.get(_key(did, "b", digest))
        if hold is None:
            return None
        _, data = await self._fetch(did, _text(hold), digest, viewer)
        return data
