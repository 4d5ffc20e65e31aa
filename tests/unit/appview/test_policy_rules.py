"""Tag rules (appview/policy/rules.py): immutable patterns and the retention plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appview.errors import Denied
from appview.policy.rules import ManifestState, RepoPolicy, TagState, check_delete, check_move, plan, policy_rkey

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def iso(days_ago: float) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")


def d(n: int) -> str:
    return f"sha256:{n:064x}"


def test_record_round_trip_and_rkey() -> None:
    record = {
        "repository": "team/app",
        "immutableTags": ["v*", 7, ""],
        "retention": {"keepNewest": [{"pattern": "*", "count": 3}, {"pattern": 1}], "untaggedOlderThanDays": 30,
                      "protect": ["latest"]},
    }
    policy = RepoPolicy.from_record(record)
    assert policy.immutable == ("v*",) and policy.untagged_days == 30 and policy.protect == ("latest",)
    assert [(k.pattern, k.count) for k in policy.keep] == [("*", 3)]
    again = RepoPolicy.from_record(policy.to_record(created_at=iso(0), updated_at=iso(0)))
    assert again == policy
    assert policy_rkey("team/app") == "team:app"
    assert RepoPolicy.from_record(None) == RepoPolicy()


def test_immutable_move_and_delete_name_the_rule() -> None:
    policy = RepoPolicy(immutable=("v*", "release-[0-9]*"))
    check_move(policy, "alice/app", "v1", None, d(1))  # a new tag
    check_move(policy, "alice/app", "v1", d(1), d(1))  # the same digest again
    check_move(policy, "alice/app", "latest", d(1), d(2))  # no rule names it
    with pytest.raises(Denied) as err:
        check_move(policy, "alice/app", "v1.2", d(1), d(2))
    assert "rule 'v*'" in err.value.message and err.value.detail == {"tag": "v1.2", "rule": "v*"}
    with pytest.raises(Denied) as err:
        check_delete(policy, "alice/app", ["latest", "release-7"])
    assert "rule 'release-[0-9]*'" in err.value.message and "deleted" in err.value.message
    check_delete(policy, "alice/app", ["latest", "V1"])  # case-sensitive


def test_keep_three_after_five_pushes_keeps_newest_and_protected() -> None:
    policy = RepoPolicy(keep=(), protect=("v*", "latest"))
    policy = RepoPolicy.from_record({"retention": {"keepNewest": [{"pattern": "*", "count": 3}],
                                                    "protect": ["v*", "latest"]}})
    tags = [TagState(f"build-{i}", d(i), iso(10 - i)) for i in range(1, 6)]  # build-5 newest
    tags += [TagState("v1", d(1), iso(9)), TagState("latest", d(5), iso(5))]
    manifests = [ManifestState(d(i), iso(10 - i)) for i in range(1, 6)]
    out = plan(policy, tags, manifests, NOW)
    assert sorted(t.tag for t in out.tags) == ["build-1", "build-2"]
    # d(1) keeps its v1 tag; d(2) lost its only tag: it goes too.
    assert [m.digest for m in out.manifests] == [d(2)]
    assert "newest 3" in out.reasons["build-1"]


def test_untagged_older_than_days_and_children_stay() -> None:
    policy = RepoPolicy(untagged_days=30)
    tags = [TagState("latest", d(9), iso(1))]
    manifests = [
        ManifestState(d(9), iso(1), names=frozenset({d(3)})),  # an index naming d(3)
        ManifestState(d(1), iso(40)),  # untagged, old: goes
        ManifestState(d(2), iso(5)),  # untagged, recent: stays
        ManifestState(d(3), iso(40)),  # untagged, old, but a kept index's child: stays
    ]
    out = plan(policy, tags, manifests, NOW)
    assert [m.digest for m in out.manifests] == [d(1)] and not out.tags
    assert plan(RepoPolicy(), tags, manifests, NOW).empty


def test_immutable_tags_are_never_removed_by_retention() -> None:
    policy = RepoPolicy(immutable=("v*",), keep=(), untagged_days=None)
    policy = RepoPolicy.from_record({"immutableTags": ["v*"], "retention": {"keepNewest": [{"pattern": "*",
                                                                                           "count": 1}]}})
    tags = [TagState("v1", d(1), iso(3)), TagState("v2", d(2), iso(2)), TagState("dev", d(3), iso(1))]
    out = plan(policy, tags, [ManifestState(d(i), iso(4 - i)) for i in (1, 2, 3)], NOW)
    assert out.empty
