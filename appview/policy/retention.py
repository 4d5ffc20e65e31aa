"""Retention applied to a repository: the plan from its current tags and manifests, and the
deletions (tags first, then manifests, each from this repository only).

Run by the registry after a push by the owner (their PDS credentials are at hand), and by the
settings page's preview (`preview`: the same plan, nothing deleted).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from appview.policy.rules import ManifestState, RepoPolicy, RetentionPlan, TagState, plan

__all__ = ["RetentionPlan", "apply", "preview"]
from atcr.readmodel import ManifestEntry, TagEntry

log = logging.getLogger("appview.policy")


class RepositoryModel(Protocol):
    async def tag_entries(self, did: str, repository: str) -> dict[str, TagEntry]: ...

    async def manifests(self, did: str, repository: str) -> list[ManifestEntry]: ...


def _names(entry: ManifestEntry) -> frozenset[str]:
    out = {c.get("digest") for c in entry.record.get("manifests") or [] if isinstance(c, dict)}
    if entry.subject_digest:
        out.add(entry.subject_digest)
    return frozenset(d for d in out if isinstance(d, str))


async def preview(
    model: RepositoryModel, did: str, repository: str, policy: RepoPolicy, *, now: datetime | None = None
) -> RetentionPlan:
    """What the rules would remove now."""
    if not policy.has_retention:
        return RetentionPlan()
    tags = await model.tag_entries(did, repository)
    manifests = await model.manifests(did, repository)
    return plan(
        policy,
        [TagState(t.tag, t.digest, t.updated_at) for t in tags.values()],
        [ManifestState(m.digest, m.created_at, _names(m)) for m in manifests],
        now or datetime.now(UTC),
    )


async def apply(
    model: RepositoryModel,
    did: str,
    repository: str,
    policy: RepoPolicy,
    *,
    delete_tag: Callable[[TagEntry], Awaitable[Any]],
    delete_manifest: Callable[[str], Awaitable[Any]],
    now: datetime | None = None,
) -> RetentionPlan:
    """Remove what the plan says; returns the plan. Tags go before the manifests they named."""
    out = await preview(model, did, repository, policy, now=now)
    if out.empty:
        return out
    entries = await model.tag_entries(did, repository)
    for t in out.tags:
        entry = entries.get(t.tag)
        if entry is not None and entry.digest == t.digest:
            await delete_tag(entry)
    for m in out.manifests:
        await delete_manifest(m.digest)
    log.info(
        "retention in %s/%s removed %d tag(s) and %d manifest(s)", did, repository, len(out.tags), len(out.manifests)
    )
    return out
