"""Scheduled retention (appview/policy/schedule.py) over a real Valkey: repositories whose
owner has a session get their rules applied, one replica per interval; rules without
retention are forgotten; owners without a session are skipped and kept for later."""

from __future__ import annotations

from typing import Any

import pytest

from appview.policy.rules import RepoPolicy
from appview.policy.schedule import LOCK_KEY, PROBE_PREFIX, PROBE_SECONDS, REPOS_KEY, RetentionSchedule
from atcr.errors import RecordNotFound

pytestmark = pytest.mark.integration


class FakeClient:
    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        self.records = records

    async def get_record(self, repo: str, collection: str, rkey: str) -> dict[str, Any]:
        if rkey not in self.records:
            raise RecordNotFound(400, "RecordNotFound", "no record")
        return {"value": self.records[rkey]}


class FakeSessions:
    def __init__(self, clients: dict[str, FakeClient]) -> None:
        self.clients = clients

    async def client(self, did: str) -> Any:
        return self.clients.get(did)


class FakeRegistry:
    def __init__(self) -> None:
        self.applied: list[tuple[str, RepoPolicy]] = []

    async def resolve(self, name: str) -> Any:
        return name

    async def apply_retention(self, ref: Any, client: Any, policy: RepoPolicy) -> None:
        self.applied.append((ref, policy))


async def test_scheduled_runs(valkey: Any) -> None:
    keep = {"repository": "app", "retention": {"untaggedOlderThanDays": 7}}
    sessions = FakeSessions({
        "did:plc:alice": FakeClient({"app": keep, "team:tool": {"repository": "team/tool", "immutableTags": ["v*"]}}),
    })
    registry = FakeRegistry()
    schedule = RetentionSchedule(valkey, registry, sessions, 60)  # type: ignore[arg-type]
    for did, repo in (("did:plc:alice", "app"), ("did:plc:alice", "team/tool"), ("did:plc:bob", "svc")):
        await schedule.remember(did, repo)
    assert await schedule.run_once() == 1
    assert [(ref, p.untagged_days) for ref, p in registry.applied] == [("did:plc:alice/app", 7)]
    members = {m.decode() for m in await valkey.smembers(REPOS_KEY)}
    # team/tool has no retention any more: forgotten; bob has no session: kept for later.
    assert members == {"did:plc:alice|app", "did:plc:bob|svc"}
    assert await schedule.run_once() == 0  # another run within the interval (any replica) does nothing
    await valkey.delete(LOCK_KEY)
    assert await schedule.run_once() == 1


async def test_push_reads_rules_only_where_they_may_exist(valkey: Any) -> None:
    """A re-tag of a repository without retention reads no rules at the PDS once they were
    looked at; a remembered repository (rules page save, or a push that found rules) always
    has them read; a probe that lapsed reads them again (rules another tool wrote)."""
    schedule = RetentionSchedule(valkey, FakeRegistry(), FakeSessions({}), 60)  # type: ignore[arg-type]
    assert await schedule.may_have_retention("did:plc:carol", "plain") is True  # never looked at
    assert await schedule.may_have_retention("did:plc:carol", "plain") is False  # looked at: skip
    await schedule.remember("did:plc:carol", "kept")
    for _ in range(2):
        assert await schedule.may_have_retention("did:plc:carol", "kept") is True
    await valkey.delete(PROBE_PREFIX + "did:plc:carol|plain")  # the probe lapsed
    assert await schedule.may_have_retention("did:plc:carol", "plain") is True
    assert 0 < await valkey.ttl(PROBE_PREFIX + "did:plc:carol|plain") <= PROBE_SECONDS
