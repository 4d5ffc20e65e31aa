"""OCI/Docker manifests: media types, strict parsing, and the `io.atcr.manifest` record shape.

Parsing is strict about what the registry relies on (descriptor digests, sizes, media types,
the subject) and lenient about everything else, so any conformant client's manifest is
accepted and its exact bytes stored unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from atcr import jsonbound
from atcr.digest import Digest, InvalidDigest
from atcr.errors import AtcrError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_EMPTY_JSON = "application/vnd.oci.empty.v1+json"

IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = IMAGE_TYPES | INDEX_TYPES

NON_DISTRIBUTABLE_LAYERS = frozenset({
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
})
"""Layers that by design live outside registries (Windows base layers): fetched from `urls`."""

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
IMAGE_CONFIGS = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)


class InvalidManifest(AtcrError):
    """The manifest is not one the registry can store (the message says why)."""


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Mapping[str, Any] | None = None
    artifact_type: str | None = None
    urls: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        """The `#blobReference` / `#manifestReference` lexicon shape."""
        out: dict[str, Any] = {"mediaType": self.media_type, "size": self.size, "digest": self.digest}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            plat: dict[str, Any] = {
                "architecture": str(self.platform.get("architecture", "")),
                "os": str(self.platform.get("os", "")),
            }
            if self.platform.get("variant"):
                plat["variant"] = str(self.platform["variant"])
            if self.platform.get("os.version"):
                plat["osVersion"] = str(self.platform["os.version"])
            if isinstance(self.platform.get("os.features"), list):
                plat["osFeatures"] = [str(x) for x in self.platform["os.features"]]
            out["platform"] = plat
        return out

    def to_oci(self) -> dict[str, Any]:
        """The descriptor as OCI JSON (referrers responses)."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest plus the exact bytes it came from."""

    raw: bytes
    digest: str
    media_type: str
    schema_version: int
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None
    annotations: Mapping[str, str]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def blob_references(self) -> list[Descriptor]:
        """Blobs that must exist before the manifest is accepted (config and layers).

        A non-distributable layer that says where to fetch it (`urls`) is not one of them:
        clients never push it, and distribution accepts such manifests without it.
        """
        refs = [d for d in self.layers if not (d.media_type in NON_DISTRIBUTABLE_LAYERS and d.urls)]
        if self.config is not None:
            refs.insert(0, self.config)
        return refs

    def effective_artifact_type(self) -> str | None:
        """What referrers report: `artifactType`, else the config media type (OCI 1.1)."""
        if self.artifact_type:
            return self.artifact_type
        if self.config is not None:
            return self.config.media_type
        return None

    def to_record(
        self,
        *,
        repository: str,
        hold_did: str | None,
        manifest_blob: Mapping[str, Any] | None,
        created_at: str,
    ) -> dict[str, Any]:
        """The `io.atcr.manifest` record, ATCR field names."""
        rec: dict[str, Any] = {
            "repository": repository,
            "digest": self.digest,
            "mediaType": self.media_type,
            "schemaVersion": self.schema_version,
            "createdAt": created_at,
        }
        if hold_did:
            rec["holdDid"] = hold_did
        if self.config is not None:
            rec["config"] = self.config.to_record()
        if self.layers:
            rec["layers"] = [d.to_record() for d in self.layers]
        if self.manifests:
            rec["manifests"] = [d.to_record() for d in self.manifests]
        if self.subject is not None:
            rec["subject"] = self.subject.to_record()
        if self.annotations:
            rec["annotations"] = dict(self.annotations)
        if self.artifact_type:
            rec["artifactType"] = self.artifact_type
        if manifest_blob is not None:
            rec["manifestBlob"] = dict(manifest_blob)
        return rec


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidManifest(f"{where}: annotations must map strings to strings")
    return dict(value)


def _descriptor(value: Any, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise InvalidManifest(f"{where}: must be an object")
    media_type = value.get("mediaType")
    digest = value.get("digest")
    size = value.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise InvalidManifest(f"{where}.mediaType: required")
    if not isinstance(digest, str):
        raise InvalidManifest(f"{where}.digest: required")
    try:
        Digest.parse(digest)
    except InvalidDigest:
        raise InvalidManifest(f"{where}.digest: {digest[:80]!r} is not a valid digest") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidManifest(f"{where}.size: must be a non-negative integer")
    platform = value.get("platform")
    if platform is not None and not isinstance(platform, dict):
        raise InvalidManifest(f"{where}.platform: must be an object")
    urls = value.get("urls") or []
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise InvalidManifest(f"{where}.urls: must be a list of strings")
    artifact_type = value.get("artifactType")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        annotations=_str_map(value.get("annotations"), where),
        platform=platform,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        urls=tuple(urls),
    )


def parse_manifest(raw: bytes, content_type: str | None, digest_algorithm: str = "sha256") -> Manifest:
    """Parse and check a pushed manifest.

    The media type comes from the document's `mediaType` when present and must then agree
    with `Content-Type`; a document without one takes the header's (OCI allows that).
    """
    try:
        doc = jsonbound.loads(raw)
    except jsonbound.JsonTooDeep as exc:
        raise InvalidManifest(f"manifest is not acceptable JSON: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise InvalidManifest("manifest is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("manifest must be a JSON object")
    header_type = (content_type or "").split(";", 1)[0].strip()
    doc_type = doc.get("mediaType")
    if doc_type is not None and not isinstance(doc_type, str):
        raise InvalidManifest("mediaType must be a string")
    media_type = doc_type or header_type
    if not media_type:
        media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
    if doc_type and header_type and header_type != doc_type and header_type in MANIFEST_TYPES:
        raise InvalidManifest(f"Content-Type {header_type} does not match mediaType {doc_type}")
    if media_type not in MANIFEST_TYPES:
        raise InvalidManifest(f"unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise InvalidManifest("schemaVersion must be 2")

    config = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    if media_type in IMAGE_TYPES:
        if "config" not in doc:
            raise InvalidManifest("config: required for an image manifest")
        config = _descriptor(doc["config"], "config")
        raw_layers = doc.get("layers", [])
        if not isinstance(raw_layers, list):
            raise InvalidManifest("layers: must be a list")
        layers = tuple(_descriptor(x, f"layers[{i}]") for i, x in enumerate(raw_layers))
    else:
        raw_manifests = doc.get("manifests")
        if not isinstance(raw_manifests, list):
            raise InvalidManifest("manifests: required list for an index")
        manifests = tuple(_descriptor(x, f"manifests[{i}]") for i, x in enumerate(raw_manifests))
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise InvalidManifest("artifactType must be a string")
    return Manifest(
        raw=raw,
        digest=str(Digest.of(raw, digest_algorithm)),
        media_type=media_type,
        schema_version=2,
        config=config,
        layers=layers,
        manifests=manifests,
        subject=subject,
        artifact_type=artifact_type,
        annotations=_str_map(doc.get("annotations"), "annotations"),
    )


def artifact_kind(config_media_type: str | None, artifact_type: str | None = None) -> str:
    """ATCR's UI classification: container-image, helm-chart or unknown."""
    kind = artifact_type or config_media_type or ""
    if kind == HELM_CONFIG:
        return "helm-chart"
    if kind in IMAGE_CONFIGS:
        return "container-image"
    return "unknown"
