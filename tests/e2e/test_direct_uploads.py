"""Direct uploads end to end (docs/direct-uploads.md): real skopeo and oras push through an
AppView with ATCR_DIRECT_UPLOADS=auto, and no layer byte reaches the AppView.

A counting proxy stands in front of the `direct_stack` AppView and records every request the
clients send it with its body size; the hold is `registry_stack`'s (moto S3). Pulls go back
through the AppView and must be byte-identical.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_registry_clients import blob_files, skopeo
from tests.support.counting_proxy import CountingProxy
from tests.support.fixtures_stack import Pusher, RegistryStack, token_for
from tests.support.ocilayout import Layout
from tests.support.pdsnet import create_account, create_app_password

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


def seeded(seed: int | str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_bytes_at_appview(proxy: CountingProxy) -> list[tuple[str, str, int]]:
    """Requests to the AppView's upload and blob URLs that carried a body."""
    return [r for r in proxy.requests if "/blobs/" in r[1] and r[2] > 0]


async def test_skopeo_and_oras_push_straight_to_the_hold(
    tmp_path: Path, direct_stack: RegistryStack, pusher: Pusher
) -> None:
    layout = Layout(tmp_path / "src")
    # Bytes no other test of the session pushed to the shared hold (a blob the hold has already
    # answers the HEAD and is never uploaded): seeded by this session's account.
    layers = [layout.add_blob(seeded(f"{pusher.did}/1", 7 * MiB + 3)), layout.add_blob(seeded(f"{pusher.did}/2", 300_000))]
    desc = layout.image(layers=layers)
    layout.tag(desc, "v1")
    async with CountingProxy(direct_stack.url) as proxy:
        host = proxy.url.removeprefix("http://")
        await asyncio.to_thread(
            skopeo, "copy", "--preserve-digests", "--dest-tls-verify=false",
            f"--dest-creds={pusher.handle}:{pusher.app_password}",
            f"oci:{layout.root}:v1", f"docker://{host}/{pusher.handle}/direct:v1",
        )
        posts = [r for r in proxy.requests if r[0] == "POST" and r[1].endswith("/blobs/uploads/")]
        # The two layers are started here (and the config, unless an earlier test already put
        # those bytes, the same in every Layout image, on the shared hold: then its HEAD answers) ...
        assert len(posts) in (2, 3), proxy.requests
        assert not [r for r in proxy.requests if r[0] in ("PATCH", "PUT") and "/blobs/uploads/" in r[1]]
        assert upload_bytes_at_appview(proxy) == []  # ... and sent elsewhere
        manifest_puts = [r for r in proxy.requests if r[0] == "PUT" and "/manifests/" in r[1]]
        assert len(manifest_puts) == 1

        out = tmp_path / "out"
        await asyncio.to_thread(
            skopeo, "copy", "--preserve-digests", "--src-tls-verify=false",
            f"docker://{host}/{pusher.handle}/direct:v1", f"oci:{out}:pulled",
        )
        got = blob_files(out)
        for digest, data in layout.blobs.items():
            assert got[digest[7:]] == data, digest

        # oras (PyPI): its small-file push is POST + monolithic PUT on the Location.
        import oras.client

        proxy.reset()
        artifact = tmp_path / "notes.bin"
        artifact.write_bytes(seeded(3, 2 * MiB))
        client = oras.client.OrasClient(hostname=host, insecure=True)
        client.auth.set_basic_auth(pusher.handle, pusher.app_password)
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            resp = await asyncio.to_thread(
                client.push, target=f"{host}/{pusher.handle}/notes:v1", files=["notes.bin:application/octet-stream"]
            )
        finally:
            os.chdir(cwd)
        assert resp.status_code == 201, resp.text
        assert upload_bytes_at_appview(proxy) == []
        pulled = await asyncio.to_thread(
            client.pull, target=f"{host}/{pusher.handle}/notes:v1", outdir=str(tmp_path / "pulled")
        )
        assert [Path(p).read_bytes() for p in pulled] == [artifact.read_bytes()]


def _manifest(config: bytes, layers: list[bytes]) -> bytes:
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(x), "size": len(x)}
                   for x in layers],
    }).encode()


async def test_a_directly_uploaded_layer_serves_the_manifest_and_stays_the_users(
    direct_stack: RegistryStack, pusher: Pusher
) -> None:
    """The manifest PUT (on the AppView) finds a layer the hold took directly; another user's
    capability does not open this user's upload. (Resuming a cut upload: test_oci_conformance.)"""
    name = f"{pusher.handle}/resume"
    token = await asyncio.to_thread(token_for, direct_stack, pusher, f"repository:{name}:pull,push")
    auth = {"Authorization": f"Bearer {token}"}
    layer, config = seeded(4, 6 * MiB + 1), b'{"architecture":"amd64","os":"linux"}'
    async with httpx.AsyncClient(timeout=120, headers=auth) as http:
        r = await http.post(f"{direct_stack.url}/v2/{name}/blobs/uploads/")
        assert r.status_code == 202, r.text
        url = r.headers["Location"]
        hold_url = direct_stack.hold.url.replace("127.0.0.1", "localhost")
        assert url.startswith(hold_url + "/_hold/oci/uploads/"), url
        r = await http.patch(url, content=layer, headers={"Content-Range": f"0-{len(layer) - 1}"})
        assert r.status_code == 202, r.text
        r = await http.put(r.headers["Location"], params={"digest": digest_of(layer)})
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == f"{direct_stack.url}/v2/{name}/blobs/{digest_of(layer)}"

        # A second user's capability does not open this user's upload.
        r = await http.post(f"{direct_stack.url}/v2/{name}/blobs/uploads/")
        mine = r.headers["Location"]
        other = await asyncio.to_thread(create_account, direct_stack.network.pds_url, "other")
        other_pw = await asyncio.to_thread(create_app_password, other, "docker")
        theirs_token = await asyncio.to_thread(
            token_for, direct_stack, Pusher(account=other, app_password=other_pw),
            f"repository:{other.handle}/x:pull,push",
        )
        r = await http.post(
            f"{direct_stack.url}/v2/{other.handle}/x/blobs/uploads/", headers={"Authorization": f"Bearer {theirs_token}"}
        )
        swapped = mine.rsplit("/", 1)[0] + "/" + r.headers["Location"].rsplit("/", 1)[1]
        r = await http.patch(swapped, content=b"x" * 100, headers={"Content-Range": "0-99"})
        assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
        assert (await http.get(mine)).headers["Range"] == "0-0"
        assert (await http.delete(mine)).status_code == 204

        # The config goes up monolithically on the AppView (POST ?digest=), the manifest finds both.
        r = await http.post(
            f"{direct_stack.url}/v2/{name}/blobs/uploads/", params={"digest": digest_of(config)}, content=config
        )
        assert r.status_code == 201, r.text
        manifest = _manifest(config, [layer])
        r = await http.put(
            f"{direct_stack.url}/v2/{name}/manifests/v1", content=manifest,
            headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert r.status_code == 201, r.text
        got = await http.get(f"{direct_stack.url}/v2/{name}/blobs/{digest_of(layer)}", follow_redirects=True)
        assert got.status_code == 200 and got.content == layer
