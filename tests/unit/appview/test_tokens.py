from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from appview.auth.credentials import Principal
from appview.auth.routes import TokenApi
from appview.auth.tokens import Access, TokenService, parse_scope
from appview.errors import NameInvalid, Unauthorized
from appview.oci.registry import split_name
from appview.oci.routes import _split

pytestmark = pytest.mark.unit


def service(lifetime: int = 60) -> TokenService:
    return TokenService(ec.generate_private_key(ec.SECP256R1()), issuer="http://reg", service="reg", lifetime=lifetime)


def test_issue_and_verify_round_trip() -> None:
    svc = service()
    token, expires_in, _ = svc.issue("did:plc:alice", [Access("repository", "alice.test/app", ("pull", "push"))], "app_password")
    claims = svc.verify(token)
    assert expires_in == 60
    assert claims.subject == "did:plc:alice"
    assert claims.allows("alice.test/app", "push")
    assert not claims.allows("alice.test/other", "pull")
    assert not claims.allows("bob.test/app", "push")


def test_forged_token_refused() -> None:
    svc, other = service(), service()
    token, _, _ = other.issue("did:plc:alice", [Access("repository", "a/b", ("push",))], "x")
    with pytest.raises(Unauthorized):
        svc.verify(token)
    good, _, _ = svc.issue("did:plc:alice", [], "x")
    head, body, sig = good.split(".")
    with pytest.raises(Unauthorized):
        svc.verify(f"{head}.{body}.{sig[:-4]}AAAA")
    with pytest.raises(Unauthorized):
        svc.verify("not-a-jwt")


def test_expired_and_wrong_audience_refused() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    svc = TokenService(key, issuer="http://reg", service="reg", lifetime=60)
    now = int(time.time())
    jwk = ECKey.import_key(key)
    expired = jwt.encode({"alg": "ES256"}, {"iss": "http://reg", "aud": "reg", "exp": now - 1, "sub": "x"}, jwk)
    with pytest.raises(Unauthorized, match="expired"):
        svc.verify(expired)
    wrong_aud = jwt.encode({"alg": "ES256"}, {"iss": "http://reg", "aud": "other", "exp": now + 60}, jwk)
    with pytest.raises(Unauthorized):
        svc.verify(wrong_aud)


def test_jwks_publishes_public_key_only() -> None:
    keys = service().jwks()["keys"]
    assert len(keys) == 1
    assert "d" not in keys[0]
    assert keys[0]["alg"] == "ES256"


def test_parse_scope() -> None:
    assert parse_scope("repository:alice.test/app:pull,push") == Access(
        "repository", "alice.test/app", ("pull", "push")
    )
    assert parse_scope("repository:did:plc:abc/app:pull") == Access("repository", "did:plc:abc/app", ("pull",))
    assert parse_scope("garbage") is None
    assert parse_scope("repository:alice.test/app:frobnicate").actions == ()  # type: ignore[union-attr]


async def test_grant_push_only_in_own_namespace() -> None:
    async def owner(identity: str) -> str | None:
        return {"alice.test": "did:plc:alice", "bob.test": "did:plc:bob"}.get(identity)

    api = TokenApi(service(), authenticator=None, owner_of=owner)  # type: ignore[arg-type]
    alice = Principal("did:plc:alice", "alice.test", "app_password")
    granted = await api.grant(alice, ["repository:alice.test/app:pull,push", "repository:bob.test/app:pull,push"])
    assert granted[0].actions == ("delete", "pull", "push")
    assert granted[1].actions == ("pull",)
    own_pull = await api.grant(alice, ["repository:alice.test/app:pull"])
    assert own_pull[0].actions == ("delete", "pull", "push")
    anonymous = await api.grant(None, ["repository:alice.test/app:pull,push"])
    assert anonymous[0].actions == ("pull",)


def test_split_path() -> None:
    assert _split("alice.test/app/manifests/latest") == ("alice.test/app", "manifests", "latest")
    assert _split("alice.test/a/b/blobs/sha256:" + "0" * 64) == ("alice.test/a/b", "blobs", "sha256:" + "0" * 64)
    assert _split("alice.test/app/blobs/uploads/") == ("alice.test/app", "uploads", "")
    assert _split("alice.test/app/blobs/uploads/abc") == ("alice.test/app", "uploads", "abc")
    assert _split("alice.test/app/tags/list") == ("alice.test/app", "tags", "")
    assert _split("alice.test/app/referrers/sha256:1") == ("alice.test/app", "referrers", "sha256:1")


@pytest.mark.parametrize("name", ["alice.test", "alice.test/App", "alice.test/../etc", "/app", "al ice.test/app", "x/app"])
def test_bad_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        split_name(name)


def test_good_names() -> None:
    assert split_name("alice.test/team/app") == ("alice.test", "team/app")
    assert split_name("did:plc:abc123/app") == ("did:plc:abc123", "app")


def test_basic_credentials_with_did_username() -> None:
    import base64

    from appview.auth.routes import _basic

    def enc(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert _basic(enc("did:plc:abc123:pass:with:colons")) == ("did:plc:abc123", "pass:with:colons")
    assert _basic(enc("did:web:localhost%3A8080:pw")) == ("did:web:localhost%3A8080", "pw")
    assert _basic(enc("alice.test:pw:x")) == ("alice.test", "pw:x")
    with pytest.raises(Unauthorized):
        _basic(enc("did:plc:abc"))
