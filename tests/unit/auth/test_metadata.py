"""Client identity: loopback and confidential client ids, metadata documents, assertions, scopes."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from appview.auth.oauth.metadata import (
    ASSERTION_TYPE,
    ClientKeys,
    OAuthClientConfig,
    client_mode,
    default_scope,
    redact,
)
from atcr.errors import ConfigError

pytestmark = pytest.mark.unit


def test_loopback_client_id_carries_redirect_and_scope() -> None:
    config = OAuthClientConfig.for_base_url("http://localhost:5000", scope="atproto repo:io.atcr.tag")
    assert not config.confidential
    parts = urlsplit(config.client_id)
    assert (parts.scheme, parts.netloc, parts.path) == ("http", "localhost", "")
    query = parse_qs(parts.query)
    # The AS accepts only IP literals for loopback redirects.
    assert query["redirect_uri"] == ["http://127.0.0.1:5000/auth/oauth/callback"]
    assert query["scope"] == ["atproto repo:io.atcr.tag"]
    meta = config.metadata()
    assert meta["application_type"] == "native" and meta["token_endpoint_auth_method"] == "none"
    assert config.auth_params("https://as.example.com") == {"client_id": config.client_id}
    assert config.jwks() == {"keys": []}


def test_confidential_metadata_document() -> None:
    keys = ClientKeys(current=ECKey.generate_key("P-256"))
    config = OAuthClientConfig.for_base_url("https://atcr.example.com", keys=keys)
    meta = config.metadata()
    assert meta["client_id"] == "https://atcr.example.com/client-metadata.json" == config.client_id
    assert meta["redirect_uris"] == ["https://atcr.example.com/auth/oauth/callback"]
    assert meta["token_endpoint_auth_method"] == "private_key_jwt"
    assert meta["token_endpoint_auth_signing_alg"] == "ES256"
    assert meta["jwks_uri"] == "https://atcr.example.com/auth/oauth/jwks.json"
    assert meta["dpop_bound_access_tokens"] is True
    assert meta["grant_types"] == ["authorization_code", "refresh_token"]
    assert "atproto" in meta["scope"].split()
    assert "jwks" not in meta  # exactly one of jwks / jwks_uri


def test_client_assertion() -> None:
    current, retired = ECKey.generate_key("P-256"), ECKey.generate_key("P-256")
    keys = ClientKeys(current=current, retired=(retired,))
    config = OAuthClientConfig.for_base_url("https://atcr.example.com", keys=keys)
    jwks = config.jwks()
    assert [k["kid"] for k in jwks["keys"]] == [current.thumbprint(), retired.thumbprint()]
    assert all("d" not in k for k in jwks["keys"])
    params = config.auth_params("https://as.example.com", now=1000)
    assert params["client_assertion_type"] == ASSERTION_TYPE
    token = jwt.decode(params["client_assertion"], KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert token.header["kid"] == current.thumbprint()
    claims = token.claims
    assert claims["iss"] == claims["sub"] == config.client_id
    assert claims["aud"] == "https://as.example.com" and claims["iat"] == 1000 and claims["exp"] == 1060
    again = config.auth_params("https://as.example.com", now=1000)
    assert again["client_assertion"] != params["client_assertion"]  # fresh jti each time
    # A session made with the retired key keeps being refreshed with it.
    old = jwt.decode(
        config.auth_params("https://as.example.com", retired.thumbprint())["client_assertion"],
        KeySet.import_key_set(jwks),
        algorithms=["ES256"],
    )
    assert old.header["kid"] == retired.thumbprint()
    assert redact(params)["client_assertion"] == "***"


def test_mode_follows_the_base_url() -> None:
    assert client_mode("http://127.0.0.1:5000") == "loopback"
    assert client_mode("http://localhost:5000") == "loopback"
    assert client_mode("https://atcr.io") == "confidential"
    assert client_mode("http://atcr.internal") == "confidential"
    assert client_mode("https://atcr.io", "loopback") == "loopback"


@pytest.mark.parametrize(
    ("base", "mode", "scope"),
    [
        ("http://atcr.example.com", "confidential", ""),  # confidential needs https
        ("https://atcr.example.com", "loopback", ""),  # loopback needs http on a loopback host
        ("https://atcr.example.com", "weird", ""),
        ("http://127.0.0.1:5000", "auto", "repo:io.atcr.tag"),  # no atproto
    ],
)
def test_bad_configurations(base: str, mode: str, scope: str) -> None:
    keys = ClientKeys(current=ECKey.generate_key("P-256"))
    with pytest.raises(ConfigError):
        OAuthClientConfig.for_base_url(base, mode=mode, scope=scope, keys=keys)


def test_confidential_needs_a_key() -> None:
    with pytest.raises(ConfigError):
        OAuthClientConfig.for_base_url("https://atcr.example.com")


def test_default_scope_is_granular() -> None:
    scopes = default_scope().split()
    assert scopes[0] == "atproto"
    for collection in (
        "io.atcr.manifest",
        "io.atcr.tag",
        "io.atcr.sailor.profile",
        "io.atcr.sailor.star",
        "io.atcr.repo.page",
        "io.atcr.repo.policy",
    ):
        assert f"repo:{collection}" in scopes
    assert "blob:application/vnd.oci.image.manifest.v1+json" in scopes
    assert "blob:application/vnd.docker.distribution.manifest.list.v2+json" in scopes
    assert "rpc:io.atcr.hold.initiateUpload?aud=*" in scopes
    assert not any(s.startswith(("transition:", "repo:*", "include:")) for s in scopes)
    with_set = default_scope(permission_set=True).split()
    assert "include:io.atcr.authFullApp" in with_set
    assert not any(s.startswith("repo:") for s in with_set)
    assert "blob:application/vnd.oci.image.index.v1+json" in with_set  # sets cannot carry blob scopes
