"""One image in several repositories of one account (docs/records.md), driven by real OCI clients.

skopeo (Debian) and oras (the PyPI SDK, as in test_registry_clients.py) push the same digest into
two repositories, read both back byte for byte, delete it from one and check the other still
serves it; a tag written the old way (pointing at the record that names another repository)
still pulls. Everything talks to the session stack on 127.0.0.1 only.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from atcr.readmodel import keys
from tests.e2e.test_registry_clients import push, records, skopeo
from tests.support.fixtures_stack import Pusher, RegistryStack
from tests.support.ocilayout import OCI_MANIFEST, Layout, tar_layer

pytestmark = [pytest.mark.e2e]


def run_skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    """skopeo with stdout kept as bytes (a raw manifest is compared byte for byte)."""
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, timeout=300)


def creds(pusher: Pusher) -> str:
    return f"{pusher.handle}:{pusher.app_password}"


def inspect_raw(stack: RegistryStack, pusher: Pusher, ref: str) -> subprocess.CompletedProcess[bytes]:
    return run_skopeo("inspect", "--raw", "--tls-verify=false", f"--creds={creds(pusher)}",
                      f"docker://{stack.host}/{ref}")


def raw_manifest(stack: RegistryStack, pusher: Pusher, ref: str) -> bytes:
    proc = inspect_raw(stack, pusher, ref)
    assert proc.returncode == 0, f"skopeo inspect --raw {ref}\n{proc.stderr.decode(errors='replace')}"
    return proc.stdout


def copy_to_dir(stack: RegistryStack, pusher: Pusher, ref: str, out: Path) -> None:
    skopeo("copy", "--preserve-digests", "--src-tls-verify=false", f"--src-creds={creds(pusher)}",
           f"docker://{stack.host}/{ref}", f"dir:{out}")


def assert_dir_holds(out: Path, raw: bytes, layout: Layout) -> None:
    """A `dir:` copy holds the manifest as pushed and every blob it names, by digest hex."""
    assert (out / "manifest.json").read_bytes() == raw
    for digest, data in layout.blobs.items():
        if digest == "sha256:" + hashlib.sha256(raw).hexdigest():
            continue
        assert (out / digest[7:]).read_bytes() == data, digest


def small_image(layout: Layout, ref: str) -> tuple[str, bytes]:
    """A fresh image of two random layers, tagged `ref` in the layout: (digest, manifest bytes)."""
    layers = [
        layout.add_blob(tar_layer({"a.bin": os.urandom(300)})),
        layout.add_blob(tar_layer({"b.bin": os.urandom(2000)})),
    ]
    desc = layout.image(layers=layers)
    layout.tag(desc, ref)
    digest = str(desc["digest"])
    return digest, layout.blobs[digest]


def manifest_records(stack: RegistryStack, did: str) -> dict[str, str]:
    """rkey -> repository of every io.atcr.manifest record of the account."""
    return {rec["uri"].rsplit("/", 1)[-1]: rec["value"]["repository"] for rec in records(stack, did, keys.MANIFEST)}


# --- skopeo ------------------------------------------------------------------------------------


def test_skopeo_same_image_in_two_repositories_survives_delete_in_one(
    tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    layout = Layout(tmp_path / "src")
    digest, raw = small_image(layout, "v1")
    h = pusher.handle
    for dest in (f"{h}/one:1", f"{h}/two:1", f"{h}/one@{digest}", f"{h}/two@{digest}"):
        push(registry_stack, pusher, layout.root, "v1", dest)

    for ref in (f"{h}/one:1", f"{h}/one@{digest}", f"{h}/two:1", f"{h}/two@{digest}"):
        assert raw_manifest(registry_stack, pusher, ref) == raw, ref
    assert manifest_records(registry_stack, pusher.did) == {
        keys.manifest_rkey(digest): "one",
        keys.repo_manifest_rkey("two", digest): "two",
    }

    skopeo("delete", "--tls-verify=false", f"--creds={creds(pusher)}", f"docker://{registry_stack.host}/{h}/one@{digest}")

    for ref in (f"{h}/two:1", f"{h}/two@{digest}"):
        assert raw_manifest(registry_stack, pusher, ref) == raw, ref
    copy_to_dir(registry_stack, pusher, f"{h}/two:1", tmp_path / "two-tag")
    assert_dir_holds(tmp_path / "two-tag", raw, layout)
    copy_to_dir(registry_stack, pusher, f"{h}/two@{digest}", tmp_path / "two-digest")
    assert_dir_holds(tmp_path / "two-digest", raw, layout)

    for ref in (f"{h}/one:1", f"{h}/one@{digest}"):
        gone = inspect_raw(registry_stack, pusher, ref)
        assert gone.returncode != 0, ref
        assert b"manifest unknown" in gone.stderr.lower(), gone.stderr.decode(errors="replace")
    assert manifest_records(registry_stack, pusher.did) == {keys.repo_manifest_rkey("two", digest): "two"}

    # The emptied repository takes the image back; deleting it from `two` then leaves `one` whole.
    push(registry_stack, pusher, layout.root, "v1", f"{h}/one:2")
    skopeo("delete", "--tls-verify=false", f"--creds={creds(pusher)}", f"docker://{registry_stack.host}/{h}/two@{digest}")
    for ref in (f"{h}/one:2", f"{h}/one@{digest}"):
        assert raw_manifest(registry_stack, pusher, ref) == raw, ref
    gone = inspect_raw(registry_stack, pusher, f"{h}/two:1")
    assert gone.returncode != 0 and b"manifest unknown" in gone.stderr.lower(), gone.stderr.decode(errors="replace")
    assert manifest_records(registry_stack, pusher.did) == {keys.manifest_rkey(digest): "one"}


# --- oras --------------------------------------------------------------------------------------


def oras_client(stack: RegistryStack, pusher: Pusher) -> Any:
    import oras.client

    client = oras.client.OrasClient(hostname=stack.host, insecure=True)
    client.auth.set_basic_auth(pusher.handle, pusher.app_password)
    return client


def oras_manifest(client: Any, target: str) -> Any:
    """GET the manifest through oras's own HTTP and auth; returns the response."""
    container = client.get_container(target)
    return client.do_request(f"{client.prefix}://{container.manifest_url()}", "GET", headers={"Accept": OCI_MANIFEST})


