"""Clients a service builds from its settings at start and closes at shutdown."""

from __future__ import annotations

from dataclasses import dataclass

import valkey.asyncio as avalkey

from atcr.config import NetworkSettings
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.identity import IdentityResolver, build_resolver
from atcr.valkey import connect


@dataclass
class Runtime:
    """The shared clients of one service process."""

    http: SafeHttpClient
    resolver: IdentityResolver
    valkey: avalkey.Valkey | None

    @classmethod
    def from_settings(cls, settings: NetworkSettings, *, valkey: avalkey.Valkey | None = None) -> Runtime:
        policy = SsrfPolicy(
            allow_private=settings.allow_private_networks, allowed_hosts=frozenset(settings.allowed_hosts)
        )
        http = SafeHttpClient(policy=policy, timeout=settings.http_timeout)
        resolver = build_resolver(
            http,
            plc_url=settings.plc_url,
            handle_resolver_url=settings.handle_resolver_url,
            allow_private=settings.allow_private_networks,
        )
        if valkey is None and settings.valkey_url:
            valkey = connect(settings.valkey_url)
        return cls(http=http, resolver=resolver, valkey=valkey)

    async def aclose(self) -> None:
        await self.http.aclose()
        if self.valkey is not None:
            await self.valkey.aclose()

    async def valkey_ready(self) -> None:
        if self.valkey is None:
            raise RuntimeError("no VALKEY_URL configured")
        await self.valkey.ping()
