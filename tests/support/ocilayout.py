"""Hand-written OCI image layouts for real clients to push: no internet, no docker daemon."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Layout:
    root: Path
    blobs: dict[str, bytes] = field(default_factory=dict)
    index: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def add_blob(self, data: bytes) -> dict[str, object]:
        d = _digest(data)
        (self.root / "blobs" / "sha256" / d[7:]).write_bytes(data)
        self.blobs[d] = data
        return {"digest": d, "size": len(data)}

    def add_big_blob(self, size: int, chunk: int = 8 * 1024 * 1024) -> dict[str, object]:
        """A random blob written in chunks so a 200 MB layer never sits in memory."""
        h = hashlib.sha256()
        tmp = self.root / "blobs" / "sha256" / f".tmp-{os.getpid()}-{len(self.blobs)}"
        with open(tmp, "wb") as f:
            left = size
            while left:
                part = os.urandom(min(chunk, left))
                h.update(part)
                f.write(part)
                left -= len(part)
        d = "sha256:" + h.hexdigest()
        tmp.rename(self.root / "blobs" / "sha256" / d[7:])
        return {"digest": d, "size": size}

    def image(
        self,
        *,
        layers: list[dict[str, object]] | None = None,
        arch: str = "amd64",
        annotations: dict[str, str] | None = None,
        subject: dict[str, object] | None = None,
        artifact_type: str | None = None,
        config_media_type: str = OCI_CONFIG,
    ) -> dict[str, object]:
        if layers is None:
            layers = [self.add_blob(tar_layer({"hello.txt": os.urandom(64)}))]
        config = json.dumps(
            {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode() if config_media_type == OCI_CONFIG else b"{}"
        cfg = self.add_blob(config)
        manifest: dict[str, object] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_media_type, **cfg},
            "layers": [{"mediaType": LAYER_TAR, **layer} for layer in layers],
        }
        if annotations:
            manifest["annotations"] = annotations
        if subject:
            manifest["subject"] = subject
        if artifact_type:
            manifest["artifactType"] = artifact_type
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        desc = {"mediaType": OCI_MANIFEST, **self.add_blob(raw)}
        desc["platform"] = {"architecture": arch, "os": "linux"}
        return desc

    def index_of(self, manifests: list[dict[str, object]]) -> dict[str, object]:
        raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
        return {"mediaType": OCI_INDEX, **self.add_blob(raw)}

    def tag(self, desc: dict[str, object], ref: str) -> None:
        entry = {k: v for k, v in desc.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref}
        self.index.append(entry)
        (self.root / "index.json").write_text(
            json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index})
        )


def tar_layer(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
