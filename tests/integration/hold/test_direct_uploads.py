"""Direct uploads at the hold (hold/oci_uploads.py): the OCI upload protocol on a capability
URL, over real Valkey and local disk or moto S3. No AppView here: the test plays the AppView
(the initiate call, with a service token) and the OCI client (everything on the URL)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from atcr.keys import load_or_create_secret
from hold.capability import CapabilitySigner
from tests.integration.hold.conftest import MakeHold
from tests.integration.hold.harness import ALICE, BOB, Hold
from tests.integration.hold.test_uploads import fetch, staging_is_empty

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
NSID = "io.atcr.hold.initiateUpload"
BLOBS = "https://appview.example/v2/alice.test/app/blobs/"


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def start(hold: Hold, *, iss: str = ALICE, repository: str = "app", **extra: Any) -> str:
    r = await hold.client.post(
        f"{hold.url}/xrpc/{NSID}",
        json={"direct": {"repository": repository, "blobUrl": BLOBS, **extra}},
        headers=hold.auth(NSID, iss=iss),
    )
    assert r.status_code == 200, r.text
    url = str(r.json()["url"])
    assert url.startswith(f"{hold.url}/_hold/oci/uploads/{r.json()['uploadId']}/")
    return url


def with_digest(url: str, digest: str) -> str:
    return f"{url}?digest={digest}"


async def test_chunked_upload_with_status_and_final_put(make_hold: MakeHold, driver: str) -> None:
    async with make_hold(driver) as hold:
        data = blob(1, 23 * MiB + 777)
        url = await start(hold)
        # Chunks of every shape: short ones that wait as a tail, one that spans parts.
        cuts = [0, 1 * MiB, 3 * MiB, 22 * MiB, len(data)]
        for a, b in zip(cuts, cuts[1:-1], strict=False):
            r = await hold.client.patch(
                url, content=data[a:b], headers={"Content-Range": f"{a}-{b - 1}", "Content-Type": "application/octet-stream"}
            )
            assert r.status_code == 202, r.text
            assert r.headers["Range"] == f"0-{b - 1}"
            url = r.headers["Location"]
        status = await hold.client.get(url)
        assert status.status_code == 204 and status.headers["Range"] == f"0-{22 * MiB - 1}"
        assert status.headers["Docker-Upload-UUID"]
        # The last chunk rides on the closing PUT.
        r = await hold.client.put(
            with_digest(url, digest_of(data)), content=data[22 * MiB :],
            headers={"Content-Range": f"{22 * MiB}-{len(data) - 1}"},
        )
        assert r.status_code == 201, r.text
        assert r.headers["Location"] == BLOBS + digest_of(data)
        assert r.headers["Docker-Content-Digest"] == digest_of(data)
        got = await fetch(hold, digest_of(data))
        assert got.content == data
        assert await staging_is_empty(hold)
        # A finished upload is gone.
        assert (await hold.client.get(url)).status_code == 404


async def test_streamed_patch_then_empty_put_ignores_authorization(make_hold: MakeHold) -> None:
    async with make_hold("filesystem") as hold:
        data = blob(2, 6 * MiB + 5)

        async def stream() -> AsyncIterator[bytes]:
            for i in range(0, len(data), 256 * 1024):
                yield data[i : i + 256 * 1024]

        url = await start(hold)
        junk = {"Authorization": "Bearer not-a-token-anyone-checks"}
        r = await hold.client.patch(url, content=stream(), headers=junk)  # chunked, no length
        assert r.status_code == 202, r.text
        r = await hold.client.put(with_digest(r.headers["Location"], digest_of(data)), headers=junk)
        assert r.status_code == 201, r.text
        assert (await fetch(hold, digest_of(data))).content == data

        # Monolithic: the whole blob on the PUT, and an empty blob.
        for payload in (blob(3, 2 * MiB), b""):
            url = await start(hold)
            r = await hold.client.put(with_digest(url, digest_of(payload)), content=payload)
            assert r.status_code == 201, r.text
            assert (await hold.get_blob(digest_of(payload), method="HEAD")).status_code == 200


async def test_out_of_order_chunk_is_416_and_nothing_moves(make_hold: MakeHold) -> None:
    async with make_hold("filesystem") as hold:
        url = await start(hold)
        r = await hold.client.patch(url, content=b"a" * 100, headers={"Content-Range": "0-99"})
        assert r.status_code == 202
        r = await hold.client.patch(url, content=b"b" * 10, headers={"Content-Range": "200-209"})
        assert r.status_code == 416, r.text
        assert r.headers["Range"] == "0-99" and r.headers["Location"]
        assert r.json()["errors"][0]["code"] == "BLOB_UPLOAD_INVALID"
        assert (await hold.client.get(url)).headers["Range"] == "0-99"


async def test_interrupted_patch_resumes_from_the_status_offset(make_hold: MakeHold) -> None:
    # Local disk here; on moto S3 through the AppView: test_oci_conformance's cut-off test [direct].
    async with make_hold("filesystem") as hold:
        data = blob(4, 24 * MiB)
        url = await start(hold)
        cut = 22 * MiB  # past the first 16 MiB part and its look-ahead, into the second part

        class Cut(Exception):
            pass

        async def broken() -> AsyncIterator[bytes]:
            for i in range(0, cut, MiB):
                yield data[i : i + MiB]
            raise Cut()

        with pytest.raises(Cut):
            await hold.client.patch(url, content=broken())
        # The server notices the cut; the upload then answers where its stored bytes end.
        key = f"hold:oci:{urlsplit(url).path.split('/')[-2]}:lock"
        for _ in range(600):
            if not await hold.services.valkey.exists(key):
                break
            await asyncio.sleep(0.05)
        status = await hold.client.get(url)
        assert status.status_code == 204, status.text
        offset = int(status.headers["Range"].split("-")[1]) + 1
        assert offset == 16 * MiB  # the committed part; the cut one was dropped
        r = await hold.client.patch(url, content=data[offset:], headers={"Content-Range": f"{offset}-{len(data) - 1}"})
        assert r.status_code == 202, r.text
        r = await hold.client.put(with_digest(r.headers["Location"], digest_of(data)))
        assert r.status_code == 201, r.text
        assert (await fetch(hold, digest_of(data))).content == data


def staged_bytes(hold: Hold) -> int:
    """Bytes in the local driver's staging area (open uploads keep an empty directory there)."""
    root = hold.settings.storage_root_dir / "uploads"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def with_cap(url: str, token: str) -> str:
    """`url` with its capability segment replaced."""
    return url.rsplit("/", 1)[0] + "/" + token


