"""Key layout and deterministic rkeys."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from atcr.readmodel import keys
from atcr.syntax import is_record_key


def test_tag_rkey_is_stable_and_record_key_safe() -> None:
    rkey = keys.tag_rkey("app", "latest")
    assert rkey == keys.tag_rkey("app", "latest") != keys.tag_rkey("app", "v1")
    assert len(rkey) == 26 and rkey == rkey.lower() and is_record_key(rkey)
    # "a:b" + "c" and "a" + "b:c" must not collide just because of the separator position.
    assert keys.tag_rkey("a", "b") != keys.tag_rkey("a:b", "")


@given(st.text(min_size=1, max_size=255), st.text(min_size=1, max_size=128))
def test_tag_rkey_always_valid(repository: str, tag: str) -> None:
    assert is_record_key(keys.tag_rkey(repository, tag))


def test_stats_rkey_follows_atcr_scheme() -> None:
    import base64

    want = base64.b32encode(hashlib.sha256(b"did:plc:x/app").digest()[:16]).decode().rstrip("=").lower()
    assert keys.stats_rkey("did:plc:x", "app") == want


def test_manifest_rkey_round_trips_sha256_and_sha512() -> None:
    d256 = "sha256:" + "a" * 64
    d512 = "sha512:" + "b" * 128
    assert keys.manifest_rkey(d256) == "a" * 64
    assert keys.digest_from_rkey(keys.manifest_rkey(d256)) == d256
    assert keys.digest_from_rkey(keys.manifest_rkey(d512)) == d512
    assert keys.digest_from_rkey("3kabcdefghij2") is None
    assert keys.digest_from_rkey("A" * 64) is None


def test_per_did_keys_share_one_cluster_slot() -> None:
    did = "did:plc:abc"
    names = [keys.records(did, keys.TAG), keys.sync(did), keys.tags(did, "app"), keys.manifests(did, "app")]
    assert all(n.startswith("av:{did:plc:abc}:") for n in names)
