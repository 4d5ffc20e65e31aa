"""Provenance from the publisher's own repo (#22), against the real local PDS and PLC.

Images are pushed with skopeo through an AppView that lists repo proofs among referrers
(`ATCR_PROVENANCE_REFERRERS=all`, started here beside the session stack, on the same hold,
Valkey, PDS and PLC). Each failure the issue names is produced for real where the network
allows it: a tag moved by a second push, a manifest deleted through the registry, a CAR with
one byte changed, another account's proof substituted, the account's `#atproto` key rotated
in the PLC directory (the PDS keeps signing with the old key), and a DID document whose PDS
is a socket that never answers. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.config import NetworkSettings
from atcr.http import SafeHttpClient, policy_from
from atcr.identity import build_resolver
from atcr.provenance import (
    SIGNATURE_ARTIFACT_TYPE,
    ForgedProof,
    PdsProofSource,
    PlcAuditLog,
    Status,
    Verification,
    Verifier,
    read_proof,
    verify_car,
)
from atcr.readmodel import keys
from atcr.serviceauth import did_key_of
from atcr.settings import load
from atcr.verifycmd import parse_reference
from atcr.verifyrun import RegistryReader, verify_image
from tests.e2e.test_record_model_clients import small_image
from tests.e2e.test_registry_clients import push, skopeo
from tests.support.fixtures_stack import Pusher, RegistryStack
from tests.support.ocilayout import Layout
from tests.support.pdsnet import create_account, create_app_password
from tests.support.plcops import update_did_document
from tests.support.stack import Service, appview_env, free_port, network_env, start_service

pytestmark = [pytest.mark.e2e]

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def appview(tmp_path_factory: pytest.TempPathFactory, registry_stack: RegistryStack) -> Iterator[Service]:
    """An AppView replica with the default `ATCR_PROVENANCE_REFERRERS=all`."""
    work = tmp_path_factory.mktemp("provenance")
    port = free_port()
    shared = registry_stack.appview.env
    net = network_env(shared["VALKEY_URL"], shared["ATCR_PLC_URL"], shared["ATCR_HANDLE_RESOLVER_URL"])
    env = {**net, **appview_env(work, port, registry_stack.hold_did), "ATCR_PROVENANCE_REFERRERS": "all"}
    svc = start_service("appview-provenance", "appview", env, work, f"http://127.0.0.1:{port}")
    try:
        yield svc
    finally:
        svc.stop()


def host(svc: Service) -> str:
    return svc.url.removeprefix("http://")


def net_env(stack: RegistryStack) -> dict[str, str]:
    shared = stack.appview.env
    return network_env(shared["VALKEY_URL"], shared["ATCR_PLC_URL"], shared["ATCR_HANDLE_RESOLVER_URL"])


def settings_for(stack: RegistryStack) -> NetworkSettings:
    return load(NetworkSettings, net_env(stack), {})


def verify(stack: RegistryStack, ref: str, **kw: Any) -> Verification:
    return asyncio.run(verify_image(parse_reference(ref), settings=settings_for(stack), **kw))


def push_image(tmp: Path, svc: Service, pusher: Pusher, dest: str) -> str:
    layout = Layout(tmp)
    digest, _ = small_image(layout, "v1")
    push(SimpleNamespace(host=host(svc)), pusher, layout.root, "v1", dest)  # type: ignore[arg-type]
    return digest


def cli(stack: RegistryStack, prog: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent", **net_env(stack)}
    return subprocess.run([str(BIN / prog), "verify", *args], capture_output=True, text=True, timeout=120, env=env)


class Substituting:
    """A proof source that hands out something else than the PDS's answer (what a hostile
    mirror or a man in the middle could do); listings pass through."""

    def __init__(self, inner: PdsProofSource, change: Any) -> None:
        self.inner = inner
        self.change = change

    async def record_proof(self, pds: str, did: str, collection: str, rkey: str) -> bytes:
        return await self.change(self.inner, pds, did, collection, rkey)

    async def list_records(self, pds: str, did: str, collection: str) -> list[tuple[str, dict[str, Any]]]:
        return await self.inner.list_records(pds, did, collection)


async def check_with(stack: RegistryStack, change: Any, ident: str, repository: str, **kw: Any) -> Verification:
    settings = settings_for(stack)
    async with SafeHttpClient(policy=policy_from(True)) as http:
        resolver = build_resolver(
            http, plc_url=settings.plc_url, handle_resolver_url=settings.handle_resolver_url, allow_private=True
        )
        source = PdsProofSource(http)
        verifier = Verifier(resolver, Substituting(source, change), PlcAuditLog(http, settings.plc_url))
        return await verifier.check(ident, repository, **kw)


def fetch_proof(stack: RegistryStack, did: str, collection: str, rkey: str) -> bytes:
    r = httpx.get(
        f"{stack.network.pds_url}/xrpc/com.atproto.sync.getRecord",
        params={"did": did, "collection": collection, "rkey": rkey}, timeout=30,
    )
    r.raise_for_status()
    return r.content


# --- success ----------------------------------------------------------------------------------


def test_pushed_image_verifies_by_tag_and_digest_from_the_pds_and_from_the_registry(
    tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher
) -> None:
    h = pusher.handle
    digest = push_image(tmp_path / "img", appview, pusher, f"{h}/app:1")
    for ref in (f"{host(appview)}/{h}/app:1", f"{host(appview)}/{h}/app@{digest}", f"{host(appview)}/{pusher.did}/app:1@{digest}"):
        result = verify(registry_stack, ref)
        assert result.status is Status.VERIFIED, (ref, result.message)
        assert result.did == pusher.did and result.handle == h and result.digest == digest
        assert result.rev and result.commit_time and result.key and result.key.startswith("did:key:")
        assert result.key_current is True
        assert result.manifest_uri == f"at://{pusher.did}/{keys.MANIFEST}/{keys.manifest_rkey(digest)}"
    assert verify(registry_stack, f"{host(appview)}/{h}/app:1").tag_uri == (
        f"at://{pusher.did}/{keys.TAG}/{keys.tag_rkey('app', '1')}"
    )

    offline = verify(registry_stack, f"{host(appview)}/{h}/app:1", from_registry=True)
    assert offline.status is Status.VERIFIED, offline.message
    assert offline.source == "proof" and offline.digest == digest

    out = cli(registry_stack, "atcr", "--json", f"{host(appview)}/{h}/app:1")
    assert out.returncode == 0, out.stdout + out.stderr
    body = json.loads(out.stdout)
    assert body["ok"] is True and body["status"] == "verified" and body["did"] == pusher.did
    assert body["handle"] == h and body["digest"] == digest and body["rev"] and body["commit_time"] and body["key"]

    out = cli(registry_stack, "docker-credential-atcr", f"{host(appview)}/{h}/app@{digest}")
    assert out.returncode == 0, out.stdout + out.stderr
    for text in ("VERIFIED", pusher.did, h, digest, "repo rev:", "commit time:", "key:"):
        assert text in out.stdout, (text, out.stdout)


def test_the_proof_is_a_referrer_of_the_manifest(
    tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher
) -> None:
    h = pusher.handle
    digest = push_image(tmp_path / "img", appview, pusher, f"{h}/app:1")

    async def fetch(svc_url: str, path: str) -> httpx.Response:
        async with SafeHttpClient(policy=policy_from(True)) as http:
            reader = RegistryReader(http, svc_url, f"{h}/app", 30)
            return await reader._get(path)  # anonymous pull token, as oras gets one

    listing = asyncio.run(fetch(appview.url, f"referrers/{digest}")).json()
    proofs = [d for d in listing["manifests"] if d.get("artifactType") == SIGNATURE_ARTIFACT_TYPE]
    assert len(proofs) == 1, listing
    desc = proofs[0]
    assert desc["annotations"]["io.atcr.provenance.did"] == pusher.did
    manifest = asyncio.run(fetch(appview.url, f"manifests/{desc['digest']}"))
    assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == desc["digest"]
    doc = manifest.json()
    assert doc["subject"]["digest"] == digest and doc["artifactType"] == SIGNATURE_ARTIFACT_TYPE
    car = asyncio.run(fetch(appview.url, f"blobs/{doc['layers'][0]['digest']}")).content
    proof = read_proof(car, pusher.did, keys.MANIFEST, keys.manifest_rkey(digest))
    assert proof.record is not None and proof.record["digest"] == digest and proof.record["repository"] == "app"
    config = asyncio.run(fetch(appview.url, f"blobs/{doc['config']['digest']}"))
    assert config.status_code == 200 and config.content == b"{}"

    # A real OCI client (oras, from PyPI) pulls the artifact by the digest the listing gave.
    import oras.client

    client = oras.client.OrasClient(hostname=host(appview), insecure=True)
    client.auth.set_basic_auth(pusher.handle, pusher.app_password)
    files = client.pull(target=f"{host(appview)}/{h}/app@{desc['digest']}", outdir=str(tmp_path / "pulled"))
    assert [Path(f).name for f in files] == ["record-proof.car"]
    assert (tmp_path / "pulled" / "record-proof.car").read_bytes() == car

    # The session stack lists it only when asked for by artifactType (ATCR_PROVENANCE_REFERRERS=filtered).
    plain = asyncio.run(fetch(registry_stack.url, f"referrers/{digest}")).json()["manifests"]
    assert all(d.get("artifactType") != SIGNATURE_ARTIFACT_TYPE for d in plain)
    asked = asyncio.run(fetch(registry_stack.url, f"referrers/{digest}?artifactType={quote(SIGNATURE_ARTIFACT_TYPE)}"))
    assert [d["artifactType"] for d in asked.json()["manifests"]] == [SIGNATURE_ARTIFACT_TYPE]
    assert asked.headers["OCI-Filters-Applied"] == "artifactType"


def test_manifest_page_says_published_by_and_verified(
    tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher
) -> None:
    h = pusher.handle
    digest = push_image(tmp_path / "img", appview, pusher, f"{h}/app:1")
    page = httpx.get(f"{appview.url}/r/{h}/app/manifest/{digest}", timeout=30)
    assert page.status_code == 200
    html = page.text
    start = html.index('id="manifest-provenance"')
    snippet = html[start : html.index("</dd>", start)]
    assert 'data-status="verified"' in snippet and h in snippet and ">verified</span>" in snippet, snippet


def test_records_written_by_another_appview_verify(
    registry_stack: RegistryStack, appview: Service, pusher: Pusher
) -> None:
    """ATCR's shape: the manifest record at the digest hex, a tag record under a key of its own
    (not ours), written straight to the PDS; and one manifest under a TID rkey."""
    account = pusher.account
    pds = registry_stack.network.pds_url
    raw = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 2},
        "layers": [], "annotations": {"n": os.urandom(8).hex()},
    }).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    with httpx.Client(timeout=30, trust_env=False) as c:
        blob = c.post(
            f"{pds}/xrpc/com.atproto.repo.uploadBlob", content=raw,
            headers={**account.auth_headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        ).json()["blob"]

        def put(collection: str, rkey: str, record: dict[str, Any]) -> None:
            r = c.post(
                f"{pds}/xrpc/com.atproto.repo.putRecord", headers=account.auth_headers,
                json={"repo": account.did, "collection": collection, "rkey": rkey, "record": record},
            )
            assert r.status_code == 200, r.text

        record = {
            "$type": keys.MANIFEST, "repository": "atcr-made", "digest": digest, "holdDid": registry_stack.hold_did,
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2, "manifestBlob": blob,
            "createdAt": "2026-01-01T00:00:00Z",
        }
        put(keys.MANIFEST, digest[7:], record)
        put(keys.TAG, "atcr-made_latest", {
            "$type": keys.TAG, "repository": "atcr-made", "tag": "latest",
            "manifest": f"at://{account.did}/{keys.MANIFEST}/{digest[7:]}", "manifestDigest": digest,
            "createdAt": "2026-01-01T00:00:00Z",
        })
        put(keys.MANIFEST, "3lbuzkd4gqs2c", {**record, "repository": "tid-made"})
        put(keys.TAG, "3lbuzkd4gqs2d", {
            "$type": keys.TAG, "repository": "tid-made", "tag": "v1",
            "manifest": f"at://{account.did}/{keys.MANIFEST}/3lbuzkd4gqs2c", "createdAt": "2026-01-01T00:00:00Z",
        })
    h = pusher.handle
    for ref in (f"{host(appview)}/{h}/atcr-made:latest", f"{host(appview)}/{h}/atcr-made@{digest}"):
        result = verify(registry_stack, ref)  # the registry serves these bytes from the PDS blob
        assert result.status is Status.VERIFIED, (ref, result.message)
        assert result.manifest_uri == f"at://{account.did}/{keys.MANIFEST}/{digest[7:]}"
    assert verify(registry_stack, f"{host(appview)}/{h}/atcr-made:latest").tag_uri == (
        f"at://{account.did}/{keys.TAG}/atcr-made_latest"
    )
    for ref in (f"x/{h}/tid-made:v1", f"x/{h}/tid-made@{digest}"):
        result = verify(registry_stack, ref, use_registry=False)
        assert result.status is Status.VERIFIED, (ref, result.message)
        assert result.manifest_uri == f"at://{account.did}/{keys.MANIFEST}/3lbuzkd4gqs2c"


# --- distinct failures ------------------------------------------------------------------------


def test_tag_moved_afterwards(tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher) -> None:
    h = pusher.handle
    old = push_image(tmp_path / "a", appview, pusher, f"{h}/app:1")
    new = push_image(tmp_path / "b", appview, pusher, f"{h}/app:1")
    moved = verify(registry_stack, f"x/{h}/app:1@{old}", use_registry=False)
    assert moved.status is Status.TAG_MOVED, moved.message
    assert new in moved.message and old in moved.message
    out = cli(registry_stack, "atcr", "--json", "--no-registry", f"x/{h}/app:1@{old}")
    assert out.returncode == 1 and json.loads(out.stdout)["status"] == "tag_moved", out.stdout
    # What still holds: the old digest is published in the repository, and the tag names the new one.
    assert verify(registry_stack, f"{host(appview)}/{h}/app@{old}").status is Status.VERIFIED
    assert verify(registry_stack, f"{host(appview)}/{h}/app:1").digest == new


def test_deleted_manifest_is_record_missing(
    tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher
) -> None:
    h = pusher.handle
    digest = push_image(tmp_path / "a", appview, pusher, f"{h}/app:1")
    skopeo("delete", "--tls-verify=false", f"--creds={h}:{pusher.app_password}", f"docker://{host(appview)}/{h}/app@{digest}")
    for ref in (f"x/{h}/app@{digest}", f"x/{h}/app:1"):
        result = verify(registry_stack, ref, use_registry=False)
        assert result.status is Status.RECORD_MISSING, (ref, result.message)


def test_car_with_one_byte_changed_is_a_forged_proof(
    tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher
) -> None:
    h = pusher.handle
    digest = push_image(tmp_path / "a", appview, pusher, f"{h}/app:1")
    rkey = keys.manifest_rkey(digest)
    car = fetch_proof(registry_stack, pusher.did, keys.MANIFEST, rkey)
    assert read_proof(car, pusher.did, keys.MANIFEST, rkey).record is not None
    # Every single byte, changed: never accepted, always a forged proof.
    for i in range(len(car)):
        bad = car[:i] + bytes([car[i] ^ 0x01]) + car[i + 1 :]
        with pytest.raises(ForgedProof):
            read_proof(bad, pusher.did, keys.MANIFEST, rkey)

    async def flip(inner: PdsProofSource, pds: str, did: str, collection: str, rk: str) -> bytes:
        data = await inner.record_proof(pds, did, collection, rk)
        mid = len(data) // 2
        return data[:mid] + bytes([data[mid] ^ 0x80]) + data[mid + 1 :]

    for kw in ({"tag": "1"}, {"digest": digest}):
        result = asyncio.run(check_with(registry_stack, flip, h, "app", **kw))
        assert result.status is Status.FORGED_PROOF, (kw, result.message)


def test_record_from_another_account_substituted(
    tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher
) -> None:
    h = pusher.handle
    layout = Layout(tmp_path / "img")
    digest, _ = small_image(layout, "v1")
    other = Pusher(account=(acct := create_account(registry_stack.network.pds_url, "mallory")),
                   app_password=create_app_password(acct, "docker"))
    # The same image under the same name, published by both accounts.
    push(SimpleNamespace(host=host(appview)), pusher, layout.root, "v1", f"{h}/app:1")  # type: ignore[arg-type]
    push(SimpleNamespace(host=host(appview)), other, layout.root, "v1", f"{other.handle}/app:1")  # type: ignore[arg-type]

    async def swap(inner: PdsProofSource, pds: str, did: str, collection: str, rkey: str) -> bytes:
        return await inner.record_proof(pds, other.did, collection, rkey)

    for kw in ({"tag": "1"}, {"digest": digest}):
        result = asyncio.run(check_with(registry_stack, swap, h, "app", **kw))
        assert result.status is Status.WRONG_ACCOUNT, (kw, result.message)
        assert other.did in result.message
    assert verify(registry_stack, f"{host(appview)}/{other.handle}/app:1").status is Status.VERIFIED


def test_rotated_key(tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher) -> None:
    """The account's `#atproto` key is rotated in the PLC directory while the PDS keeps signing
    with the old one: a fresh proof (the repo's head commit, made after the rotation by an old
    key) is WRONG_KEY; the proof the registry kept from before the rotation is KEY_ROTATED (the
    audit log shows its key was the DID's key when the commit was made)."""
    h = pusher.handle
    digest = push_image(tmp_path / "a", appview, pusher, f"{h}/app:1")
    before = verify(registry_stack, f"{host(appview)}/{h}/app:1", from_registry=True)  # the registry keeps this proof
    assert before.status is Status.VERIFIED, before.message
    saved = fetch_proof(registry_stack, pusher.did, keys.MANIFEST, keys.manifest_rkey(digest))

    update_did_document(registry_stack.network, pusher.account, atproto_key=did_key_of(ec.generate_private_key(ec.SECP256K1())))
    # A commit after the rotation: the PDS signs it with the key the DID no longer names. (Not a
    # push: the hold, rightly, no longer accepts the service tokens the PDS signs with that key.)
    r = httpx.post(
        f"{registry_stack.network.pds_url}/xrpc/com.atproto.repo.putRecord", headers=pusher.account.auth_headers,
        json={"repo": pusher.did, "collection": keys.STAR, "rkey": "after-rotation",
              "record": {"$type": keys.STAR, "createdAt": "2026-01-01T00:00:00Z"}}, timeout=30,
    )
    assert r.status_code == 200, r.text

    online = verify(registry_stack, f"x/{h}/app:1", use_registry=False)
    assert online.status is Status.WRONG_KEY, online.message
    out = cli(registry_stack, "atcr", "--json", "--no-registry", f"x/{h}/app:1")
    assert out.returncode == 1 and json.loads(out.stdout)["status"] == "wrong_key", out.stdout

    kept = verify(registry_stack, f"{host(appview)}/{h}/app:1", from_registry=True)
    assert kept.status is Status.KEY_ROTATED, kept.message
    assert "PLC audit log" in kept.message and before.key is not None and before.key in kept.message

    async def offline() -> Verification:
        settings = settings_for(registry_stack)
        async with SafeHttpClient(policy=policy_from(True)) as http:
            resolver = build_resolver(
                http, plc_url=settings.plc_url, handle_resolver_url=settings.handle_resolver_url, allow_private=True
            )
            verifier = Verifier(resolver, PdsProofSource(http), PlcAuditLog(http, settings.plc_url))
            return await verify_car(verifier, saved, identifier=h, repository="app", digest=digest)

    assert asyncio.run(offline()).status is Status.KEY_ROTATED


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_unreachable_pds_fails_clearly_without_hanging(
    registry_stack: RegistryStack, pusher: Pusher, silent_port: int
) -> None:
    h = pusher.handle
    # A silent PDS: the DID document now names a socket that never answers.
    update_did_document(registry_stack.network, pusher.account, pds_endpoint=f"http://127.0.0.1:{silent_port}")
    started = time.monotonic()
    result = verify(registry_stack, f"x/{h}/app:1", use_registry=False, timeout=1.0)
    assert result.status is Status.PDS_UNREACHABLE, result.message
    assert f"127.0.0.1:{silent_port}" in result.message or "did not finish" in result.message
    assert time.monotonic() - started < 30  # bounded by the timeout, not by the server
    out = cli(registry_stack, "atcr", "--json", "--no-registry", "--timeout", "1", f"x/{pusher.did}/app:1")
    assert out.returncode == 1 and json.loads(out.stdout)["status"] == "pds_unreachable", out.stdout

    # A PDS that refuses connections: the same status, at once.
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    update_did_document(registry_stack.network, pusher.account, pds_endpoint=f"http://127.0.0.1:{port}")
    result = verify(registry_stack, f"x/{pusher.did}/app:1", use_registry=False, timeout=5.0)
    assert result.status is Status.PDS_UNREACHABLE, result.message
    assert f"127.0.0.1:{port}" in result.message


def test_changed_record_under_the_tag(registry_stack: RegistryStack, pusher: Pusher) -> None:
    """The record a tag points at is rewritten to hold the digest for another repository (what
    the old one-record-per-digest scheme did, docs/records.md): RECORD_CHANGED, not verified."""
    account = pusher.account
    pds = registry_stack.network.pds_url
    digest = "sha256:" + os.urandom(32).hex()
    uri = f"at://{account.did}/{keys.MANIFEST}/{digest[7:]}"
    with httpx.Client(timeout=30, trust_env=False) as c:

        def put(collection: str, rkey: str, record: dict[str, Any]) -> None:
            r = c.post(
                f"{pds}/xrpc/com.atproto.repo.putRecord", headers=account.auth_headers,
                json={"repo": account.did, "collection": collection, "rkey": rkey, "record": record},
            )
            assert r.status_code == 200, r.text

        put(keys.MANIFEST, digest[7:], {"$type": keys.MANIFEST, "repository": "first", "digest": digest})
        put(keys.TAG, keys.tag_rkey("first", "1"), {"$type": keys.TAG, "repository": "first", "tag": "1", "manifest": uri})
        assert verify(registry_stack, f"x/{pusher.handle}/first:1", use_registry=False).status is Status.VERIFIED
        put(keys.MANIFEST, digest[7:], {"$type": keys.MANIFEST, "repository": "second", "digest": digest})
    result = verify(registry_stack, f"x/{pusher.handle}/first:1", use_registry=False)
    assert result.status is Status.RECORD_CHANGED, result.message
    assert "second" in result.message
    assert verify(registry_stack, f"x/{pusher.handle}/second@{digest}", use_registry=False).status is Status.VERIFIED


def test_a_push_still_uploads_the_empty_config_blob(
    tmp_path: Path, registry_stack: RegistryStack, appview: Service, pusher: Pusher
) -> None:
    """The proof artifact's empty config (`{}`) is served to pulls from any repository, but a
    push's HEAD must not be told "present": the hold would lack the blob the manifest names."""
    import oras.client

    h = pusher.handle
    token = asyncio.run(_anonymous_head(appview.url, f"{h}/files", "sha256:" + hashlib.sha256(b"{}").hexdigest()))
    assert token == 200  # a puller may fetch it from here
    client = oras.client.OrasClient(hostname=host(appview), insecure=True)
    client.auth.set_basic_auth(h, pusher.app_password)
    (tmp_path / "notes.txt").write_text("hello")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        resp = client.push(target=f"{host(appview)}/{h}/files:notes", files=["notes.txt:text/plain"])
    finally:
        os.chdir(cwd)
    assert resp.status_code == 201, resp.text
    result = verify(registry_stack, f"{host(appview)}/{h}/files:notes")
    assert result.status is Status.VERIFIED, result.message


async def _anonymous_head(base: str, name: str, digest: str) -> int:
    async with SafeHttpClient(policy=policy_from(True)) as http:
        reader = RegistryReader(http, base, name, 30)
        await reader._get("tags/list")  # gets the anonymous token
        resp = await http.request("HEAD", f"{base}/v2/{name}/blobs/{digest}",
                                  headers={"Authorization": f"Bearer {reader._token}"})
        return resp.status_code
