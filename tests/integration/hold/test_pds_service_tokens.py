"""Service tokens minted by a real PDS (`getServiceAuth`) against the hold: accepted, and
each kind of bad token refused with its own error. DID documents come from the local PLC."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.serviceauth import ServiceAuthVerifier, sign_low_s
from tests.integration.hold.harness import Hold, running_hold
from tests.support.pdsnet import Account, TestNetwork, create_account

pytestmark = pytest.mark.integration

INITIATE = "io.atcr.hold.initiateUpload"


async def service_token(account: Account, aud: str, lxm: str) -> str:
    async with httpx.AsyncClient(timeout=30, trust_env=False) as client:
        r = await client.get(
            f"{account.pds_url}/xrpc/com.atproto.server.getServiceAuth",
            params={"aud": aud, "lxm": lxm},
            headers=account.auth_headers,
        )
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def reencode(token: str, **changes: Any) -> str:
    header, claims, sig = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(claims + "=="))
    decoded.update(changes)
    body = base64.urlsafe_b64encode(json.dumps(decoded).encode()).rstrip(b"=").decode()
    return f"{header}.{body}.{sig}"


def resign(token: str, key: ec.EllipticCurvePrivateKey) -> str:
    header, claims, _ = token.split(".")
    sig = sign_low_s(key, f"{header}.{claims}".encode())
    return f"{header}.{claims}." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()


async def initiate(hold: Hold, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return await hold.client.post(f"{hold.url}/xrpc/{INITIATE}", json={}, headers=headers)


async def test_real_pds_tokens(tmp_path: Path, valkey_url: str, pds_network: TestNetwork, pds_account: Account) -> None:
    runtime_env = {"ATCR_PLC_URL": pds_network.plc_url, "ATCR_HANDLE_RESOLVER_URL": pds_network.pds_url}
    # The reference PDS refuses `did:web:127.0.0.1%3A<port>` as an audience but takes a
    # host name with a port, so this hold is published as localhost (docs/hold.md).
    async with running_hold(tmp_path, valkey_url, runtime_env=runtime_env, public_host="localhost") as hold:
        aud = f"{hold.did}#atcr_hold"

        good = await service_token(pds_account, aud, INITIATE)
        r = await initiate(hold, good)
        assert r.status_code == 200, r.text
        assert hold.services.uploads is not None
        # The upload belongs to the token's issuer.
        session = await hold.services.uploads._load(r.json()["uploadId"], pds_account.did)
        assert session.did == pds_account.did

        legacy = await service_token(pds_account, hold.did, INITIATE)  # bare DID audience
        assert (await initiate(hold, legacy)).status_code == 200

        async def refused(token: str | None, error: str) -> None:
            resp = await initiate(hold, token)
            assert resp.status_code == 401, resp.text
            assert resp.json()["error"] == error, resp.text

        await refused(None, "AuthMissing")
        await refused(good, "JwtReplayed")  # second use of the same jti
        elsewhere = await service_token(pds_account, "did:web:elsewhere.example#atcr_hold", INITIATE)
        await refused(elsewhere, "BadJwtAudience")
        await refused(await service_token(pds_account, aud, "io.atcr.hold.abortUpload"), "BadJwtLexiconMethod")
        fresh = await service_token(pds_account, aud, INITIATE)
        await refused(resign(fresh, ec.generate_private_key(ec.SECP256K1())), "BadJwtSignature")  # forged
        mallory = create_account(pds_network.pds_url, "mallory")
        await refused(reencode(fresh, iss=mallory.did), "BadJwtSignature")  # claims another issuer
        await refused(reencode(fresh, lxm="io.atcr.hold.completeUpload"), "BadJwtLexiconMethod")
        await refused(fresh[:-10] + "AAAAAAAAAA", "BadJwtSignature")

        # Expired: the same verifier, ten minutes later.
        later = ServiceAuthVerifier(
            service_did=hold.did,
            keys=hold.services.auth.verifier.keys,
            replay=None,
            service_fragment="atcr_hold",
            clock=lambda: time.time() + 600,
        )
        hold.services.auth.verifier = later
        await refused(await service_token(pds_account, aud, INITIATE), "JwtExpired")