def cap_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[-1]


async def test_forged_expired_and_foreign_capabilities_are_refused(make_hold: MakeHold) -> None:
    async with make_hold("filesystem") as hold:
        alice = await start(hold)
        bob = await start(hold, iss=BOB, repository="other")
        alice_id = urlsplit(alice).path.split("/")[-2]
        token = cap_of(alice)
        payload, mac = token.split(".")
        forged = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + mac
        secret = load_or_create_secret(hold.settings.url_secret_path)
        expired = CapabilitySigner(secret, clock=lambda: 1_000_000.0).issue(
            did=ALICE, repository="app", upload=alice_id, max_size=10 * MiB, blob_url=BLOBS, ttl=60
        )
        refused = {
            "forged": with_cap(alice, forged),
            "expired": with_cap(alice, expired),
            "not a capability": with_cap(alice, "x"),
            "bob's capability on alice's upload": with_cap(alice, cap_of(bob)),
            "alice's capability on bob's upload": with_cap(bob, token),
        }
        for name, url in refused.items():
            for method in ("PATCH", "GET", "DELETE"):
                r = await hold.client.request(method, url, content=b"x" * 1000 if method == "PATCH" else None)
                assert r.status_code == 403, (name, method, r.text)
                assert r.json()["errors"][0]["code"] == "DENIED"
            r = await hold.client.put(with_digest(url, digest_of(b"x" * 10)), content=b"x" * 10)
            assert r.status_code == 403, (name, r.text)
        # Nothing was written to either upload, and both still work for their owners.
        for url in (alice, bob):
            assert (await hold.client.get(url)).headers["Range"] == "0-0"
        assert staged_bytes(hold) == 0
        # The upload's own session also refuses another user's capability for it: a capability
        # is bound to (user, repository, upload), and the session to (user, repository).
        assert (await hold.client.delete(alice)).status_code == 204
        assert (await hold.client.get(alice)).status_code == 404


async def test_size_limit_is_enforced_before_storing(make_hold: MakeHold) -> None:
    async with make_hold("filesystem") as hold:
        url = await start(hold, maxSize=1000)
        r = await hold.client.patch(url, content=b"x" * 1001, headers={"Content-Range": "0-1000"})
        assert r.status_code == 413, r.text
        assert r.json()["errors"][0]["code"] == "SIZE_INVALID"
        assert (await hold.client.get(url)).headers["Range"] == "0-0"
        assert staged_bytes(hold) == 0


async def test_wrong_digest_leaves_nothing(make_hold: MakeHold) -> None:
    async with make_hold("filesystem") as hold:
        url = await start(hold)
        data = blob(5, 3000)
        r = await hold.client.put(with_digest(url, digest_of(b"other")), content=data)
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID", r.text
        assert (await hold.client.get(url)).status_code == 404
        assert await staging_is_empty(hold)
        assert (await hold.get_blob(digest_of(data), method="HEAD")).status_code == 404


