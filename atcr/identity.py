"""Identity resolution: handle -> DID -> DID document -> PDS endpoint and signing key.

Resolution goes through the SSRF-guarded client. Handle resolution is pluggable: production
uses DNS TXT and https well-known (in parallel, DNS wins a conflict, as the spec says);
private networks whose handles have no DNS (the local `.test` network) resolve through a
PDS's `com.atproto.identity.resolveHandle`. Results are cached in a small TTL cache here;
the AppView adds its shared Valkey read model on top.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote, unquote

import dns.asyncresolver
import dns.exception
import dns.resolver

from atcr.errors import (
    DidNotFound,
    HandleNotFound,
    InvalidDidDocument,
    InvalidIdentifier,
    NetworkError,
    UpstreamUnavailable,
)
from atcr.http import SafeHttpClient
from atcr.syntax import is_did, is_handle
from atcr.ttlcache import TtlCache

MAX_DID_DOC_BYTES = 256 * 1024


@dataclass(frozen=True)
class DidDocument:
    """The parts of a DID document the registry uses."""

    did: str
    handle: str | None
    pds_endpoint: str | None
    signing_key: str | None  # multibase (publicKeyMultibase of #atproto)
    services: Mapping[str, str]  # "#id" -> endpoint
    raw: Mapping[str, Any]

    def service(self, fragment: str) -> str | None:
        return self.services.get(fragment if fragment.startswith("#") else "#" + fragment)


@dataclass(frozen=True)
class Identity:
    did: str
    handle: str | None  # None when the handle does not verify bidirectionally
    pds_endpoint: str
    signing_key: str | None


def parse_did_document(did: str, doc: Any) -> DidDocument:
    """Extract handle, PDS and signing key; accept relative (`#x`) and absolute (`did#x`) ids."""
    if not isinstance(doc, dict) or doc.get("id") != did:
        raise InvalidDidDocument(f"{did}: document id does not match")

    def frag(ident: Any) -> str | None:
        if not isinstance(ident, str) or "#" not in ident:
            return None
        head, _, tail = ident.partition("#")
        if head not in ("", did):
            return None
        return "#" + tail

    handle = None
    for aka in doc.get("alsoKnownAs") or []:
        if isinstance(aka, str) and aka.startswith("at://"):
            cand = aka[5:]
            if is_handle(cand, allow_reserved_tlds=True):
                handle = cand.lower()
                break

    services: dict[str, str] = {}
    pds = None
    for svc in doc.get("service") or []:
        if not isinstance(svc, dict):
            continue
        f = frag(svc.get("id"))
        endpoint = svc.get("serviceEndpoint")
        if f is None or not isinstance(endpoint, str):
            continue
        services[f] = endpoint.rstrip("/")
        if f == "#atproto_pds" and svc.get("type") == "AtprotoPersonalDataServer":
            pds = endpoint.rstrip("/")

    key = None
    for vm in doc.get("verificationMethod") or []:
        if isinstance(vm, dict) and frag(vm.get("id")) == "#atproto":
            mb = vm.get("publicKeyMultibase")
            if isinstance(mb, str) and mb.startswith("z"):
                key = mb
            break
    return DidDocument(did=did, handle=handle, pds_endpoint=pds, signing_key=key, services=services, raw=doc)


def did_web_url(did: str, *, allow_http_loopback: bool) -> str:
    """URL of a did:web document; hostname-only DIDs (plus a percent-encoded port)."""
    ident = did[len("did:web:") :]
    if not ident or ":" in ident:
        raise InvalidIdentifier(f"{did}: only host-level did:web is supported")
    host = unquote(ident)
    bare = host.rsplit(":", 1)[0] if ":" in host else host
    scheme = "https"
    if allow_http_loopback and (bare in ("localhost", "127.0.0.1", "[::1]") or bare.endswith(".localhost")):
        scheme = "http"
    return f"{scheme}://{host}/.well-known/did.json"


def did_web_for_url(public_url: str) -> str:
    """The did:web of a service from its public URL (port percent-encoded, as ATCR does)."""
    from urllib.parse import urlsplit

    parts = urlsplit(public_url)
    if not parts.hostname:
        raise InvalidIdentifier(f"{public_url!r} has no host")
    host = parts.hostname
    if parts.port:
        host = f"{host}:{parts.port}"
    return "did:web:" + quote(host, safe="")


class HandleResolver(Protocol):
    async def resolve(self, handle: str) -> str | None: ...


class DnsHttpsHandleResolver:
    """Production handle resolution: `_atproto` TXT and https well-known, in parallel."""

    def __init__(self, http: SafeHttpClient, timeout: float = 5.0) -> None:
        self._http = http
        self._timeout = timeout

    async def _dns(self, handle: str) -> str | None:
        resolver = dns.asyncresolver.Resolver()
        resolver.lifetime = self._timeout
        try:
            answer = await resolver.resolve(f"_atproto.{handle}", "TXT")
        except (dns.exception.DNSException, dns.resolver.NoNameservers):
            return None
        dids = set()
        for rdata in answer:
            text = b"".join(rdata.strings).decode("utf-8", "replace")
            if text.startswith("did="):
                dids.add(text[4:].strip())
        if len(dids) != 1:
            return None
        did = dids.pop()
        return did if is_did(did) else None

    async def _https(self, handle: str) -> str | None:
        try:
            resp = await self._http.get(
                f"https://{handle}/.well-known/atproto-did", max_bytes=2048, timeout=self._timeout
            )
        except NetworkError:
            return None
        if not 200 <= resp.status_code < 300:
            return None
        did = resp.text.strip().splitlines()[0] if resp.text.strip() else ""
        return did if is_did(did) else None

    async def resolve(self, handle: str) -> str | None:
        dns_task = asyncio.create_task(self._dns(handle))
        https_task = asyncio.create_task(self._https(handle))
        try:
            dns_did = await dns_task
            if dns_did:
                return dns_did
            return await https_task
        finally:
            https_task.cancel()


class XrpcHandleResolver:
    """Resolve through a PDS's `com.atproto.identity.resolveHandle` (networks without DNS)."""

    def __init__(self, http: SafeHttpClient, service_url: str) -> None:
        self._http = http
        self._url = service_url.rstrip("/") + "/xrpc/com.atproto.identity.resolveHandle"

    async def resolve(self, handle: str) -> str | None:
        resp = await self._http.get(self._url, params={"handle": handle}, max_bytes=16 * 1024)
        if resp.status_code == 400:
            return None
        if resp.status_code >= 500:
            raise UpstreamUnavailable(f"handle resolver answered {resp.status_code}")
        if resp.status_code != 200:
            return None
        try:
            did = resp.json().get("did")
        except ValueError:
            return None
        return did if isinstance(did, str) and is_did(did) else None


