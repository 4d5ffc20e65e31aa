"""The proof of a manifest record, offered as an OCI referrer of the manifest; the page verdict.

For each manifest the AppView serves, `GET /v2/<name>/referrers/<digest>` also lists one
artifact of type `application/vnd.atproto.signature.v1+json`: an image manifest whose only
layer is the CAR `com.atproto.sync.getRecord` answered for the manifest record (the signed
commit, the MST path, the record), with the manifest as its `subject`. `oras discover` lists
it, `oras pull` fetches the CAR, and `atcr verify --from-registry` checks it with nothing but
the publisher's DID document: the PDS need not be reachable.

The artifact is built from the PDS on first request and kept in Valkey (the subject's pointer
for `POINTER_TTL`, the artifact's manifest and CAR by digest for `ARTIFACT_TTL`, so a client
that listed it can still fetch it after the pointer is refreshed; a PDS that could not give a
proof is asked again after `FAILED_VERDICT_TTL`). A proof stays valid after
the repo moves on: it proves the record was there at the rev it names.

The manifest page's "published by ... (verified)" is `Verifier.check` by digest, the same
check `atcr verify` runs (with a shorter timeout), cached for `VERDICT_TTL` (a failure for
`FAILED_VERDICT_TTL`, so a PDS outage does not stick).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

from atcr.errors import AtcrError, NetworkError
from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver
from atcr.oci import OCI_EMPTY_JSON, OCI_MANIFEST
from atcr.provenance import (
    CAR_MEDIA_TYPE,
    SIGNATURE_ARTIFACT_TYPE,
    ProvenanceError,
    Verification,
    build_verifier,
    tid_time,
)
from atcr.readmodel.keys import PREFIX

log = logging.getLogger("appview.provenance")

POINTER_TTL: Final = 3600
ARTIFACT_TTL: Final = 7 * 24 * 3600
VERDICT_TTL: Final = 300
FAILED_VERDICT_TTL: Final = 30
PAGE_TIMEOUT: Final = 2.0
"""Seconds a manifest page waits for the PDS/PLC (per request) before showing "not verified"."""
EMPTY_JSON: Final = b"{}"
EMPTY_DIGEST: Final = "sha256:" + hashlib.sha256(EMPTY_JSON).hexdigest()


def _key(did: str, kind: str, rest: str) -> str:
    # The DID as hash tag (one user's keys share a cluster slot, like the read model's), after a
    # prefix the near cache does not track: writing a proof must not invalidate the owner's
    # cached read model (appview/cache/near.py tracks `av:{`).
    return f"{PREFIX}prov:{{{did}}}:{kind}:{rest}"


@dataclass(frozen=True)
class Subject:
    """The manifest a proof is about, as a descriptor needs it."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True)
class Badge:
    """What the manifest page shows: who published it and whether that verified."""

    did: str
    handle: str | None
    verified: bool
    status: str
    message: str
    rev: str | None
    commit_time: str | None


def artifact_manifest(subject: Subject, car: bytes, *, did: str, uri: str, rev: str, commit: str) -> bytes:
    """The referrer: an OCI image manifest with the CAR as its one layer and `subject` set."""
    when = tid_time(rev)
    annotations = {
        "io.atcr.provenance.did": did,
        "io.atcr.provenance.uri": uri,
        "io.atcr.provenance.rev": rev,
        "io.atcr.provenance.commit": commit,
    }
    if when is not None:
        annotations["org.opencontainers.image.created"] = when.isoformat().replace("+00:00", "Z")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGNATURE_ARTIFACT_TYPE,
        "config": {"mediaType": OCI_EMPTY_JSON, "digest": EMPTY_DIGEST, "size": len(EMPTY_JSON)},
        "layers": [
            {
                "mediaType": CAR_MEDIA_TYPE,
                "digest": "sha256:" + hashlib.sha256(car).hexdigest(),
                "size": len(car),
                "annotations": {"org.opencontainers.image.title": "record-proof.car"},
            }
        ],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": annotations,
    }
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


