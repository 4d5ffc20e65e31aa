"""Where a request's client address comes from: the one place that decides it.

Every per-address limit (requests, failed logins, device codes) keys on this address, so it
must be one the client cannot choose. The server underneath (uvicorn) is told never to
rewrite the peer address from proxy headers (`atcr/server.py`); this module alone reads them.

* `ATCR_TRUST_FORWARDED_FOR=false` (default): the TCP peer's address, whatever headers say.
* `true`: the peer must be a trusted proxy (inside `ATCR_TRUSTED_PROXIES`, or one of the
  `ATCR_TRUSTED_PROXY_HOPS` nearest hops), else its headers are ignored. The chain is
  `X-Forwarded-For` entries (every header line, in order) followed by the peer, read from the
  right: each proxy *appends* the address it saw, so the right-most entries were written by
  our proxies and everything left of the first untrusted one was written by the client.
  The client address is the right-most entry that is not a trusted proxy. The left-most
  entry is never taken on trust: a client can put anything there.

IPv6 clients are limited per /64 (`limit_key`): one host usually owns a whole /64 and could
otherwise rotate through it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from litestar import Request
from litestar.datastructures import State

from atcr.errors import ConfigError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_TRUSTED_PROXIES = ("127.0.0.0/8", "::1/128")
MAX_FORWARDED_ENTRIES = 64  # a longer chain is not from any real proxy path: only its right end is read


def parse_networks(values: Iterable[str], *, setting: str = "ATCR_TRUSTED_PROXIES") -> tuple[Network, ...]:
    """CIDRs or single addresses; raises ConfigError naming `setting` for a bad one."""
    out: list[Network] = []
    for raw in values:
        try:
            out.append(ipaddress.ip_network(raw.strip(), strict=False))
        except ValueError:
            raise ConfigError(f"{setting}: {raw!r} is not an IP address or CIDR network") from None
    return tuple(out)


def _address(entry: str) -> Address | None:
    """One X-Forwarded-For entry as an address: bare, `[v6]:port` or `v4:port`; None if garbage."""
    text = entry.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def limit_key(address: str) -> str:
    """The identity per-address limits count under: the address, or its /64 for IPv6."""
    parsed = _address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed) if parsed is not None else address


@dataclass(frozen=True)
class ClientAddresses:
    """The client-address policy of one AppView (see the module docstring)."""

    trust_forwarded_for: bool = False
    proxies: tuple[Network, ...] = ()
    hops: int = 0

    @classmethod
    def from_settings(cls, settings: Any) -> ClientAddresses:
        return cls(
            trust_forwarded_for=bool(settings.trust_forwarded_for),
            proxies=parse_networks(settings.trusted_proxies),
            hops=int(settings.trusted_proxy_hops),
        )

    def _trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in net for net in self.proxies)

    def resolve(self, peer: str, forwarded: Sequence[str]) -> str:
        """The client address, given the TCP peer and the X-Forwarded-For header lines."""
        if not self.trust_forwarded_for:
            return peer
        entries = [e for line in forwarded for e in line.split(",") if e.strip()][-MAX_FORWARDED_ENTRIES:]
        chain = [_address(e) for e in entries]
        chain.append(_address(peer))
        nearest = peer  # the closest hop known to be a trusted proxy so far
        for position, address in enumerate(reversed(chain)):
            by_count = position < self.hops
            if not by_count and not self._trusted(address):
                if position == 0:
                    return peer  # the peer is no trusted proxy: its headers mean nothing
                # Written by a trusted proxy: the address that proxy saw. Garbage there means a
                # proxy passed something through; fall back to the proxy itself.
                return str(address) if address is not None else nearest
            if address is not None:
                nearest = str(address)
        return nearest  # every hop is a trusted proxy: the request started at the left-most one

    def of(self, request: Request[Any, Any, State]) -> str:
        peer = request.client.host if request.client else ""
        if not self.trust_forwarded_for:
            return peer
        return self.resolve(peer, request.headers.getall("x-forwarded-for", []))