async def test_did_document_advertises_direct_uploads(make_hold: MakeHold) -> None:
    async with make_hold("filesystem") as hold:
        for bad in (
            {"repository": "App/../x", "blobUrl": BLOBS},
            {"repository": "app", "blobUrl": "ftp://x/v2/a/blobs/"},
            {"repository": "app", "blobUrl": "https://x/v2/a/manifests/"},
            {"repository": "app", "blobUrl": BLOBS, "maxSize": -1},
            "app",
        ):
            r = await hold.client.post(f"{hold.url}/xrpc/{NSID}", json={"direct": bad}, headers=hold.auth(NSID))
            assert r.status_code == 400 and r.json()["error"] == "InvalidRequest", r.text
        doc = (await hold.client.get(f"{hold.url}/.well-known/did.json")).json()
        assert {"id": "#atcr_direct_upload", "type": "AtcrHoldDirectUpload", "serviceEndpoint": hold.url} in doc[
            "service"
        ]
    async with make_hold("filesystem", hold_direct_uploads="false") as hold:
        doc = (await hold.client.get(f"{hold.url}/.well-known/did.json")).json()
        assert all(s["id"] != "#atcr_direct_upload" for s in doc["service"])
        r = await hold.client.post(
            f"{hold.url}/xrpc/{NSID}", json={"direct": {"repository": "app", "blobUrl": BLOBS}}, headers=hold.auth(NSID)
        )
        assert r.status_code == 400 and "direct" in r.json()["message"]



async def test_open_direct_uploads_per_user_are_capped(make_hold: MakeHold) -> None:
    async with make_hold("filesystem", hold_max_open_uploads=2) as hold:
        first, second = await start(hold), await start(hold)
        r = await hold.client.post(
            f"{hold.url}/xrpc/{NSID}", json={"direct": {"repository": "app", "blobUrl": BLOBS}}, headers=hold.auth(NSID)
        )
        assert r.status_code == 429 and r.json()["error"] == "TooManyUploads", r.text
        await start(hold, iss=BOB)  # another user's count is their own
        # Finishing or cancelling one frees its place.
        assert (await hold.client.delete(first)).status_code == 204
        third = await start(hold)
        r = await hold.client.put(with_digest(second, digest_of(b"")))
        assert r.status_code == 201, r.text
        await start(hold)
        assert (await hold.client.get(third)).status_code == 204


async def test_a_blob_whole_in_its_closing_request_is_written_once(
    make_hold: MakeHold, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob under a part's minimum that is whole in the closing PUT (with what earlier chunks
    left as the tail) is hashed in memory and stored at its address in one write: no storage
    part is opened. At the minimum it takes the part path. Either way the bytes are exact,
    nothing stays staged, and a wrong digest stores nothing."""
    async with make_hold(driver) as hold:
        store: Any = hold.services.store
        opened: list[int] = []
        real = store.part_writer

        def counting(upload: Any, number: int, **kw: Any) -> Any:
            opened.append(number)
            return real(upload, number, **kw)

        monkeypatch.setattr(store, "part_writer", counting)
        minimum = hold.settings.upload_part_min_size

        # Chunked: a PATCH leaves a tail, the closing PUT brings the rest.
        data = blob(7, minimum - 1)
        url = await start(hold)
        r = await hold.client.patch(url, content=data[:1000], headers={"Content-Range": "0-999"})
        assert r.status_code == 202, r.text
        r = await hold.client.put(
            with_digest(r.headers["Location"], digest_of(data)), content=data[1000:],
            headers={"Content-Range": f"1000-{len(data) - 1}"},
        )
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == digest_of(data)
        assert (await fetch(hold, digest_of(data))).content == data
        assert opened == [] and await staging_is_empty(hold)

        # The same blob again, monolithic: already stored, answered the same, nothing staged.
        url = await start(hold)
        r = await hold.client.put(with_digest(url, digest_of(data)), content=data)
        assert r.status_code == 201, r.text
        assert (await fetch(hold, digest_of(data))).content == data
        assert opened == [] and await staging_is_empty(hold)

        # A wrong digest on a tail and a body removes the upload and stores nothing.
        other = blob(8, 5000)
        url = await start(hold)
        r = await hold.client.patch(url, content=other[:100], headers={"Content-Range": "0-99"})
        url = r.headers["Location"]
        r = await hold.client.put(with_digest(url, digest_of(b"not it")), content=other[100:])
        assert r.status_code == 400 and r.json()["errors"][0]["code"] == "DIGEST_INVALID", r.text
        assert (await hold.client.get(url)).status_code == 404
        assert (await hold.get_blob(digest_of(other), method="HEAD")).status_code == 404
        assert opened == [] and await staging_is_empty(hold)

        # At the minimum the blob goes through storage parts, as large ones do.
        big = blob(9, minimum)
        url = await start(hold)
        r = await hold.client.put(with_digest(url, digest_of(big)), content=big)
        assert r.status_code == 201, r.text
        assert (await fetch(hold, digest_of(big))).content == big
        assert opened == [1] and await staging_is_empty(hold)
