"""The loopback AT Protocol network (PLC + PDS from @atproto/dev-env) works as tests expect."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import fixtures_pds
from tests.support.pdsnet import Account, TestNetwork, create_app_password, iter_listening_ports

# Until these move into tests/conftest.py: expose the plugin's fixtures to this module.
# (Assignments rather than importing the two names with a noqa comment, which
# ruff still flags as F811 on every test parameter of the same name.)
pds_network = fixtures_pds.pds_network
pds_account = fixtures_pds.pds_account

pytestmark = pytest.mark.integration

MANIFEST = "io.atcr.manifest"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=60.0, trust_env=False) as client:
        yield client


def _manifest_record(repository: str, digest: str, **extra: Any) -> dict[str, Any]:
    return {
        "$type": MANIFEST,
        "repository": repository,
        "digest": digest,
        "mediaType": OCI_MANIFEST,
        "schemaVersion": 2,
        "layers": [],
        "createdAt": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        **extra,
    }


def _put_record(
    http: httpx.Client, acct: Account, rkey: str, record: dict[str, Any], swap_record: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"repo": acct.did, "collection": MANIFEST, "rkey": rkey, "record": record}
    if swap_record is not None:
        body["swapRecord"] = swap_record
    return http.post(f"{acct.pds_url}/xrpc/com.atproto.repo.putRecord", json=body, headers=acct.auth_headers)


def test_network_binds_loopback_only(pds_network: TestNetwork) -> None:
    assert pds_network.pid is not None
    if not os.path.isdir(f"/proc/{pds_network.pid}"):
        pytest.skip("needs Linux /proc")
    listening = list(iter_listening_ports(pds_network.pid))
    ports = {port for _, port in listening}
    assert urlsplit(pds_network.plc_url).port in ports
    assert urlsplit(pds_network.pds_url).port in ports
    for addr, port in listening:
        assert addr == "0100007F", f"port {port} listens on {addr}, not 127.0.0.1"
    assert urlsplit(pds_network.plc_url).hostname == "127.0.0.1"
    assert urlsplit(pds_network.pds_url).hostname in {"localhost", "127.0.0.1"}


def test_create_account(pds_account: Account) -> None:
    assert pds_account.did.startswith("did:plc:")
    assert pds_account.handle.startswith("alice-") and pds_account.handle.endswith(".test")
    assert pds_account.access_jwt and pds_account.refresh_jwt


def test_app_password_can_log_in(pds_account: Account, http: httpx.Client) -> None:
    app_pw = create_app_password(pds_account, "atcr-test")
    assert app_pw and app_pw != pds_account.password
    resp = http.post(
        f"{pds_account.pds_url}/xrpc/com.atproto.server.createSession",
        json={"identifier": pds_account.handle, "password": app_pw},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["did"] == pds_account.did


def test_plc_did_document_points_at_pds(pds_network: TestNetwork, pds_account: Account, http: httpx.Client) -> None:
    resp = http.get(f"{pds_network.plc_url}/{pds_account.did}")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    assert doc["id"] == pds_account.did
    assert f"at://{pds_account.handle}" in doc["alsoKnownAs"]
    services = {s["id"]: s for s in doc["service"]}
    pds = services.get("#atproto_pds") or services[f"{pds_account.did}#atproto_pds"]
    assert pds["type"] == "AtprotoPersonalDataServer"
    assert pds["serviceEndpoint"] == pds_network.pds_url


def test_resolve_handle(pds_account: Account, http: httpx.Client) -> None:
    resp = http.get(
        f"{pds_account.pds_url}/xrpc/com.atproto.identity.resolveHandle",
        params={"handle": pds_account.handle},
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["did"] == pds_account.did
    # the well-known route, as a handle resolver would use it for a .test handle
    resp = http.get(f"{pds_account.pds_url}/.well-known/atproto-did", headers={"Host": pds_account.handle})
    assert resp.status_code == 200, resp.text
    assert resp.text.strip() == pds_account.did


def test_put_then_get_manifest_record(pds_account: Account, http: httpx.Client) -> None:
    digest_hex = hashlib.sha256(secrets.token_bytes(64)).hexdigest()
    record = _manifest_record("myapp", f"sha256:{digest_hex}")
    resp = _put_record(http, pds_account, digest_hex, record)
    assert resp.status_code == 200, resp.text
    put = resp.json()
    assert put["uri"] == f"at://{pds_account.did}/{MANIFEST}/{digest_hex}"

    resp = http.get(
        f"{pds_account.pds_url}/xrpc/com.atproto.repo.getRecord",
        params={"repo": pds_account.did, "collection": MANIFEST, "rkey": digest_hex},
    )
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["uri"] == put["uri"]
    assert got["cid"] == put["cid"]
    assert got["value"] == record


def test_upload_blob_then_get_blob(pds_account: Account, http: httpx.Client) -> None:
    data = secrets.token_bytes(3 * 1024 * 1024)
    resp = http.post(
        f"{pds_account.pds_url}/xrpc/com.atproto.repo.uploadBlob",
        content=data,
        headers={**pds_account.auth_headers, "Content-Type": OCI_MANIFEST},
    )
    assert resp.status_code == 200, resp.text
    blob = resp.json()["blob"]
    assert blob["size"] == len(data)
    cid = blob["ref"]["$link"]

    # An unreferenced upload is only temporary: reference it from a record, as ATCR does.
    digest_hex = hashlib.sha256(data).hexdigest()
    record = _manifest_record("myapp", f"sha256:{digest_hex}", manifestBlob=blob)
    resp = _put_record(http, pds_account, digest_hex, record)
    assert resp.status_code == 200, resp.text

    resp = http.get(
        f"{pds_account.pds_url}/xrpc/com.atproto.sync.getBlob",
        params={"did": pds_account.did, "cid": cid},
    )
    assert resp.status_code == 200, resp.text[:500]
    assert len(resp.content) == len(data)
    assert resp.content == data


def test_put_record_with_stale_swap_is_invalid_swap(pds_account: Account, http: httpx.Client) -> None:
    rkey = "swaptest"
    r1 = _put_record(http, pds_account, rkey, _manifest_record("swap", "sha256:" + "1" * 64))
    assert r1.status_code == 200, r1.text
    cid1 = r1.json()["cid"]

    r2 = _put_record(http, pds_account, rkey, _manifest_record("swap", "sha256:" + "2" * 64), swap_record=cid1)
    assert r2.status_code == 200, r2.text
    cid2 = r2.json()["cid"]
    assert cid2 != cid1

    r3 = _put_record(http, pds_account, rkey, _manifest_record("swap", "sha256:" + "3" * 64), swap_record=cid1)
    assert r3.status_code == 400, r3.text
    assert r3.json()["error"] == "InvalidSwap"

    resp = http.get(
        f"{pds_account.pds_url}/xrpc/com.atproto.repo.getRecord",
        params={"repo": pds_account.did, "collection": MANIFEST, "rkey": rkey},
    )
    assert resp.json()["cid"] == cid2
