"""Authorization server discovery and the metadata checks of the ATProto OAuth profile."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from appview.auth.oauth.discovery import Discovery, check_server_metadata
from atcr.errors import AuthServerInvalid
from atcr.http import SafeHttpClient, SsrfPolicy
from tests.unit.auth.fake_as import ISSUER, PDS, FakeAuthServer

pytestmark = pytest.mark.unit


def good() -> dict[str, Any]:
    return FakeAuthServer().metadata()


def test_good_metadata() -> None:
    server = check_server_metadata(ISSUER, good(), confidential=True)
    assert server.issuer == ISSUER
    assert server.par_endpoint == f"{ISSUER}/oauth/par"
    assert server.revocation_endpoint == f"{ISSUER}/oauth/revoke"


@pytest.mark.parametrize(
    ("change", "confidential"),
    [
        ({"issuer": "https://other.example.com"}, False),
        ({"require_pushed_authorization_requests": False}, False),
        ({"code_challenge_methods_supported": ["plain"]}, False),
        ({"dpop_signing_alg_values_supported": ["RS256"]}, False),
        ({"client_id_metadata_document_supported": False}, False),
        ({"authorization_response_iss_parameter_supported": None}, False),
        ({"response_types_supported": ["token"]}, False),
        ({"token_endpoint_auth_methods_supported": ["none"]}, True),
        ({"token_endpoint_auth_signing_alg_values_supported": ["RS256"]}, True),
        ({"token_endpoint_auth_methods_supported": ["private_key_jwt"]}, False),
        ({"scopes_supported": ["transition:generic"]}, False),
        ({"token_endpoint": None}, False),
    ],
)
def test_metadata_gaps_are_refused(change: dict[str, Any], confidential: bool) -> None:
    with pytest.raises(AuthServerInvalid):
        check_server_metadata(ISSUER, {**good(), **change}, confidential=confidential)


def test_not_an_object() -> None:
    with pytest.raises(AuthServerInvalid):
        check_server_metadata(ISSUER, ["nope"], confidential=False)


async def test_discovery_follows_the_pds_and_caches() -> None:
    fake = FakeAuthServer()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return fake.handle(request)

    http = SafeHttpClient(
        policy=SsrfPolicy(allowed_hosts=frozenset({"as.example.com", "pds.example.com"})),
        transport=httpx.MockTransport(handler),
    )
    discovery = Discovery(http, confidential=False)
    server = await discovery.for_pds(PDS)
    assert server.issuer == ISSUER
    await discovery.for_pds(PDS + "/")
    assert seen == ["/.well-known/oauth-protected-resource", "/.well-known/oauth-authorization-server"]
    await http.aclose()


async def test_protected_resource_without_servers() -> None:
    http = SafeHttpClient(
        policy=SsrfPolicy(allowed_hosts=frozenset({"pds.example.com"})),
        transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"resource": PDS})),
    )
    with pytest.raises(AuthServerInvalid):
        await Discovery(http, confidential=False).for_pds(PDS)
    await http.aclose()


async def test_unreachable_or_private_metadata_is_refused() -> None:
    # No allowed host: the SSRF guard refuses the loopback address, and that surfaces as an OAuth error.
    http = SafeHttpClient(policy=SsrfPolicy())
    with pytest.raises(AuthServerInvalid) as info:
        await Discovery(http, confidential=False).for_pds("http://127.0.0.1:9")
    assert info.value.error == "unreachable"
    await http.aclose()
