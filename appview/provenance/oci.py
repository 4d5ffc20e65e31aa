"""The three places the OCI API meets provenance, kept here so appview/oci/routes.py only calls them.

* `proof_referrers`: the signature artifact of a manifest, appended to its referrers list;
* `proof_manifest`: a `GET /v2/<name>/manifests/<digest>` the registry does not know, answered
  with the artifact's bytes when it is one this AppView listed;
* `proof_blob`: the same for the artifact's CAR layer (and its empty config blob).

The artifact is served only under the repository of its subject's owner (the DID in the key).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from litestar import Response

from appview.errors import RegistryError
from atcr.errors import AtcrError
from atcr.oci import OCI_MANIFEST
from atcr.provenance import CAR_MEDIA_TYPE, SIGNATURE_ARTIFACT_TYPE

if TYPE_CHECKING:
    from appview.oci.registry import Registry, RepoRef
    from appview.provenance.service import ProvenanceService

log = logging.getLogger("appview.provenance")

_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}


async def proof_referrers(
    provenance: ProvenanceService | None, registry: Registry, repo: RepoRef, digest: str, artifact_type: str | None
) -> list[dict[str, Any]]:
    """[the descriptor of the proof artifact] when the filter admits it and a proof exists."""
    if provenance is None or provenance.referrers == "off":
        return []
    if artifact_type != SIGNATURE_ARTIFACT_TYPE and (artifact_type or provenance.referrers != "all"):
        return []
    try:
        entry = await registry.get_manifest(repo, digest)
    except RegistryError:
        return []  # not a manifest of this repository: nothing to prove
    from appview.provenance.service import Subject

    subject = Subject(digest=entry.digest, media_type=entry.media_type or OCI_MANIFEST, size=len(entry.raw))
    try:
        desc = await provenance.referrer(repo.did, repo.pds, repo.repository, subject)
    except (AtcrError, OSError) as exc:
        log.warning("provenance referrer of %s@%s: %s", repo.name, digest, exc)
        return []
    return [desc] if desc is not None else []


async def proof_manifest(
    provenance: ProvenanceService | None, repo: RepoRef, reference: str, *, head: bool
) -> Response[Any] | None:
    if provenance is None or not reference.startswith("sha256:"):
        return None
    raw = await provenance.manifest(repo.did, reference)
    if raw is None:
        return None
    headers = {**_HEADERS, "Docker-Content-Digest": reference, "Content-Length": str(len(raw))}
    return Response(b"" if head else raw, status_code=200, headers=headers, media_type=OCI_MANIFEST)


async def proof_blob(
    provenance: ProvenanceService | None, repo: RepoRef, digest: str, *, head: bool
) -> Response[Any] | None:
    if provenance is None or not digest.startswith("sha256:"):
        return None
    data = await provenance.blob(repo.did, digest)
    if data is None:
        return None
    headers = {**_HEADERS, "Docker-Content-Digest": digest, "Content-Length": str(len(data))}
    media_type = "application/vnd.oci.empty.v1+json" if data == b"{}" else CAR_MEDIA_TYPE
    return Response(b"" if head else data, status_code=200, headers=headers, media_type=media_type)
