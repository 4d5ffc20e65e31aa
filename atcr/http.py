"""The one hardened outbound HTTP client.

Every fetch of a URL that a user can influence (handles, DID documents, PDS endpoints,
hold URLs, OAuth metadata) goes through `SafeHttpClient`:

* the destination host is resolved once and *every* address is checked against the SSRF
  policy; the request is then pinned to the checked address (with SNI and Host kept), so a
  second DNS answer cannot rebind it to loopback;
* each redirect hop goes through the same transport, so a public URL cannot redirect into a
  private one; the number of hops is bounded;
* connect/read/write/pool timeouts are always set; bodies are streamed and cut off at a
  size limit instead of buffered without bound.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from atcr.errors import BlockedAddress, NetworkError, ResponseTooLarge, UpstreamUnavailable

DEFAULT_MAX_BYTES = 8 * 1024 * 1024
USER_AGENT = "atcr-py/0.1 (+https://github.com/atcr-py)"


@dataclass(frozen=True)
class SsrfPolicy:
    """Which destinations outbound requests may reach.

    `allow_private` opens loopback/private/link-local ranges (dev and test networks);
    `allowed_hosts` opens single ``host`` or ``host:port`` entries even when private, which
    lets tests reach one loopback server without opening the whole range.
    """

    allow_private: bool = False
    allowed_hosts: frozenset[str] = field(default_factory=frozenset)

    def host_allowed(self, host: str, port: int) -> bool:
        return host in self.allowed_hosts or f"{host}:{port}" in self.allowed_hosts

    def address_allowed(self, addr: str) -> bool:
        if self.allow_private:
            return True
        ip = ipaddress.ip_address(addr)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return ip.is_global and not ip.is_multicast


async def _resolve(host: str, port: int) -> list[str]:
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UpstreamUnavailable(f"cannot resolve {host}: {exc.strerror}") from None
    addrs: list[str] = []
    for info in infos:
        addr = str(info[4][0])
        if addr not in addrs:
            addrs.append(addr)
    return addrs


# Answers of the resolver are kept this long: every call to a PDS or a hold would otherwise pay a
# getaddrinfo in a thread (measured: a tenth of the AppView's CPU on a re-tag push). Addresses are
# checked when resolved, so a cached answer is one the policy allowed; keeping it also means a
# name cannot be rebound to a private address between two requests.
RESOLVE_TTL = 30.0
RESOLVE_CACHE_MAX = 1024


class _GuardedTransport(httpx.AsyncBaseTransport):
    """Resolves, checks and pins each request's destination before it is sent."""

    def __init__(
        self, policy: SsrfPolicy, inner: httpx.AsyncBaseTransport, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._policy = policy
        self._inner = inner
        self._clock = clock
        self._resolved: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def _addresses(self, host: str, port: int) -> list[str]:
        now = self._clock()
        hit = self._resolved.get((host, port))
        if hit is not None and hit[0] > now:
            return hit[1]
        addrs = await asyncio.wait_for(_resolve(host, port), timeout=5.0)
        if addrs:  # failures are not kept: the next request asks again
            if len(self._resolved) >= RESOLVE_CACHE_MAX:
                self._resolved.clear()  # a bound, not an LRU: the hosts we call are few
            self._resolved[(host, port)] = (now + RESOLVE_TTL, addrs)
        return addrs

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        if url.scheme not in ("http", "https"):
            raise BlockedAddress(f"scheme {url.scheme!r} not allowed")
        if self._policy.host_allowed(host, port):
            return await self._inner.handle_async_request(request)
        addrs = await self._addresses(host, port)
        if not addrs:
            raise UpstreamUnavailable(f"{host} has no address")
        for addr in addrs:
            if not self._policy.address_allowed(addr):
                raise BlockedAddress(f"{host} resolves to a non-public address; refused")
        pinned = addrs[0]
        if pinned == host:
            return await self._inner.handle_async_request(request)
        request.url = url.copy_with(host=pinned)
        request.headers["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class SafeHttpClient:
    """An httpx.AsyncClient behind the SSRF guard, with bounded time, size and redirects."""

    def __init__(
        self,
        *,
        policy: SsrfPolicy | None = None,
        timeout: float = 10.0,
        max_redirects: int = 5,
        max_bytes: int = DEFAULT_MAX_BYTES,
        verify: Any = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.policy = policy or SsrfPolicy()
        self.max_bytes = max_bytes
        self.timeout = timeout
        inner = transport or httpx.AsyncHTTPTransport(
            verify=verify, retries=0, limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
        )
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(self.policy, inner),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
            max_redirects=max_redirects,
            headers={"User-Agent": USER_AGENT},
            trust_env=False,
        )
        self._max_redirects = max_redirects

    @property
    def raw(self) -> httpx.AsyncClient:
        """The underlying client, for callers that stream bodies themselves."""
        return self._client

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> SafeHttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def request(
        self,
        method: str,
        url: str,
        *,
        follow_redirects: bool = True,
        max_bytes: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request and read its body, refusing bodies above `max_bytes`.

        Network failures become `UpstreamUnavailable`; the SSRF guard's refusals stay
        `BlockedAddress`. HTTP error statuses are returned, not raised: the caller knows
        what a 404 means for it.
        """
        limit = self.max_bytes if max_bytes is None else max_bytes
        if timeout is not None:
            kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 5.0))
        try:
            async with asyncio.timeout((timeout or self.timeout) * 3):
                async with self._stream(method, url, follow_redirects=follow_redirects, **kwargs) as resp:
                    declared = resp.headers.get("content-length")
                    # A HEAD answer's Content-Length describes the resource, not a body to read.
                    too_big = declared is not None and declared.isdigit() and int(declared) > limit
                    if method.upper() != "HEAD" and too_big:
                        raise ResponseTooLarge(f"{url}: response of {declared} bytes exceeds {limit}")
                    chunks: list[bytes] = []
                    total = 0
                    async for chunk in resp.aiter_bytes():  # decoded: the limit also stops zip bombs
                        total += len(chunk)
                        if total > limit:
                            raise ResponseTooLarge(f"{url}: response exceeds {limit} bytes")
                        chunks.append(chunk)
                    body = b"".join(chunks)
                    # Rebuild a plain response with the decoded body available as .content.
                    headers = httpx.Headers(resp.headers)
                    headers.pop("content-encoding", None)
                    headers["content-length"] = str(len(body))
                    out = httpx.Response(
                        status_code=resp.status_code,
                        headers=headers,
                        content=body,
                        request=resp.request,
                    )
                    return out
        except TimeoutError:
            raise UpstreamUnavailable(f"{method} {url}: timed out") from None

    @asynccontextmanager
    async def _stream(
        self, method: str, url: str, *, follow_redirects: bool, **kwargs: Any
    ) -> AsyncIterator[httpx.Response]:
        hops = 0
        current = url
        while True:
            try:
                req = self._client.build_request(method, current, **kwargs)
                resp = await self._client.send(req, stream=True)
            except NetworkError:
                raise
            except httpx.TimeoutException:
                raise UpstreamUnavailable(f"{method} {current}: timed out") from None
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(f"{method} {current}: {type(exc).__name__}") from None
            if follow_redirects and resp.is_redirect and "location" in resp.headers:
                await resp.aclose()
                hops += 1
                if hops > self._max_redirects:
                    raise NetworkError(f"{url}: more than {self._max_redirects} redirects")
                current = str(resp.url.join(resp.headers["location"]))
                if resp.status_code in (301, 302, 303) and method not in ("GET", "HEAD"):
                    method = "GET"
                    kwargs.pop("content", None)
                    kwargs.pop("json", None)
                    kwargs.pop("data", None)
                continue
            try:
                yield resp
            finally:
                await resp.aclose()
            return

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", url, **kwargs)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", url, **kwargs)


async def check_destination(url: str, policy: SsrfPolicy, *, timeout: float = 5.0) -> None:
    """Refuse now a URL the guarded client would refuse when it is fetched later (a webhook
    target is checked when it is saved, and again by the transport on every delivery).

    `BlockedAddress` for a scheme other than http(s), credentials in the URL, or a host that
    resolves to a non-public address; `UpstreamUnavailable` when it does not resolve.
    """
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise BlockedAddress("not a valid URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise BlockedAddress("only http:// and https:// URLs with a host are allowed")
    if parsed.userinfo:
        raise BlockedAddress("credentials in the URL are not allowed")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if policy.host_allowed(parsed.host, port):
        return
    try:
        addrs = await asyncio.wait_for(_resolve(parsed.host, port), timeout=timeout)
    except TimeoutError:
        raise UpstreamUnavailable(f"cannot resolve {parsed.host}: timed out") from None
    if not addrs:
        raise UpstreamUnavailable(f"{parsed.host} has no address")
    for addr in addrs:
        if not policy.address_allowed(addr):
            raise BlockedAddress(f"{parsed.host} resolves to a non-public address")


def policy_from(allow_private: bool, allowed_hosts: Iterable[str] = ()) -> SsrfPolicy:
    return SsrfPolicy(allow_private=allow_private, allowed_hosts=frozenset(allowed_hosts))
