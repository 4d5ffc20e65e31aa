"""The client-address policy: the right-most X-Forwarded-For entry that is not a trusted proxy."""

from __future__ import annotations

import pytest

from appview.clientaddr import ClientAddresses, limit_key, parse_networks
from appview.settings import AppViewSettings
from atcr.errors import ConfigError
from atcr.settings import load

pytestmark = pytest.mark.unit

LB = "10.0.0.2"  # our load balancer, the TCP peer
BEHIND_LB = ClientAddresses(trust_forwarded_for=True, proxies=parse_networks(["10.0.0.0/24"]))


def test_off_means_the_peer_whatever_the_headers_say() -> None:
    assert ClientAddresses().resolve("198.51.100.7", ["1.2.3.4"]) == "198.51.100.7"


@pytest.mark.parametrize(
    ("forwarded", "client"),
    [
        (["203.0.113.9"], "203.0.113.9"),  # a plain client behind the balancer
        (["6.6.6.6, 203.0.113.9"], "203.0.113.9"),  # the client wrote 6.6.6.6 itself: ignored
        (["6.6.6.6", "7.7.7.7, 203.0.113.9"], "203.0.113.9"),  # several header lines, in order
        (["6.6.6.6, 203.0.113.9, 10.0.0.7"], "203.0.113.9"),  # two proxies of ours
        (["garbage, 203.0.113.9"], "203.0.113.9"),
        (["203.0.113.9, garbage"], LB),  # our proxy wrote garbage: fall back to the proxy itself
        (["[2001:db8::1]:4431"], "2001:db8::1"),
        (["203.0.113.9:5555"], "203.0.113.9"),
        ([], LB),  # nothing forwarded: the request started at the proxy
    ],
)
def test_right_most_untrusted_entry(forwarded: list[str], client: str) -> None:
    assert BEHIND_LB.resolve(LB, forwarded) == client


def test_headers_from_a_peer_that_is_not_a_proxy_are_ignored() -> None:
    assert BEHIND_LB.resolve("198.51.100.7", ["1.2.3.4"]) == "198.51.100.7"


def test_rotating_the_left_most_entry_changes_nothing() -> None:
    seen = {BEHIND_LB.resolve(LB, [f"10.9.{n}.9, 203.0.113.9"]) for n in range(50)}
    assert seen == {"203.0.113.9"}


def test_hop_count_trusts_that_many_nearest_hops_whatever_their_address() -> None:
    two = ClientAddresses(trust_forwarded_for=True, hops=2)
    # peer = CDN edge (hop 1), 192.0.2.50 = the balancer the CDN saw (hop 2), then the client.
    assert two.resolve("198.51.100.1", ["6.6.6.6, 203.0.113.9, 192.0.2.50"]) == "203.0.113.9"
    assert two.resolve("198.51.100.1", ["192.0.2.50"]) == "192.0.2.50"  # shorter chain: left-most hop


def test_ipv6_clients_are_limited_per_64() -> None:
    assert limit_key("2001:db8:1:2:aaaa::1") == limit_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert limit_key("203.0.113.9") == "203.0.113.9"
    assert limit_key("::ffff:203.0.113.9") == "203.0.113.9"


def test_settings() -> None:
    base = {"ATCR_DEFAULT_HOLD_DID": "did:web:hold.example.com"}
    settings = load(AppViewSettings, base)
    policy = ClientAddresses.from_settings(settings)
    assert not policy.trust_forwarded_for and [str(n) for n in policy.proxies] == ["127.0.0.0/8", "::1/128"]
    custom = load(
        AppViewSettings,
        {**base, "ATCR_TRUST_FORWARDED_FOR": "true", "ATCR_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1",
         "ATCR_TRUSTED_PROXY_HOPS": "1"},
    )
    assert ClientAddresses.from_settings(custom).resolve("10.1.1.1", ["5.5.5.5, 203.0.113.9"]) == "203.0.113.9"
    with pytest.raises(ConfigError, match="ATCR_TRUSTED_PROXIES"):
        load(AppViewSettings, {**base, "ATCR_TRUSTED_PROXIES": "10.0.0.0/33"})
    with pytest.raises(ConfigError, match="ATCR_TRUSTED_PROXY_HOPS"):
        load(AppViewSettings, {**base, "ATCR_TRUSTED_PROXY_HOPS": "-1"})
