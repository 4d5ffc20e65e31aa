"""Where the OCI API meets scan results (appview/oci/routes.py only calls these three).

`viewer` is the pulling user (the registry token's subject, None when anonymous): a private
hold's documents are listed and served only when the hold lets that user read them.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from litestar import Response

from appview.errors import RegistryError
from atcr.errors import AtcrError
from atcr.oci import OCI_MANIFEST

if TYPE_CHECKING:
    from appview.oci.registry import Registry, RepoRef
    from appview.scans.service import ScanResults

log = logging.getLogger("appview.scans")

_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}


async def scan_referrers(
    scans: ScanResults | None, registry: Registry, repo: RepoRef, digest: str, artifact_type: str | None,
    viewer: str | None = None,
) -> list[dict[str, Any]]:
    if scans is None:
        return []
    try:
        entry = await registry.get_manifest(repo, digest)
    except RegistryError:
        return []
    if not entry.hold_did:
        return []
    subject = {"mediaType": entry.media_type or OCI_MANIFEST, "digest": entry.digest, "size": len(entry.raw)}
    try:
        return await scans.referrers(repo.did, repo.repository, entry.hold_did, subject, artifact_type, viewer)
    except (AtcrError, OSError) as exc:
        log.warning("scan referrers of %s@%s: %s", repo.name, digest, exc)
        return []


async def scan_manifest(
    scans: ScanResults | None, repo: RepoRef, reference: str, *, head: bool, viewer: str | None = None
) -> Response[Any] | None:
    if scans is None or not reference.startswith("sha256:"):
        return None
    raw = await scans.manifest(repo.did, reference, viewer)
    if raw is None:
        return None
    headers = {**_HEADERS, "Docker-Content-Digest": reference, "Content-Length": str(len(raw))}
    return Response(b"" if head else raw, status_code=200, headers=headers, media_type=OCI_MANIFEST)


async def scan_blob(
    scans: ScanResults | None, repo: RepoRef, digest: str, *, head: bool, viewer: str | None = None
) -> Response[Any] | None:
    if scans is None or not digest.startswith("sha256:"):
        return None
    data = await scans.blob(repo.did, digest, viewer)
    if data is None:
        return None
    headers = {**_HEADERS, "Docker-Content-Digest": digest, "Content-Length": str(len(data))}
    media_type = "application/vnd.oci.empty.v1+json" if data == b"{}" else _document_type(data)
    return Response(b"" if head else data, status_code=200, headers=headers, media_type=media_type)


def _document_type(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except ValueError:
        return "application/octet-stream"
    if isinstance(doc, dict) and "spdxVersion" in doc:
        return "application/spdx+json"
    return "application/vnd.atcr.vulnerabilities+json"
