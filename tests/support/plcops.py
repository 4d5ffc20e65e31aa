"""Change an account's DID document through its PDS, as a user migrating or rotating keys does.

`com.atproto.identity.requestPlcOperationSignature` mails a token; the dev-env PDS keeps it in
its account database (`email_token`, purpose `plc_operation`), which the test reads from the
network's scratch directory. `signPlcOperation` then has the PDS sign the operation with its
rotation key, and the test posts it to the PLC directory.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.support.pdsnet import Account, TestNetwork


def _token(network: TestNetwork, did: str) -> str:
    scratch = network.scratch_dir
    assert scratch is not None, "the network is not running"
    for db in Path(scratch).glob("*/account.sqlite"):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute(
                "select token from email_token where did = ? and purpose = 'plc_operation'", (did,)
            ).fetchone()
        finally:
            con.close()
        if row:
            return str(row[0])
    raise RuntimeError(f"no plc_operation token for {did} in the PDS database")


def update_did_document(
    network: TestNetwork,
    account: Account,
    *,
    atproto_key: str | None = None,
    pds_endpoint: str | None = None,
) -> dict[str, Any]:
    """Sign and submit a PLC operation that changes the `#atproto` key and/or the PDS endpoint."""
    with httpx.Client(trust_env=False, timeout=30) as client:
        r = client.post(
            f"{account.pds_url}/xrpc/com.atproto.identity.requestPlcOperationSignature", headers=account.auth_headers
        )
        r.raise_for_status()
        body: dict[str, Any] = {"token": _token(network, account.did)}
        if atproto_key is not None:
            body["verificationMethods"] = {"atproto": atproto_key}
        if pds_endpoint is not None:
            body["services"] = {"atproto_pds": {"type": "AtprotoPersonalDataServer", "endpoint": pds_endpoint}}
        r = client.post(
            f"{account.pds_url}/xrpc/com.atproto.identity.signPlcOperation", json=body, headers=account.auth_headers
        )
        assert r.status_code == 200, r.text
        operation = r.json()["operation"]
        # Straight to the PLC directory: the PDS's submitPlcOperation refuses an `#atproto` key
        # other than its own signing key for the account (which is the point of a rotation
        # test: the PDS keeps signing with the key the DID no longer names).
        r = client.post(f"{network.plc_url}/{account.did}", json=operation)
        assert r.status_code == 200, r.text
        return dict(operation)