class ProvenanceService:
    def __init__(
        self,
        valkey: Any,
        http: SafeHttpClient,
        resolver: IdentityResolver,
        *,
        plc_url: str,
        timeout: float = 5.0,
        referrers: str = "all",
    ) -> None:
        self._v = valkey
        self.referrers = referrers  # all | filtered | off (ATCR_PROVENANCE_REFERRERS)
        self.verifier = build_verifier(http, resolver, plc_url=plc_url, timeout=timeout)
        # A page must not wait on a slow PDS as long as a CLI user may choose to.
        self.page_verifier = build_verifier(http, resolver, plc_url=plc_url, timeout=min(timeout, PAGE_TIMEOUT))

    # --- the referrer --------------------------------------------------------------------------

    async def referrer(self, did: str, pds: str, repository: str, subject: Subject) -> dict[str, Any] | None:
        """The descriptor of the proof artifact of `subject`, or None when no proof can be had."""
        pointer = _key(did, "s", f"{repository}@{subject.digest}")
        cached = await self._v.get(pointer)
        if cached is not None:
            try:
                desc: dict[str, Any] | None = json.loads(cached)
                return desc  # None: no proof could be had a moment ago
            except ValueError:
                pass
        try:
            # A listing must not wait on a slow PDS for long: the page verifier's short timeout.
            async with asyncio.timeout(PAGE_TIMEOUT * 1.5):
                proof = await self.page_verifier.manifest_proof(pds, did, repository, subject.digest)
        except (ProvenanceError, NetworkError, TimeoutError) as exc:
            log.info("no provenance referrer for %s/%s@%s: %s", did, repository, subject.digest, exc or "timed out")
            await self._v.set(pointer, "null", ex=FAILED_VERDICT_TTL)
            return None
        raw = artifact_manifest(
            subject, proof.car, did=did, uri=proof.uri, rev=proof.rev, commit=proof.commit_cid
        )
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        car_digest = "sha256:" + hashlib.sha256(proof.car).hexdigest()
        doc = json.loads(raw)
        desc = {
            "mediaType": OCI_MANIFEST,
            "digest": digest,
            "size": len(raw),
            "artifactType": SIGNATURE_ARTIFACT_TYPE,
            "annotations": doc["annotations"],
        }
        async with self._v.pipeline(transaction=False) as pipe:
            pipe.set(_key(did, "m", digest), raw, ex=ARTIFACT_TTL)
            pipe.set(_key(did, "b", car_digest), proof.car, ex=ARTIFACT_TTL)
            pipe.set(pointer, json.dumps(desc), ex=POINTER_TTL)
            await pipe.execute()
        return desc

    async def manifest(self, did: str, digest: str) -> bytes | None:
        """The bytes of a proof artifact this AppView listed (by its digest)."""
        raw = await self._v.get(_key(did, "m", digest))
        return bytes(raw) if raw is not None else None

    async def blob(self, did: str, digest: str) -> bytes | None:
        """A proof CAR this AppView listed, or the empty config blob."""
        if digest == EMPTY_DIGEST:
            return EMPTY_JSON
        raw = await self._v.get(_key(did, "b", digest))
        return bytes(raw) if raw is not None else None

    # --- the page verdict ----------------------------------------------------------------------

    async def badge(self, did: str, repository: str, digest: str) -> Badge | None:
        """The verdict for the manifest page (cached); None only if it cannot be computed at all."""
        key = _key(did, "v", f"{repository}@{digest}")
        try:
            cached = await self._v.get(key)
            if cached is not None:
                return Badge(**json.loads(cached))
            result: Verification = await self.page_verifier.check(did, repository, digest=digest)
            badge = Badge(
                did=result.did or did, handle=result.handle, verified=result.ok, status=str(result.status),
                message=result.message, rev=result.rev, commit_time=result.commit_time,
            )
            await self._v.set(key, json.dumps(badge.__dict__), ex=VERDICT_TTL if badge.verified else FAILED_VERDICT_TTL)
            return badge
        except (AtcrError, OSError, ValueError, TypeError) as exc:
            log.warning("provenance verdict for %s/%s@%s failed: %s", did, repository, digest, exc)
            return None
