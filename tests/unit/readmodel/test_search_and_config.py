"""Search tokenization and loader knobs (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appview.cache import LoaderConfig
from appview.cache.loader import Loader
from atcr.errors import InvalidIdentifier
from atcr.readmodel.search import MAX_TOKEN, tokenize


def test_tokenize_splits_names_and_prose() -> None:
    assert tokenize("My-App_server/v2") == ["my", "app", "server", "v2"]
    assert tokenize("A fast, fast web-server!") == ["fast", "web", "server"]
    assert tokenize("alice.bsky.social") == ["alice", "bsky", "social"]


@given(st.text())
def test_tokens_are_short_lowercase_alnum(text: str) -> None:
    for token in tokenize(text):
        assert 2 <= len(token) <= MAX_TOKEN and token.isalnum() and token == token.lower() and token.isascii()


def test_loader_config_reads_cache_settings() -> None:
    @dataclass(frozen=True)
    class Settings:
        cache_fresh_ttl: float = 5.0
        cache_max_stale: float = 99.0
        other: int = 1

    cfg = LoaderConfig.from_settings(Settings())
    assert (cfg.fresh_ttl, cfg.max_stale, cfg.negative_ttl) == (5.0, 99.0, LoaderConfig().negative_ttl)


@pytest.mark.parametrize(
    ("raw", "want"),
    [("Alice.Example.COM", "alice.example.com"), ("at://did:plc:abc", "did:plc:abc"), (" bob.test ", "bob.test")],
)
def test_identifiers_are_normalized(raw: str, want: str) -> None:
    assert Loader._normalize_identifier(raw) == want


@pytest.mark.parametrize("raw", ["", "not a handle", "did:", "did:plc:", "a..b"])
def test_bad_identifiers_fail_before_any_lookup(raw: str) -> None:
    with pytest.raises(InvalidIdentifier):
        Loader._normalize_identifier(raw)
