"""VALKEY_URL forms: plain URLs, Sentinel URLs (``valkey+sentinel://``) and cluster URLs (``valkey+cluster://``)."""

from __future__ import annotations

from typing import Any

import pytest

from atcr.config import NetworkSettings
from atcr.errors import ConfigError
from atcr.settings import load
from atcr.valkey import ClusterUrl, SentinelUrl

pytestmark = pytest.mark.unit


def test_sentinel_url_parts() -> None:
    spec = SentinelUrl.parse("valkey+sentinel://:s%40cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/atcr-main/2")
    assert spec.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert (spec.service, spec.db, spec.username, spec.password) == ("atcr-main", 2, None, "s@cret")
    assert SentinelUrl.parse("redis+sentinel://s1:1/svc").sentinels == (("s1", 1),)


@pytest.mark.parametrize("url", ["valkey+sentinel://s1:26379", "valkey+sentinel://s1:x/svc",
                                 "valkey+sentinel://s1/svc/zero", "http://s1/svc"])
def test_bad_sentinel_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        SentinelUrl.parse(url)


def test_settings_accept_sentinel_urls() -> None:
    assert load(NetworkSettings, {"VALKEY_URL": "valkey+sentinel://s1:26379/atcr"}).valkey_url
    with pytest.raises(ConfigError):
        load(NetworkSettings, {"VALKEY_URL": "valkey+sentinel://s1:26379"})


def test_cluster_url_parts() -> None:
    spec = ClusterUrl.parse("valkey+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7001")
    assert spec.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7001))
    assert (spec.tls, spec.username, spec.password, spec.ca_certs) == (False, "u", "p@ss", None)
    tls = ClusterUrl.parse("valkeys+cluster://h:7000?ssl_ca_certs=/etc/ca.pem")
    assert (tls.tls, tls.ca_certs) == (True, "/etc/ca.pem")
    assert ClusterUrl.parse("rediss+cluster://h:1/0").tls


@pytest.mark.parametrize("url", ["valkey+cluster://h:x", "valkey+cluster://h:1/3", "valkey+cluster://h:1?db=2",
                                 "valkey+cluster://:1", "redis://h:1"])
def test_bad_cluster_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        ClusterUrl.parse(url)


def test_settings_accept_cluster_urls() -> None:
    assert load(NetworkSettings, {"VALKEY_URL": "valkey+cluster://h1:7000,h2:7000"}).valkey_url
    with pytest.raises(ConfigError):
        load(NetworkSettings, {"VALKEY_URL": "valkey+cluster://h1:7000/2"})


async def test_cluster_urls_build_the_cluster_client() -> None:
    """No server needed: the client connects lazily. (The test cluster's binary has no TLS, so the
    TLS form is checked here, by what the client is built with.)"""
    from valkey.asyncio.connection import SSLConnection

    from atcr.valkey import connect, is_cluster

    tls: Any = connect("valkeys+cluster://u:p@127.0.0.1:7000,127.0.0.1:7001?ssl_ca_certs=/etc/ca.pem")
    plain: Any = connect("valkey+cluster://127.0.0.1:7000")
    try:
        assert is_cluster(tls) and is_cluster(plain)
        assert issubclass(tls.connection_kwargs["connection_class"], SSLConnection)
        assert tls.connection_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
        assert (tls.connection_kwargs["username"], tls.connection_kwargs["password"]) == ("u", "p")
        assert not issubclass(plain.connection_kwargs["connection_class"], SSLConnection)
        assert sorted(tls.nodes_manager.startup_nodes) == ["127.0.0.1:7000", "127.0.0.1:7001"]
    finally:
        await tls.aclose()
        await plain.aclose()
