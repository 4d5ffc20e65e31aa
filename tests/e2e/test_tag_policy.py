"""Immutable tags (`io.atcr.repo.policy`, appview/policy/) driven by skopeo against the session
stack: moving a tag a rule protects is refused with DENIED naming the rule (skopeo prints it),
re-pushing the same digest is fine, deleting it is refused until the rule is removed."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fixtures_stack import Pusher, RegistryStack, token_for
from tests.support.ocilayout import Layout

pytestmark = [pytest.mark.e2e]


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=300
    )


def put_policy(pusher: Pusher, repository: str, **fields: Any) -> None:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    record = {"$type": "io.atcr.repo.policy", "repository": repository, "createdAt": now, **fields}
    r = httpx.post(
        f"{pusher.account.pds_url}/xrpc/com.atproto.repo.putRecord",
        json={"repo": pusher.did, "collection": "io.atcr.repo.policy", "rkey": repository, "record": record},
        headers=pusher.account.auth_headers, timeout=30,
    )
    assert r.status_code == 200, r.text


def test_immutable_tag_refused_with_the_rule_named(
    tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    stack, h = registry_stack, pusher.handle
    creds = f"--dest-creds={h}:{pusher.app_password}"
    layout = Layout(tmp_path / "layout")
    layout.tag(layout.image(), "a")
    layout.tag(layout.image(), "b")
    put_policy(pusher, "app", immutableTags=["v*"])

    def push(src: str, tag: str) -> subprocess.CompletedProcess[str]:
        return skopeo("copy", "--dest-tls-verify=false", "--retry-times=0", creds,
                      f"oci:{layout.root}:{src}", f"docker://{stack.host}/{h}/app:{tag}")

    assert push("a", "v1").returncode == 0
    assert push("a", "latest").returncode == 0
    moved = push("b", "v1")
    assert moved.returncode != 0
    assert "denied" in moved.stderr.lower() and "rule 'v*'" in moved.stderr, moved.stderr
    assert push("a", "v1").returncode == 0, "the same digest again is not a move"
    assert push("b", "latest").returncode == 0, "tags no rule names move as usual"

    # The tag still names the first image.
    token = token_for(stack, pusher, f"repository:{h}/app:pull,push,delete")
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.oci.image.manifest.v1+json"}
    head = httpx.head(f"{stack.url}/v2/{h}/app/manifests/v1", headers=auth, timeout=30)
    digest = head.headers["Docker-Content-Digest"]
    latest = httpx.head(f"{stack.url}/v2/{h}/app/manifests/latest", headers=auth, timeout=30)
    assert latest.headers["Docker-Content-Digest"] != digest

    # Deleting: by tag (the API) and by digest (skopeo) are both refused while the rule stands.
    r = httpx.delete(f"{stack.url}/v2/{h}/app/manifests/v1", headers=auth, timeout=30)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED", r.text
    assert "rule 'v*'" in r.json()["errors"][0]["message"]
    gone = skopeo("delete", "--tls-verify=false", f"--creds={h}:{pusher.app_password}",
                  f"docker://{stack.host}/{h}/app@{digest}")
    assert gone.returncode != 0 and "rule 'v*'" in gone.stderr, gone.stderr

    put_policy(pusher, "app", immutableTags=[])  # the rule removed: the delete goes through
    gone = skopeo("delete", "--tls-verify=false", f"--creds={h}:{pusher.app_password}",
                  f"docker://{stack.host}/{h}/app@{digest}")
    assert gone.returncode == 0, gone.stderr
    assert httpx.head(f"{stack.url}/v2/{h}/app/manifests/v1", headers=auth, timeout=30).status_code == 404


def test_retention_keep_three_after_five_pushes(
    tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    """`keepNewest build-* 3` with `protect v*, latest`: after five skopeo pushes the three newest
    build tags stay, the protected tags stay, and the manifest left untagged goes."""
    stack, h = registry_stack, pusher.handle
    creds = f"--dest-creds={h}:{pusher.app_password}"
    layout = Layout(tmp_path / "layout")
    for i in range(1, 6):
        layout.tag(layout.image(), f"i{i}")
    put_policy(pusher, "svc", retention={"keepNewest": [{"pattern": "build-*", "count": 3}],
                                          "protect": ["v*", "latest"]})
    token = token_for(stack, pusher, f"repository:{h}/svc:pull")
    auth = {"Authorization": f"Bearer {token}", "Accept": "application/vnd.oci.image.manifest.v1+json"}

    def head(ref: str) -> httpx.Response:
        return httpx.head(f"{stack.url}/v2/{h}/svc/manifests/{ref}", headers=auth, timeout=30)

    def push(src: str, tag: str) -> str:
        proc = skopeo("copy", "--dest-tls-verify=false", "--retry-times=0", creds,
                      f"oci:{layout.root}:{src}", f"docker://{stack.host}/{h}/svc:{tag}")
        assert proc.returncode == 0, proc.stderr
        return str(head(tag).headers["Docker-Content-Digest"])  # as the registry stores it

    pushed = {"v1": push("i1", "v1")}
    for i in range(1, 6):
        pushed[f"build-{i}"] = push(f"i{i}", f"build-{i}")
    push("i5", "latest")
    tags = httpx.get(f"{stack.url}/v2/{h}/svc/tags/list", headers=auth, timeout=30).json()["tags"]
    assert sorted(tags) == ["build-3", "build-4", "build-5", "latest", "v1"]
    assert pushed["build-1"] == pushed["v1"]
    assert head(pushed["v1"]).status_code == 200  # build-1's image is still v1
    assert head(pushed["build-2"]).status_code == 404  # build-2's image lost its only tag: removed with it
    assert head(pushed["build-3"]).status_code == 200


def test_an_immutable_tag_the_read_model_does_not_know_is_protected_too(
    registry_stack: RegistryStack, pusher: Pusher
) -> None:
    """The tag was written at the PDS by another client and no Jetstream consumer told the
    read model: the re-tag's create-only write finds it, and the move is checked before the
    tag is overwritten."""
    import hashlib
    import json

    from atcr.readmodel import keys

    stack, h = registry_stack, pusher.handle
    token = token_for(stack, pusher, f"repository:{h}/frozen:pull,push,delete")
    http = httpx.Client(base_url=f"{stack.url}/v2/{h}/frozen", headers={"Authorization": f"Bearer {token}"},
                        timeout=30)
    oci = "application/vnd.oci.image.manifest.v1+json"

    def digest(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()

    def image(n: int) -> bytes:
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode()
        r = http.post("/blobs/uploads/", params={"digest": digest(config)}, content=config,
                      headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        return json.dumps({"schemaVersion": 2, "mediaType": oci, "layers": [], "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config),
            "size": len(config)}}).encode()

    a, b = image(1), image(2)
    for tag, raw in (("keep", a), ("other", b)):
        assert http.put(f"/manifests/{tag}", content=raw, headers={"Content-Type": oci}).status_code == 201
    put_policy(pusher, "frozen", immutableTags=["v*"])
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    r = httpx.post(
        f"{pusher.account.pds_url}/xrpc/com.atproto.repo.putRecord",
        json={"repo": pusher.did, "collection": keys.TAG, "rkey": keys.tag_rkey("frozen", "v9"), "record": {
            "$type": keys.TAG, "repository": "frozen", "tag": "v9", "manifestDigest": digest(b), "createdAt": now,
            "manifest": f"at://{pusher.did}/{keys.MANIFEST}/{keys.manifest_rkey(digest(b))}"}},
        headers=pusher.account.auth_headers, timeout=30,
    )
    assert r.status_code == 200, r.text
    moved = http.put("/manifests/v9", content=a, headers={"Content-Type": oci})
    assert moved.status_code == 403 and moved.json()["errors"][0]["code"] == "DENIED", moved.text
    assert "rule 'v*'" in moved.json()["errors"][0]["message"]
    got = http.get("/manifests/v9", headers={"Accept": oci})
    assert got.status_code == 200 and got.headers["Docker-Content-Digest"] == digest(b)
    http.close()
