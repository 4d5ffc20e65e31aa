from __future__ import annotations

import httpx
import pytest

from atcr.errors import BlockedAddress, NetworkError, ResponseTooLarge
from atcr.http import SafeHttpClient, SsrfPolicy

pytestmark = pytest.mark.unit


def mock(handler):  # type: ignore[no-untyped-def]
    return httpx.MockTransport(handler)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://192.168.0.1/x",
        "http://0.0.0.0/x",
    ],
)
async def test_private_destinations_refused_by_default(url: str) -> None:
    seen = []
    async with SafeHttpClient(transport=mock(lambda r: seen.append(r) or httpx.Response(200))) as client:
        with pytest.raises(BlockedAddress):
            await client.get(url)
    assert seen == []


async def test_public_address_allowed_and_pinned() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, text="ok")

    async with SafeHttpClient(transport=mock(handler)) as client:
        resp = await client.get("http://1.1.1.1/x")
    assert resp.text == "ok"
    assert seen[0].url.host == "1.1.1.1"


async def test_redirect_into_private_range_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://127.0.0.1/admin"})

    async with SafeHttpClient(transport=mock(handler)) as client:
        with pytest.raises(BlockedAddress):
            await client.get("http://1.1.1.1/start")


async def test_redirect_loop_bounded() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://1.1.1.1/again"})

    async with SafeHttpClient(transport=mock(handler), max_redirects=3) as client:
        with pytest.raises(NetworkError, match="redirects"):
            await client.get("http://1.1.1.1/start")


async def test_body_size_limit() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"x" * 5000)

    async with SafeHttpClient(transport=mock(handler), max_bytes=1000) as client:
        with pytest.raises(ResponseTooLarge):
            await client.get("http://1.1.1.1/big")


async def test_allow_list_opens_one_host_only() -> None:
    policy = SsrfPolicy(allowed_hosts=frozenset({"127.0.0.1:9"}))
    async with SafeHttpClient(policy=policy, transport=mock(lambda r: httpx.Response(204))) as client:
        assert (await client.get("http://127.0.0.1:9/")).status_code == 204
        with pytest.raises(BlockedAddress):
            await client.get("http://127.0.0.1:10/")


async def test_non_http_scheme_refused() -> None:
    async with SafeHttpClient(transport=mock(lambda r: httpx.Response(200))) as client:
        with pytest.raises((BlockedAddress, NetworkError, httpx.UnsupportedProtocol)):
            await client.get("file:///etc/passwd")


async def test_head_content_length_is_not_a_body() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(50 * 1024 * 1024)})

    async with SafeHttpClient(transport=mock(handler), max_bytes=1000) as client:
        resp = await client.request("HEAD", "http://1.1.1.1/blob")
    assert resp.status_code == 200


async def test_names_are_resolved_once_per_ttl_and_rebinding_to_private_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import atcr.http as guard

    answers = {"pds.example": ["93.184.216.34"]}
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(host)
        return list(answers[host])

    monkeypatch.setattr(guard, "_resolve", resolve)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.host)
        return httpx.Response(200)

    async with SafeHttpClient(transport=mock(handler)) as client:
        for _ in range(5):
            await client.get("http://pds.example/xrpc/x")
        assert lookups == ["pds.example"]  # one getaddrinfo for five requests
        assert seen == ["93.184.216.34"] * 5  # pinned to the address that was checked
        # Once the answer is stale, the name is resolved again and checked again.
        transport = client._client._transport  # type: ignore[attr-defined]
        transport._resolved[("pds.example", 80)] = (0.0, ["93.184.216.34"])
        answers["pds.example"] = ["10.0.0.5"]
        with pytest.raises(BlockedAddress):
            await client.get("http://pds.example/xrpc/x")
        assert lookups == ["pds.example", "pds.example"]
