"""An AppView with just the sign-in pieces, in-process, for the auth integration tests.

The OAuth client, sessions, device flow and routes are the production ones (`build_sign_in`);
only the app around them is smaller than `appview.app.create_app`, so these tests do not
depend on the registry, hold or read model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import valkey.asyncio as avalkey
from cryptography.hazmat.primitives.asymmetric import ec
from litestar import Litestar, get

from appview.auth.credentials import Authenticator, Principal
from appview.auth.oauth import OAuthClientConfig
from appview.auth.routes import TokenApi
from appview.auth.sessions import PdsSessionStore, SessionCipher
from appview.auth.tokens import TokenService
from appview.settings import AppViewSettings
from appview.web.auth_routes import SignIn, build_sign_in
from atcr.errors import AtcrError
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.identity import Identity, IdentityResolver, build_resolver
from atcr.settings import load

SECRET = b"s" * 32


def settings_for(data_dir: Path, *, base_url: str, plc_url: str, pds_url: str, **env: str) -> AppViewSettings:
    values = {
        "ATCR_BASE_URL": base_url,
        "ATCR_DEFAULT_HOLD_DID": "did:web:127.0.0.1%3A1",
        "ATCR_DATA_DIR": str(data_dir),
        "ATCR_PLC_URL": plc_url,
        "ATCR_HANDLE_RESOLVER_URL": pds_url,
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        "ATCR_BCRYPT_ROUNDS": "4",
        "ATCR_DEVICE_POLL_INTERVAL": "1",
        **env,
    }
    return load(AppViewSettings, values)


@dataclass
class Harness:
    settings: AppViewSettings
    http: SafeHttpClient
    resolver: IdentityResolver
    sessions: PdsSessionStore
    sign_in: SignIn
    app: Litestar
    tokens: TokenService
    logins: list[Principal] = field(default_factory=list)


def build_harness(
    settings: AppViewSettings,
    valkey: avalkey.Valkey,
    *,
    client_config: OAuthClientConfig | None = None,
    http: SafeHttpClient | None = None,
    after_login: Callable[[Principal], Awaitable[None]] | None = None,
) -> Harness:
    http = http or SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=15)
    resolver = build_resolver(
        http, plc_url=settings.plc_url, handle_resolver_url=settings.handle_resolver_url, allow_private=True
    )
    sessions = PdsSessionStore(valkey, SessionCipher(SECRET), http)
    logins: list[Principal] = []

    async def remember(principal: Principal) -> None:
        logins.append(principal)
        if after_login is not None:
            await after_login(principal)

    sign_in = build_sign_in(
        settings,
        http=http,
        resolver=resolver,
        valkey=valkey,
        secret=SECRET,
        sessions=sessions,
        after_login=remember,
        client_config=client_config,
    )
    sessions.use_oauth(sign_in.oauth)

    @get("/", sync_to_thread=False)
    def home() -> dict[str, Any]:
        return {"home": True}

    class Identities:
        async def identity(self, identifier: str) -> Identity:
            return await resolver.resolve(identifier)

    async def owner_of(identity: str) -> str | None:
        try:
            return (await resolver.resolve(identity)).did
        except AtcrError:
            return None

    tokens = TokenService(
        ec.generate_private_key(ec.SECP256R1()), issuer=settings.base_url, service=settings.service, lifetime=300
    )
    authenticator = Authenticator(valkey, http, Identities(), sessions, SECRET, devices=sign_in.devices)
    token_api = TokenApi(tokens, authenticator, owner_of)
    token_handlers = token_api.handlers()
    app = Litestar(route_handlers=[home, *sign_in.web.handlers(), *token_handlers], debug=False, logging_config=None)
    return Harness(settings, http, resolver, sessions, sign_in, app, tokens, logins)


class _QuietServer(uvicorn.Server):
    """Leaves the test process's signal handlers alone."""

    def capture_signals(self) -> Any:
        return contextlib.nullcontext()


@asynccontextmanager
async def serving(
    app: Litestar,
    port: int,
    *,
    host: str = "127.0.0.1",
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> AsyncIterator[None]:
    """Serve `app` with uvicorn on this event loop (the app's clients live on it too)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


# --- TLS for the confidential client (TEST-NETWORK.md: https client_id with a test CA) ---------------


@dataclass(frozen=True)
class TestCA:
    __test__ = False
    ca_pem: Path
    cert_pem: Path
    key_pem: Path


def make_test_ca(directory: Path, hostname: str) -> TestCA:
    """A throwaway CA and a server certificate for `hostname`, written as PEM files."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "atcr test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    out = TestCA(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    out.ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.key_pem.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return out


class PinnedTransport(httpx.AsyncBaseTransport):
    """Sends requests for `hostname` to 127.0.0.1, keeping Host and TLS SNI (no DNS entry needed)."""

    def __init__(self, hostname: str, inner: httpx.AsyncBaseTransport) -> None:
        self._host = hostname
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != self._host:
            return await self._inner.handle_async_request(request)
        # A copy: the client files cookies under the original request's URL.
        headers = httpx.Headers(request.headers)
        headers["Host"] = request.url.netloc.decode()
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host="127.0.0.1"),
            headers=headers,
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": self._host},
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()
