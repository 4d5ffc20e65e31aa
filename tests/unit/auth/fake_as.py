"""A fake ATProto authorization server + PDS behind `httpx.MockTransport`, strict where it matters.

It verifies what a real one does (DPoP proofs: signature, htm/htu, nonce, ath, key binding;
PKCE S256; client assertions for the confidential client; single-use refresh tokens, where a
replay revokes the whole session) and can be told to misbehave (wrong `sub`, no DPoP, ...).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from atcr.identity import DidDocument, Identity

ISSUER = "https://as.example.com"
PDS = "https://pds.example.com"
DID = "did:plc:alice0000000000000000000"
HANDLE = "alice.example.com"
OTHER_DID = "did:plc:mallory000000000000000000"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _err(status: int, error: str, *, dpop: bool = False, nonce: str | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if nonce:
        headers["DPoP-Nonce"] = nonce
    if dpop:
        headers["WWW-Authenticate"] = f'DPoP error="{error}", error_description="{error}"'
    return httpx.Response(
        status, headers=headers, content=json.dumps({"error": error, "error_description": error}).encode()
    )


@dataclass
class Grant:
    did: str
    jkt: str
    scope: str
    family: str
    expires_at: float


@dataclass
class FakeAuthServer:
    confidential_jwks: dict[str, Any] | None = None
    client_id: str | None = None
    nonce: str = field(default_factory=lambda: secrets.token_urlsafe(8))
    access_lifetime: int = 300
    sub_override: str | None = None
    token_type: str = "DPoP"
    scope_override: str | None = None
    metadata_overrides: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, dict[str, str]] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    access: dict[str, Grant] = field(default_factory=dict)
    refresh: dict[str, Grant] = field(default_factory=dict)
    spent_refresh: dict[str, str] = field(default_factory=dict)
    revoked_families: set[str] = field(default_factory=set)
    seen_jti: set[str] = field(default_factory=set)
    calls: list[str] = field(default_factory=list)
    resource_calls: list[tuple[str, str]] = field(default_factory=list)

    # --- helpers for tests ---------------------------------------------------------------------

    def count(self, what: str) -> int:
        return sum(1 for c in self.calls if c == what)

    def rotate_nonce(self) -> None:
        self.nonce = secrets.token_urlsafe(8)

    def approve(self, authorize_url: str, did: str = DID) -> dict[str, str]:
        """The user approves: returns the callback query (code, state, iss)."""
        query = dict(parse_qsl(urlsplit(authorize_url).query))
        params = self.requests.pop(query["request_uri"])
        assert query["client_id"] == params["client_id"]
        code = "cod-" + secrets.token_urlsafe(16)
        self.codes[code] = {**params, "did": did}
        return {"code": code, "state": params["state"], "iss": ISSUER}

    def expire_all_access(self) -> None:
        for grant in self.access.values():
            grant.expires_at = 0

    # --- DPoP ------------------------------------------------------------------------------------

    def _proof(self, request: httpx.Request, *, access_token: str | None) -> tuple[str | None, httpx.Response | None]:
        proof = request.headers.get("dpop")
        if not proof:
            return None, _err(400, "invalid_dpop_proof")
        header_b64 = proof.split(".")[0]
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
        if header.get("typ") != "dpop+jwt" or header.get("alg") != "ES256" or "d" in header.get("jwk", {}):
            return None, _err(400, "invalid_dpop_proof")
        key = ECKey.import_key(header["jwk"])
        claims = jwt.decode(proof, key, algorithms=["ES256"]).claims
        url = request.url
        htu = f"{url.scheme}://{request.headers.get('host', url.netloc.decode())}{url.path}"
        if claims.get("htm") != request.method or claims.get("htu") != htu:
            return None, _err(400, "invalid_dpop_proof")
        if abs(time.time() - int(claims["iat"])) > 60 or claims["jti"] in self.seen_jti:
            return None, _err(400, "invalid_dpop_proof")
        self.seen_jti.add(claims["jti"])
        if claims.get("nonce") != self.nonce:
            return None, _err(
                400 if access_token is None else 401, "use_dpop_nonce", dpop=access_token is not None, nonce=self.nonce
            )
        if access_token is not None:
            if claims.get("ath") != _b64(hashlib.sha256(access_token.encode()).digest()):
                return None, _err(401, "invalid_dpop_proof", dpop=True)
        elif "ath" in claims:
            return None, _err(400, "invalid_dpop_proof")
        return key.thumbprint(), None

    def _client_ok(self, form: dict[str, str]) -> bool:
        if self.confidential_jwks is None:
            return "client_assertion" not in form
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return False
        token = jwt.decode(
            form["client_assertion"], KeySet.import_key_set(self.confidential_jwks), algorithms=["ES256"]
        )
        c = token.claims
        if c.get("iss") != self.client_id or c.get("sub") != self.client_id or c.get("aud") != ISSUER:
            return False
        if c["jti"] in self.seen_jti or int(c["exp"]) < time.time():
            return False
        self.seen_jti.add(c["jti"])
        return form.get("client_id") == self.client_id

    # --- endpoints ---------------------------------------------------------------------------------

    def metadata(self) -> dict[str, Any]:
        doc = {
            "issuer": ISSUER,
            "authorization_endpoint": f"{ISSUER}/oauth/authorize",
            "token_endpoint": f"{ISSUER}/oauth/token",
            "pushed_authorization_request_endpoint": f"{ISSUER}/oauth/par",
            "revocation_endpoint": f"{ISSUER}/oauth/revoke",
            "require_pushed_authorization_requests": True,
            "code_challenge_methods_supported": ["S256"],
            "dpop_signing_alg_values_supported": ["ES256"],
            "response_types_supported": ["code"],
            "client_id_metadata_document_supported": True,
            "authorization_response_iss_parameter_supported": True,
            "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["ES256"],
            "scopes_supported": ["atproto", "transition:generic"],
        }
        doc.update(self.metadata_overrides)
        return doc

    def _tokens(self, grant: Grant) -> dict[str, Any]:
        access = "at-" + secrets.token_urlsafe(16)
        refresh = "rt-" + secrets.token_urlsafe(16)
        grant.expires_at = time.time() + self.access_lifetime
        self.access[access] = grant
        self.refresh[refresh] = grant
        return {
            "access_token": access,
            "refresh_token": refresh,
            "token_type": self.token_type,
            "expires_in": self.access_lifetime,
            "scope": self.scope_override or grant.scope,
            "sub": self.sub_override or grant.did,
        }

    def handle(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        path = url.path
        if url.host == "pds.example.com":
            if path == "/.well-known/oauth-protected-resource":
                return httpx.Response(200, json={"resource": PDS, "authorization_servers": [ISSUER]})
            return self._resource(request)
        if path == "/.well-known/oauth-authorization-server":
            return httpx.Response(200, json=self.metadata())
        form = dict(parse_qsl(request.content.decode()))
        if path == "/oauth/par":
            self.calls.append("par")
            jkt, refusal = self._proof(request, access_token=None)
            if refusal is not None:
                return refusal
            if not self._client_ok(form) or form.get("code_challenge_method") != "S256":
                return _err(400, "invalid_request")
            uri = "urn:ietf:params:oauth:request_uri:req-" + secrets.token_hex(8)
            self.requests[uri] = {**form, "jkt": jkt or ""}
            return httpx.Response(201, json={"request_uri": uri, "expires_in": 300}, headers={"DPoP-Nonce": self.nonce})
        if path == "/oauth/token":
            self.calls.append(form.get("grant_type", "?"))
            jkt, refusal = self._proof(request, access_token=None)
            if refusal is not None:
                return refusal
            if not self._client_ok(form):
                return _err(401, "invalid_client")
            if form.get("grant_type") == "authorization_code":
                req = self.codes.pop(form.get("code", ""), None)
                if req is None or req["jkt"] != jkt or req["redirect_uri"] != form.get("redirect_uri"):
                    return _err(400, "invalid_grant")
                challenge = _b64(hashlib.sha256(form.get("code_verifier", "").encode()).digest())
                if challenge != req["code_challenge"]:
                    return _err(400, "invalid_grant")
                grant = Grant(
                    did=req["did"], jkt=jkt or "", scope=req["scope"], family=secrets.token_hex(4), expires_at=0
                )
                return httpx.Response(200, json=self._tokens(grant), headers={"DPoP-Nonce": self.nonce})
            if form.get("grant_type") == "refresh_token":
                token = form.get("refresh_token", "")
                if token in self.spent_refresh:  # replay: the whole session dies
                    self.revoked_families.add(self.spent_refresh[token])
                    return _err(400, "invalid_grant")
                grant = self.refresh.pop(token, None)
                if grant is None or grant.family in self.revoked_families or grant.jkt != jkt:
                    return _err(400, "invalid_grant")
                self.spent_refresh[token] = grant.family
                fresh = Grant(did=grant.did, jkt=grant.jkt, scope=grant.scope, family=grant.family, expires_at=0)
                return httpx.Response(200, json=self._tokens(fresh), headers={"DPoP-Nonce": self.nonce})
            return _err(400, "unsupported_grant_type")
        if path == "/oauth/revoke":
            self.calls.append("revoke")
            grant = self.refresh.get(form.get("token", ""))
            if grant is not None:
                self.revoked_families.add(grant.family)
            return httpx.Response(200, json={})
        return httpx.Response(404)

    def _resource(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme != "DPoP":
            return _err(401, "invalid_token", dpop=True)
        jkt, refusal = self._proof(request, access_token=token)
        if refusal is not None:
            return refusal
        grant = self.access.get(token)
        if grant is None or grant.jkt != jkt or grant.family in self.revoked_families or grant.expires_at < time.time():
            return _err(401, "invalid_token", dpop=True, nonce=self.nonce)
        nsid = request.url.path.rsplit("/", 1)[-1]
        self.resource_calls.append((nsid, grant.did))
        if nsid == "com.atproto.server.getServiceAuth":
            return httpx.Response(200, json={"token": "h.e.s"}, headers={"DPoP-Nonce": self.nonce})
        if nsid == "com.atproto.repo.uploadBlob":
            return httpx.Response(
                200,
                json={
                    "blob": {
                        "$type": "blob",
                        "ref": {"$link": "bafy"},
                        "mimeType": request.headers["content-type"],
                        "size": len(request.content),
                    }
                },
            )
        return httpx.Response(
            200, json={"uri": f"at://{grant.did}/x/y", "cid": "bafyrec"}, headers={"DPoP-Nonce": self.nonce}
        )


class FakeResolver:
    """Identity resolution for the fake network: two accounts on the one PDS."""

    def __init__(self, pds: str = PDS) -> None:
        self.pds = pds
        self.accounts = {DID: HANDLE, OTHER_DID: "mallory.example.com"}

    def _doc(self, did: str) -> DidDocument:
        return DidDocument(
            did=did,
            handle=self.accounts[did],
            pds_endpoint=self.pds,
            signing_key=None,
            services={"#atproto_pds": self.pds},
            raw={},
        )

    async def resolve(self, identifier: str) -> Identity:
        from atcr.errors import HandleNotFound

        ident = identifier.removeprefix("@")
        did = (
            ident if ident in self.accounts else next((d for d, h in self.accounts.items() if h == ident.lower()), None)
        )
        if did is None:
            raise HandleNotFound(ident)
        return Identity(did=did, handle=self.accounts[did], pds_endpoint=self.pds, signing_key=None)

    async def resolve_did(self, did: str) -> DidDocument:
        return self._doc(did)
