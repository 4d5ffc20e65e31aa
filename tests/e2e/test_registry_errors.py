"""Every error a client can provoke gets the spec's code and status, and leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import httpx
import pytest

from tests.support.fixtures_stack import Pusher, RegistryStack, token_for

pytestmark = pytest.mark.e2e

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def code(resp: httpx.Response) -> str:
    return str(resp.json()["errors"][0]["code"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def push_token(registry_stack: RegistryStack, pusher: Pusher) -> str:
    return token_for(registry_stack, pusher, f"repository:{pusher.handle}/app:pull,push,delete")


def upload_blob(stack: RegistryStack, pusher: Pusher, token: str, data: bytes, repo: str = "app") -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = httpx.post(
        f"{stack.url}/v2/{pusher.handle}/{repo}/blobs/uploads/",
        params={"digest": digest},
        content=data,
        headers={**bearer(token), "Content-Type": "application/octet-stream"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return digest


def manifest_for(config: str, layers: list[tuple[str, int]], config_size: int = 2) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s} for d, s in layers],
        }
    ).encode()


def test_base_challenges_with_loopback_realm(registry_stack: RegistryStack) -> None:
    r = httpx.get(f"{registry_stack.url}/v2/", timeout=10)
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith(f'Bearer realm="{registry_stack.url}/auth/token"')
    assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    token = token_for(registry_stack, None, "")
    assert httpx.get(f"{registry_stack.url}/v2/", headers=bearer(token), timeout=10).status_code == 200


def test_bad_names_and_unknown_identity(registry_stack: RegistryStack, pusher: Pusher) -> None:
    token = token_for(registry_stack, None, "repository:nobody-xyz.test/app:pull")
    r = httpx.get(f"{registry_stack.url}/v2/nobody-xyz.test/app/manifests/latest", headers=bearer(token), timeout=10)
    assert (r.status_code, code(r)) == (404, "NAME_UNKNOWN"), r.text
    for bad in ("Alice.test/App", f"{pusher.handle}/UPPER", f"{pusher.handle}/a..b"):
        t = token_for(registry_stack, None, f"repository:{bad}:pull")
        r = httpx.get(f"{registry_stack.url}/v2/{bad}/manifests/latest", headers=bearer(t), timeout=10)
        assert (r.status_code, code(r)) == (400, "NAME_INVALID"), r.text


def test_anonymous_pull_token_cannot_push(registry_stack: RegistryStack, pusher: Pusher) -> None:
    token = token_for(registry_stack, None, f"repository:{pusher.handle}/app:pull,push")
    r = httpx.post(f"{registry_stack.url}/v2/{pusher.handle}/app/blobs/uploads/", headers=bearer(token), timeout=10)
    assert r.status_code == 401
    assert "insufficient_scope" in r.headers["WWW-Authenticate"]


def test_push_into_other_namespace_denied(registry_stack: RegistryStack, pusher: Pusher, pds_network) -> None:  # type: ignore[no-untyped-def]
    from tests.support.pdsnet import create_account

    victim = create_account(pds_network.pds_url, "victim")
    token = token_for(registry_stack, pusher, f"repository:{victim.handle}/app:pull,push")
    r = httpx.post(f"{registry_stack.url}/v2/{victim.handle}/app/blobs/uploads/", headers=bearer(token), timeout=10)
    assert (r.status_code, code(r)) == (403, "DENIED"), r.text
    # Even a token minted for the victim's name cannot be used by someone else's subject.
    mine = token_for(registry_stack, pusher, f"repository:{pusher.handle}/app:pull,push")
    r = httpx.put(
        f"{registry_stack.url}/v2/{victim.handle}/app/manifests/latest",
        content=b"{}",
        headers={**bearer(mine), "Content-Type": OCI_MANIFEST},
        timeout=10,
    )
    assert r.status_code in (401, 403)


def test_wrong_credentials_refused(registry_stack: RegistryStack, pusher: Pusher) -> None:
    r = httpx.get(
        f"{registry_stack.url}/auth/token",
        params={"service": registry_stack.host, "scope": f"repository:{pusher.handle}/app:push"},
        auth=(pusher.handle, "wrong-password-1234"),
        timeout=30,
    )
    assert r.status_code == 401
    assert code(r) == "UNAUTHORIZED"


def test_forged_and_garbage_tokens(registry_stack: RegistryStack, pusher: Pusher, push_token: str) -> None:
    head, body, sig = push_token.split(".")
    for bad in (f"{head}.{body}.{sig[::-1]}", "garbage", push_token + "x"):
        r = httpx.get(f"{registry_stack.url}/v2/{pusher.handle}/app/tags/list", headers=bearer(bad), timeout=10)
        assert (r.status_code, code(r)) == (401, "UNAUTHORIZED"), r.text
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_malformed_manifest_and_missing_blob(registry_stack: RegistryStack, pusher: Pusher, push_token: str) -> None:
    url = f"{registry_stack.url}/v2/{pusher.handle}/app/manifests/v1"
    hdrs = {**bearer(push_token), "Content-Type": OCI_MANIFEST}
    r = httpx.put(url, content=b"{not json", headers=hdrs, timeout=10)
    assert (r.status_code, code(r)) == (400, "MANIFEST_INVALID"), r.text
    r = httpx.put(url, content=b'{"schemaVersion":1}', headers=hdrs, timeout=10)
    assert (r.status_code, code(r)) == (400, "MANIFEST_INVALID"), r.text
    missing = "sha256:" + hashlib.sha256(os.urandom(16)).hexdigest()
    r = httpx.put(url, content=manifest_for(missing, []), headers=hdrs, timeout=30)
    assert (r.status_code, code(r)) == (400, "MANIFEST_BLOB_UNKNOWN"), r.text
    assert missing in json.dumps(r.json())
    # Nothing was written for the refused manifests.
    tags = httpx.get(
        f"{registry_stack.url}/v2/{pusher.handle}/app/tags/list", headers=bearer(push_token), timeout=10
    )
    assert tags.status_code == 404 or tags.json()["tags"] == []


def test_digest_mismatch_leaves_nothing(registry_stack: RegistryStack, pusher: Pusher, push_token: str) -> None:
    data = os.urandom(1000)
    wrong = "sha256:" + hashlib.sha256(b"other").hexdigest()
    r = httpx.post(
        f"{registry_stack.url}/v2/{pusher.handle}/app/blobs/uploads/",
        params={"digest": wrong},
        content=data,
        headers=bearer(push_token),
        timeout=30,
    )
    assert (r.status_code, code(r)) == (400, "DIGEST_INVALID"), r.text
    h = httpx.head(f"{registry_stack.url}/v2/{pusher.handle}/app/blobs/{wrong}", headers=bearer(push_token), timeout=10)
    assert h.status_code == 404
    # A manifest whose own digest does not match the reference.
    cfg = upload_blob(registry_stack, pusher, push_token, b"{}")
    body = manifest_for(cfg, [])
    r = httpx.put(
        f"{registry_stack.url}/v2/{pusher.handle}/app/manifests/{wrong}",
        content=body,
        headers={**bearer(push_token), "Content-Type": OCI_MANIFEST},
        timeout=30,
    )
    assert (r.status_code, code(r)) == (400, "DIGEST_INVALID"), r.text


def test_chunk_out_of_order_is_416(registry_stack: RegistryStack, pusher: Pusher, push_token: str) -> None:
    start = httpx.post(f"{registry_stack.url}/v2/{pusher.handle}/app/blobs/uploads/", headers=bearer(push_token), timeout=10)
    assert start.status_code == 202
    loc = registry_stack.url + start.headers["Location"]
    r = httpx.patch(loc, content=b"a" * 10, headers={**bearer(push_token), "Content-Range": "0-9"}, timeout=10)
    assert r.status_code == 202
    assert r.headers["Range"] == "0-9"
    r = httpx.patch(loc, content=b"b" * 10, headers={**bearer(push_token), "Content-Range": "20-29"}, timeout=10)
    assert (r.status_code, code(r)) == (416, "BLOB_UPLOAD_INVALID"), r.text
    status = httpx.get(loc, headers=bearer(push_token), timeout=10)
    assert (status.status_code, status.headers["Range"]) == (204, "0-9")
    data = b"a" * 10 + b"c" * 5
    r = httpx.put(
        loc, params={"digest": "sha256:" + hashlib.sha256(data).hexdigest()}, content=b"c" * 5,
        headers={**bearer(push_token), "Content-Range": "10-14"}, timeout=30,
    )
    assert r.status_code == 201, r.text


def test_manifest_too_large_is_413(registry_stack: RegistryStack, pusher: Pusher, push_token: str) -> None:
    big = b'{"schemaVersion":2,"pad":"' + b"x" * (4 * 1024 * 1024 + 10) + b'"}'
    r = httpx.put(
        f"{registry_stack.url}/v2/{pusher.handle}/app/manifests/big",
        content=big,
        headers={**bearer(push_token), "Content-Type": OCI_MANIFEST},
        timeout=60,
    )
    assert r.status_code == 413
    assert code(r) == "SIZE_INVALID"


def test_unknown_manifest_blob_and_upload(registry_stack: RegistryStack, pusher: Pusher, push_token: str) -> None:
    base = f"{registry_stack.url}/v2/{pusher.handle}/app"
    digest = "sha256:" + "0" * 64
    r = httpx.get(f"{base}/manifests/{digest}", headers=bearer(push_token), timeout=10)
    assert (r.status_code, code(r)) == (404, "MANIFEST_UNKNOWN"), r.text
    r = httpx.get(f"{base}/blobs/{digest}", headers=bearer(push_token), timeout=10)
    assert (r.status_code, code(r)) == (404, "BLOB_UNKNOWN"), r.text
    r = httpx.get(f"{base}/blobs/uploads/{'z' * 32}", headers=bearer(push_token), timeout=10)
    assert (r.status_code, code(r)) == (404, "BLOB_UPLOAD_UNKNOWN"), r.text
    r = httpx.get(f"{base}/blobs/uploads/..%2F..%2Fetc", headers=bearer(push_token), timeout=10)
    assert r.status_code == 404
    r = httpx.get(f"{base}/blobs/sha256:../../etc/passwd", headers=bearer(push_token), timeout=10)
    assert (r.status_code, code(r)) == (400, "DIGEST_INVALID"), r.text


def test_concurrent_pushes_to_one_tag(registry_stack: RegistryStack, pusher: Pusher, push_token: str) -> None:
    cfg = upload_blob(registry_stack, pusher, push_token, b"{}")
    bodies = []
    for i in range(20):
        layer = upload_blob(registry_stack, pusher, push_token, f"layer-{i}".encode())
        bodies.append(manifest_for(cfg, [(layer, len(f"layer-{i}"))]))

    async def put_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.put(
                        f"{registry_stack.url}/v2/{pusher.handle}/app/manifests/race",
                        content=b,
                        headers={**bearer(push_token), "Content-Type": OCI_MANIFEST},
                    )
                    for b in bodies
                )
            )

    responses = asyncio.run(put_all())
    assert [r.status_code for r in responses] == [201] * 20, [r.text for r in responses if r.status_code != 201]
    digests = {"sha256:" + hashlib.sha256(b).hexdigest() for b in bodies}
    r = httpx.get(
        f"{registry_stack.url}/v2/{pusher.handle}/app/manifests/race",
        headers={**bearer(push_token), "Accept": OCI_MANIFEST},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["Docker-Content-Digest"] in digests
    pds = registry_stack.network.pds_url
    tags = httpx.get(
        f"{pds}/xrpc/com.atproto.repo.listRecords",
        params={"repo": pusher.did, "collection": "io.atcr.tag", "limit": 100},
        timeout=30,
    ).json()["records"]
    race = [t for t in tags if t["value"]["tag"] == "race"]
    assert len(race) == 1
    assert race[0]["value"]["manifestDigest"] in digests
    manifests = httpx.get(
        f"{pds}/xrpc/com.atproto.repo.listRecords",
        params={"repo": pusher.did, "collection": "io.atcr.manifest", "limit": 100},
        timeout=30,
    ).json()["records"]
    assert digests <= {m["value"]["digest"] for m in manifests}