def test_oras_same_artifact_in_two_repositories_survives_delete_in_one(
    tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One oras client per command, as each `oras` CLI invocation is: oras-py keeps the first
    token it gets and never asks for another, and a registry token names one repository."""

    def oras() -> Any:
        return oras_client(registry_stack, pusher)

    base = f"{registry_stack.host}/{pusher.handle}"
    files = {"payload.bin": os.urandom(4096), "notes.txt": b"one artifact, two repositories\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)  # oras pushes paths relative to the working directory
    spec = ["payload.bin:application/octet-stream", "notes.txt:text/plain"]

    # `oras push` to art-a, then the same files again to art-b: the same manifest, byte for byte.
    pushed_a = oras().push(target=f"{base}/art-a:v1", files=spec, quiet=True)
    assert pushed_a.status_code == 201, pushed_a.text
    pushed_b = oras().push(target=f"{base}/art-b:v1", files=spec, quiet=True)
    assert pushed_b.status_code == 201, pushed_b.text
    digest = pushed_a.headers["Docker-Content-Digest"]
    assert pushed_b.headers["Docker-Content-Digest"] == digest
    assert manifest_records(registry_stack, pusher.did) == {
        keys.manifest_rkey(digest): "art-a",
        keys.repo_manifest_rkey("art-b", digest): "art-b",
    }

    # `oras tag`: the manifest as read from art-b, put back under a second tag.
    client = oras()
    raw = oras_manifest(client, f"{base}/art-b:v1").content
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == digest
    tagged = client.do_request(f"{client.prefix}://{client.get_container(f'{base}/art-b:v2').manifest_url()}",
                               "PUT", headers={"Content-Type": OCI_MANIFEST}, data=raw)
    assert tagged.status_code == 201, tagged.text

    for repo, refs in (("art-a", (":v1", f"@{digest}")), ("art-b", (":v1", ":v2", f"@{digest}"))):
        client = oras()
        for ref in refs:
            assert oras_manifest(client, f"{base}/{repo}{ref}").content == raw, (repo, ref)
    for repo in ("art-a", "art-b"):
        out = tmp_path / f"pull-{repo}"
        pulled = oras().pull(target=f"{base}/{repo}:v1", outdir=str(out))
        assert sorted(Path(p).name for p in pulled) == sorted(files)
        for name, data in files.items():
            assert (out / name).read_bytes() == data, (repo, name)

    # `oras manifest delete` in art-a (oras resolves the tag, then deletes by digest).
    assert oras().delete_tag(f"{base}/art-a", "v1") is True
    client = oras()
    for ref in (":v1", f"@{digest}"):
        gone = oras_manifest(client, f"{base}/art-a{ref}")
        assert gone.status_code == 404, (ref, gone.text)
        assert gone.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    client = oras()
    for ref in (":v1", ":v2", f"@{digest}"):
        assert oras_manifest(client, f"{base}/art-b{ref}").content == raw, ref
    assert manifest_records(registry_stack, pusher.did) == {keys.repo_manifest_rkey("art-b", digest): "art-b"}
    out = tmp_path / "pull-art-b-after"
    oras().pull(target=f"{base}/art-b:v1", outdir=str(out))
    for name, data in files.items():
        assert (out / name).read_bytes() == data, name


# --- a tag written the old way -------------------------------------------------------------------


def test_skopeo_pulls_a_tag_written_the_old_way(
    tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    """`prod:1` points at the record at the digest hex, which names `staging` (the old scheme
    rewrote it on a push into `staging`): same owner, same bytes, so it pulls."""
    layout = Layout(tmp_path / "src")
    digest, raw = small_image(layout, "v1")
    h = pusher.handle
    push(registry_stack, pusher, layout.root, "v1", f"{h}/staging:1")
    assert manifest_records(registry_stack, pusher.did) == {keys.manifest_rkey(digest): "staging"}

    r = httpx.post(
        f"{registry_stack.network.pds_url}/xrpc/com.atproto.repo.putRecord",
        headers=pusher.account.auth_headers,
        json={
            "repo": pusher.did, "collection": keys.TAG, "rkey": keys.tag_rkey("prod", "1"),
            "record": {"$type": keys.TAG, "repository": "prod", "tag": "1",
                       "manifest": f"at://{pusher.did}/{keys.MANIFEST}/{keys.manifest_rkey(digest)}",
                       "manifestDigest": digest, "createdAt": "2026-01-01T00:00:00Z"},
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text

    for ref in (f"{h}/prod:1", f"{h}/prod@{digest}", f"{h}/staging:1"):
        assert raw_manifest(registry_stack, pusher, ref) == raw, ref
    copy_to_dir(registry_stack, pusher, f"{h}/prod:1", tmp_path / "prod")
    assert_dir_holds(tmp_path / "prod", raw, layout)
    copy_to_dir(registry_stack, pusher, f"{h}/prod@{digest}", tmp_path / "prod-digest")
    assert_dir_holds(tmp_path / "prod-digest", raw, layout)