class IdentityResolver:
    """Resolves and caches identities; concurrent lookups of one key share one fetch."""

    def __init__(
        self,
        http: SafeHttpClient,
        *,
        plc_url: str = "https://plc.directory",
        handle_resolver: HandleResolver | None = None,
        allow_http_loopback: bool = False,
        ttl: float = 300.0,
    ) -> None:
        self._http = http
        self._plc = plc_url.rstrip("/")
        self._handles = handle_resolver or DnsHttpsHandleResolver(http)
        self._allow_http_loopback = allow_http_loopback
        self._cache: TtlCache[str, Any] = TtlCache(ttl, max_entries=10_000)
        self._inflight: dict[str, asyncio.Future[Any]] = {}

    async def _once(self, key: str, fetch: Any) -> Any:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        fut = self._inflight.get(key)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._inflight[key] = fut
        try:
            value = await fetch()
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters may not exist
            raise
        else:
            self._cache.put(key, value)
            fut.set_result(value)
            return value
        finally:
            self._inflight.pop(key, None)

    def invalidate(self, did: str, handle: str | None = None) -> None:
        """Forget what we know of a DID (an `identity` event said it changed)."""
        self._cache.drop("doc:" + did)
        if handle:
            self._cache.drop("handle:" + handle.lower())

    async def resolve_handle(self, handle: str) -> str:
        handle = handle.lower()
        if not is_handle(handle, allow_reserved_tlds=True):
            raise InvalidIdentifier(f"{handle!r} is not a valid handle")

        async def fetch() -> str:
            did = await self._handles.resolve(handle)
            if did is None:
                raise HandleNotFound(f"handle {handle} does not resolve")
            return did

        result: str = await self._once("handle:" + handle, fetch)
        return result

    async def resolve_did(self, did: str) -> DidDocument:
        if not is_did(did):
            raise InvalidIdentifier(f"{did!r} is not a valid DID")
        if did.startswith("did:plc:"):
            url = f"{self._plc}/{did}"
        elif did.startswith("did:web:"):
            url = did_web_url(did, allow_http_loopback=self._allow_http_loopback)
        else:
            raise InvalidIdentifier(f"{did}: unsupported DID method")

        async def fetch() -> DidDocument:
            resp = await self._http.get(url, max_bytes=MAX_DID_DOC_BYTES)
            if resp.status_code in (404, 410):
                raise DidNotFound(f"{did} not found")
            if resp.status_code != 200:
                raise UpstreamUnavailable(f"DID resolution for {did} answered {resp.status_code}")
            try:
                body = resp.json()
            except ValueError:
                raise InvalidDidDocument(f"{did}: document is not JSON") from None
            return parse_did_document(did, body)

        doc: DidDocument = await self._once("doc:" + did, fetch)
        return doc

    async def resolve(self, identifier: str) -> Identity:
        """Resolve a handle or DID to a verified identity.

        The handle is kept only when it round-trips (the DID document claims it and the
        handle resolves back to the DID), as the spec requires before showing it.
        """
        ident = identifier.strip()
        if ident.startswith("at://"):
            ident = ident[5:]
        if ident.startswith("did:"):
            doc = await self.resolve_did(ident)
            handle = None
            if doc.handle:
                try:
                    if await self.resolve_handle(doc.handle) == doc.did:
                        handle = doc.handle
                except (HandleNotFound, NetworkError, InvalidIdentifier):
                    handle = None
        else:
            did = await self.resolve_handle(ident)
            doc = await self.resolve_did(did)
            handle = ident.lower() if doc.handle == ident.lower() else None
        if not doc.pds_endpoint:
            raise InvalidDidDocument(f"{doc.did}: no #atproto_pds service")
        return Identity(did=doc.did, handle=handle, pds_endpoint=doc.pds_endpoint, signing_key=doc.signing_key)


def build_resolver(
    http: SafeHttpClient, *, plc_url: str, handle_resolver_url: str = "", allow_private: bool = False
) -> IdentityResolver:
    """The resolver a service gets from its settings."""
    handles: HandleResolver = (
        XrpcHandleResolver(http, handle_resolver_url) if handle_resolver_url else DnsHttpsHandleResolver(http)
    )
    return IdentityResolver(http, plc_url=plc_url, handle_resolver=handles, allow_http_loopback=allow_private)
