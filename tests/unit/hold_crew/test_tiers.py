"""Quota tiers from ATCR's quotas.yaml shape (and JSON), sizes, and the policy's fallbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atcr.errors import ConfigError
from hold.quota import QuotaPolicy, Tier, format_size, parse_size

pytestmark = pytest.mark.unit

ATCR_SHAPE = """
tiers:
  deckhand:
    quota: 5GB
  bosun:
    quota: 50GB
    scan_on_push: true
  quartermaster:
    quota: 100GB
    scan_on_push: true
defaults:
  new_crew_tier: deckhand
"""


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1234, 1234), ("5GB", 5 * 10**9), ("5 GB", 5 * 10**9), ("1.5GiB", int(1.5 * 2**30)),
     ("500mb", 500 * 10**6), ("10", 10), ("2TB", 2 * 10**12), ("3KiB", 3072)],
)
def test_parse_size(value: object, expected: int) -> None:
    assert parse_size(value, "q") == expected


@pytest.mark.parametrize("value", ["lots", "5 parsecs", -1, True, None, "", "GB"])
def test_parse_size_refuses(value: object) -> None:
    with pytest.raises(ConfigError, match="^q:"):
        parse_size(value, "q")


@pytest.mark.parametrize(
    ("n", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1 KB"), (5 * 10**9, "5 GB"), (1_500_000, "1.5 MB"),
                    (123_456_789_012, "123.5 GB"), (2 * 10**12, "2 TB")],
)
def test_format_size(n: int, text: str) -> None:
    assert format_size(n) == text


def test_atcr_yaml(tmp_path: Path) -> None:
    path = tmp_path / "quotas.yaml"
    path.write_text(ATCR_SHAPE)
    policy = QuotaPolicy.load(path)
    assert policy.tiers == (
        Tier("deckhand", 5 * 10**9, False),
        Tier("bosun", 50 * 10**9, True),
        Tier("quartermaster", 100 * 10**9, True),
    )
    assert policy.default_tier == "deckhand" and policy.enabled
    assert policy.tier("bosun") == policy.tiers[1]
    assert policy.tier("gone-tier") == policy.tier(None) == policy.tiers[0]  # unknown: the default
    assert policy.by_rank(2) == policy.tiers[2] and policy.by_rank(3) is None and policy.by_rank(-1) is None
    assert policy.tiers[0].to_json() == {
        "name": "deckhand", "quotaBytes": 5 * 10**9, "quotaFormatted": "5 GB", "scanOnPush": False
    }


def test_json_list_form_and_shorthand(tmp_path: Path) -> None:
    path = tmp_path / "quotas.json"
    path.write_text(json.dumps({"tiers": [{"name": "a", "quota": 10}, {"name": "b", "quota": "1KB", "scanOnPush": True}]}))
    policy = QuotaPolicy.load(path)
    assert policy.tiers == (Tier("a", 10), Tier("b", 1000, True))
    assert policy.default_tier == "a"  # no defaults: the first tier
    assert QuotaPolicy.parse({"tiers": {"x": "2GB"}}).tiers == (Tier("x", 2 * 10**9),)


def test_no_file_means_no_quotas() -> None:
    policy = QuotaPolicy.load(None)
    assert not policy.enabled and policy.tier("anything") is None and policy.default_tier is None
    assert QuotaPolicy.parse(None) == policy


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tiers: [1, 2]", "needs a name"),
        ("tiers: {a: {scan_on_push: true}}", "needs a quota"),
        ("tiers: {a: {quota: 1, scan_on_push: maybe}}", "scan_on_push"),
        ("tiers: {a: 1}\ndefaults: {new_crew_tier: b}", "not a tier"),
        ("tiers: 7", "mapping or a list"),
        ("- just a list", "expected a mapping"),
        ("tiers: {a: 1}\ndefaults: [1]", "'defaults' must be a mapping"),
        ("tiers:\n  - {name: a, quota: 1}\n  - {name: a, quota: 2}", "unique"),
        ("tiers: {a: [unclosed", "not valid YAML"),
    ],
)
def test_bad_files_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "quotas.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="HOLD_QUOTAS_PATH") as info:
        QuotaPolicy.load(path)
    assert message in str(info.value)


def test_missing_and_bad_json_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="HOLD_QUOTAS_PATH"):
        QuotaPolicy.load(tmp_path / "nope.yaml")
    bad = tmp_path / "q.json"
    bad.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        QuotaPolicy.load(bad)
