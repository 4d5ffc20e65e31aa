"""Real OCI clients (skopeo from Debian, oras from PyPI) against the real stack.

The AppView and hold run as separate processes; records land in the real local PDS; blob
bytes land in moto's S3 over HTTP. Each test pushes, pulls back, and compares bytes.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest

from atcr.xrpc import XrpcClient  # noqa: F401  (kept for readers: records are checked over plain HTTP)
from tests.support.fixtures_stack import Pusher, RegistryStack, token_for
from tests.support.ocilayout import OCI_INDEX, Layout

pytestmark = pytest.mark.e2e


def skopeo(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"skopeo {' '.join(args)}\n{proc.stdout}\n{proc.stderr}"
    return proc


def push(stack: RegistryStack, pusher: Pusher, layout: Path, ref: str, dest: str, *, all_: bool = False) -> None:
    args = ["copy", "--preserve-digests", "--dest-tls-verify=false", f"--dest-creds={pusher.handle}:{pusher.app_password}"]
    if all_:
        args.append("--all")
    skopeo(*args, f"oci:{layout}:{ref}", f"docker://{stack.host}/{dest}")


def pull(stack: RegistryStack, src: str, out: Path, *, all_: bool = False) -> None:
    args = ["copy", "--preserve-digests", "--src-tls-verify=false"]
    if all_:
        args.append("--all")
    skopeo(*args, f"docker://{stack.host}/{src}", f"oci:{out}:pulled")


def records(stack: RegistryStack, did: str, collection: str) -> list[dict]:
    r = httpx.get(
        f"{stack.network.pds_url}/xrpc/com.atproto.repo.listRecords",
        params={"repo": did, "collection": collection, "limit": 100},
        timeout=30,
    )
    r.raise_for_status()
    return list(r.json()["records"])


def blob_files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (root / "blobs" / "sha256").iterdir() if not p.name.startswith(".")}


def test_single_arch_push_pull_round_trip(tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher) -> None:
    layout = Layout(tmp_path / "src")
    desc = layout.image()
    layout.tag(desc, "v1")
    push(registry_stack, pusher, layout.root, "v1", f"{pusher.handle}/app:v1")

    pull(registry_stack, f"{pusher.handle}/app:v1", tmp_path / "out")
    got = blob_files(tmp_path / "out")
    for digest, data in layout.blobs.items():
        assert got[digest[7:]] == data, digest

    manifests = records(registry_stack, pusher.did, "io.atcr.manifest")
    assert [m["value"]["digest"] for m in manifests] == [desc["digest"]]
    value = manifests[0]["value"]
    assert manifests[0]["uri"].endswith("/io.atcr.manifest/" + str(desc["digest"])[7:])
    assert value["holdDid"] == registry_stack.hold_did
    assert value["repository"] == "app"
    assert value["manifestBlob"]["mimeType"] == "application/vnd.oci.image.manifest.v1+json"
    tags = records(registry_stack, pusher.did, "io.atcr.tag")
    assert [(t["value"]["tag"], t["value"]["manifestDigest"]) for t in tags] == [("v1", desc["digest"])]
    assert tags[0]["value"]["manifest"] == manifests[0]["uri"]


def test_multi_arch_index(tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher) -> None:
    layout = Layout(tmp_path / "src")
    amd = layout.image(arch="amd64")
    arm = layout.image(arch="arm64")
    index = layout.index_of([amd, arm])
    layout.tag(index, "multi")
    push(registry_stack, pusher, layout.root, "multi", f"{pusher.handle}/multi:1", all_=True)
    pull(registry_stack, f"{pusher.handle}/multi:1", tmp_path / "out", all_=True)
    got = blob_files(tmp_path / "out")
    assert got[str(index["digest"])[7:]] == layout.blobs[str(index["digest"])]
    for digest, data in layout.blobs.items():
        assert got[digest[7:]] == data
    values = {m["value"]["digest"]: m["value"] for m in records(registry_stack, pusher.did, "io.atcr.manifest")}
    assert values[index["digest"]]["mediaType"] == OCI_INDEX
    platforms = {m["platform"]["architecture"] for m in values[index["digest"]]["manifests"]}
    assert platforms == {"amd64", "arm64"}


def test_artifact_with_subject_visible_through_referrers(
    tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    import oras.client
    import oras.oci

    layout = Layout(tmp_path / "src")
    desc = layout.image()
    layout.tag(desc, "base")
    push(registry_stack, pusher, layout.root, "base", f"{pusher.handle}/signed:base")

    client = oras.client.OrasClient(hostname=registry_stack.host, insecure=True)
    client.auth.set_basic_auth(pusher.handle, pusher.app_password)
    sbom = tmp_path / "sbom.json"
    sbom.write_text(json.dumps({"spdxVersion": "SPDX-2.3", "name": "x"}))
    subject = oras.oci.Subject(mediaType=str(desc["mediaType"]), digest=str(desc["digest"]), size=int(desc["size"]))  # type: ignore[arg-type]
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        resp = client.push(
            target=f"{registry_stack.host}/{pusher.handle}/signed:sbom",
            files=["sbom.json:application/spdx+json"],
            subject=subject,
            manifest_annotations={"org.example.kind": "sbom"},
        )
    finally:
        os.chdir(cwd)
    assert resp.status_code == 201
    assert resp.headers.get("OCI-Subject") == desc["digest"]

    token = token_for(registry_stack, None, f"repository:{pusher.handle}/signed:pull")
    r = httpx.get(
        f"{registry_stack.url}/v2/{pusher.handle}/signed/referrers/{desc['digest']}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert r.status_code == 200
    body = r.json()
    assert body["mediaType"] == OCI_INDEX
    assert len(body["manifests"]) == 1
    assert body["manifests"][0]["annotations"]["org.example.kind"] == "sbom"
    filtered = httpx.get(
        f"{registry_stack.url}/v2/{pusher.handle}/signed/referrers/{desc['digest']}",
        params={"artifactType": "application/nope"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert filtered.json()["manifests"] == []
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"


@pytest.mark.slow
def test_200mb_image_in_four_layers(tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher) -> None:
    layout = Layout(tmp_path / "src")
    layers = [layout.add_big_blob(50 * 1024 * 1024) for _ in range(4)]
    desc = layout.image(layers=layers)
    layout.tag(desc, "big")
    push(registry_stack, pusher, layout.root, "big", f"{pusher.handle}/big:1")
    pull(registry_stack, f"{pusher.handle}/big:1", tmp_path / "out")
    for layer in layers:
        name = str(layer["digest"])[7:]
        h = hashlib.sha256()
        with open(tmp_path / "out" / "blobs" / "sha256" / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        assert h.hexdigest() == name
