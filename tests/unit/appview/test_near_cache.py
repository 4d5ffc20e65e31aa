"""The near cache's own rules: what it refuses to keep, and what it drops."""

from __future__ import annotations

import time
from typing import Any

import pytest

from appview.cache.near import MISS, NearCache
from atcr.readmodel import keys


def live(**kwargs: Any) -> NearCache:
    near = NearCache(None, **kwargs)  # type: ignore[arg-type]  # no connection: made live by hand
    near._set_ready(True)
    return near


def test_nothing_is_answered_or_kept_until_invalidations_flow() -> None:
    near = NearCache(None)  # type: ignore[arg-type]
    assert near.stamp("did:plc:a") is None
    near.put("did:plc:a", "k", 1, near.stamp("did:plc:a"))
    assert near.get("did:plc:a", "k") is MISS


def test_an_answer_read_before_a_write_is_not_kept_after_it() -> None:
    near = live()
    stamp = near.stamp("did:plc:a")
    near.invalidate("did:plc:a")  # the write's message arrives while the read is under way
    near.put("did:plc:a", "k", "old", stamp)
    assert near.get("did:plc:a", "k") is MISS
    fresh = near.stamp("did:plc:a")
    near.put("did:plc:a", "k", "new", fresh)
    assert near.get("did:plc:a", "k") == "new"


def test_invalidation_drops_one_scope_only() -> None:
    near = live()
    for scope in ("did:plc:a", "did:plc:b"):
        near.put(scope, "k", scope, near.stamp(scope))
    near.invalidate("did:plc:a")
    assert near.get("did:plc:a", "k") is MISS
    assert near.get("did:plc:b", "k") == "did:plc:b"


def test_losing_the_connection_empties_the_cache_and_voids_stamps() -> None:
    near = live()
    stamp = near.stamp("did:plc:a")
    near.put("did:plc:a", "k", 1, stamp)
    near._set_ready(False)
    near._set_ready(True)
    assert near.get("did:plc:a", "k") is MISS
    near.put("did:plc:a", "k", 1, stamp)  # read before the loss: refused
    assert near.get("did:plc:a", "k") is MISS


def test_a_flush_message_empties_everything() -> None:
    near = live()
    near.put("did:plc:a", "k", 1, near.stamp("did:plc:a"))
    near._apply(None)
    assert len(near) == 0


def test_messages_map_keys_to_scopes() -> None:
    near = live()
    near.put("did:plc:a", "k", 1, near.stamp("did:plc:a"))
    near.put("id:alice.test", "identity", 2, near.stamp("id:alice.test"))
    near._apply([keys.tags("did:plc:a", "repo").encode()])
    assert near.get("did:plc:a", "k") is MISS
    near._apply([keys.negative_identity("alice.test").encode()])
    assert near.get("id:alice.test", "identity") is MISS


@pytest.mark.parametrize(
    ("key", "scope"),
    [
        (keys.tags("did:plc:abc", "r"), "did:plc:abc"),
        (keys.manifest_bytes("did:web:x.test", "sha256:00"), "did:web:x.test"),
        (keys.sync("did:plc:abc"), "did:plc:abc"),
        (keys.identity("bob.test"), "id:bob.test"),
        (keys.identity("did:plc:abc"), "id:did:plc:abc"),
        (keys.negative_identity("gone.test"), "id:gone.test"),
        ("av:catalog", None),
        ("something-else", None),
    ],
)
def test_scope_of_key(key: str, scope: str | None) -> None:
    assert keys.scope_of_key(key) == scope
    assert any(key.startswith(p) for p in keys.TRACKED_PREFIXES) == (scope is not None)


def test_entries_expire_after_the_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    near = live(ttl=2.0)
    near.put("did:plc:a", "k", 1, near.stamp("did:plc:a"))
    later = time.monotonic() + 2.5
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert near.get("did:plc:a", "k") is MISS


def test_memory_is_bounded_by_bytes_and_entries() -> None:
    near = live(max_entries=100, max_bytes=80_000)
    for i in range(50):
        near.put("did:plc:a", i, b"x", near.stamp("did:plc:a"), size=5_000)
    assert near._bytes <= 80_000 and len(near) == 16
    assert near.get("did:plc:a", 49) == b"x" and near.get("did:plc:a", 0) is MISS  # oldest go first
    near.put("did:plc:a", "huge", b"x", near.stamp("did:plc:a"), size=20_000)  # over an eighth: not kept
    assert near.get("did:plc:a", "huge") is MISS
    for i in range(200):
        near.put(f"did:plc:{i}", "k", 1, near.stamp(f"did:plc:{i}"), size=1)
    assert len(near) == 100
