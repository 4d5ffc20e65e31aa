"""Tag rules of one repository, from its `io.atcr.repo.policy` record (docs/records.md).

Patterns are globs (``*``, ``?``, ``[...]``) matched against the whole tag, case-sensitively
(`fnmatch.fnmatchcase`): ``v*`` matches ``v1.2.0``, not ``latest``.

* **Immutable tags**: a tag matching an ``immutableTags`` pattern may be created, and pushed
  again with the same digest, but not moved to another digest nor deleted; the refusal is OCI
  ``DENIED`` and names the rule.
* **Retention** (`plan`): for each ``keepNewest`` rule, the tags matching its pattern beyond the
  newest ``count`` (by the tag record's last update; protected tags neither go nor count) go;
  a manifest left with no tag by that goes with it; with ``untaggedOlderThanDays``, so does
  every untagged manifest older than that.
  Tags matching ``protect`` or ``immutableTags`` never go, nor do manifests another kept
  manifest names (an index's children, a referrer's subject).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from appview.errors import Denied

POLICY_COLLECTION = "io.atcr.repo.policy"


def policy_rkey(repository: str) -> str:
    """The record's rkey: the repository name, ``/`` as ``:`` (as `io.atcr.repo.page`)."""
    return repository.replace("/", ":")


def _patterns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(p for p in value if isinstance(p, str) and p)


@dataclass(frozen=True)
class KeepRule:
    pattern: str
    count: int


@dataclass(frozen=True)
class RepoPolicy:
    repository: str = ""
    immutable: tuple[str, ...] = ()
    keep: tuple[KeepRule, ...] = ()
    untagged_days: int | None = None
    protect: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, value: Any) -> RepoPolicy:
        """Lenient: parts that do not parse are left out (the lexicon is checked on write)."""
        if not isinstance(value, dict):
            return cls()
        raw = value.get("retention")
        retention: dict[str, Any] = raw if isinstance(raw, dict) else {}
        keep = []
        for rule in retention.get("keepNewest") or []:
            if isinstance(rule, dict) and isinstance(rule.get("pattern"), str) and isinstance(rule.get("count"), int):
                keep.append(KeepRule(rule["pattern"], max(0, rule["count"])))
        days = retention.get("untaggedOlderThanDays")
        return cls(
            repository=str(value.get("repository") or ""),
            immutable=_patterns(value.get("immutableTags")),
            keep=tuple(keep),
            untagged_days=days if isinstance(days, int) and not isinstance(days, bool) and days > 0 else None,
            protect=_patterns(retention.get("protect")),
        )

    def to_record(self, *, created_at: str, updated_at: str) -> dict[str, Any]:
        retention: dict[str, Any] = {}
        if self.keep:
            retention["keepNewest"] = [{"pattern": k.pattern, "count": k.count} for k in self.keep]
        if self.untagged_days is not None:
            retention["untaggedOlderThanDays"] = self.untagged_days
        if self.protect:
            retention["protect"] = list(self.protect)
        out: dict[str, Any] = {"repository": self.repository, "createdAt": created_at, "updatedAt": updated_at}
        if self.immutable:
            out["immutableTags"] = list(self.immutable)
        if retention:
            out["retention"] = retention
        return out

    @property
    def has_retention(self) -> bool:
        return bool(self.keep) or self.untagged_days is not None

    def immutable_rule(self, tag: str) -> str | None:
        return next((p for p in self.immutable if fnmatchcase(tag, p)), None)

    def protected(self, tag: str) -> bool:
        return self.immutable_rule(tag) is not None or any(fnmatchcase(tag, p) for p in self.protect)


def _denied(name: str, tag: str, rule: str, what: str) -> Denied:
    return Denied(
        f"tag {tag!r} of {name} is immutable (rule {rule!r} of the repository's tag policy): it cannot be "
        f"{what}; remove the rule first",
        detail={"tag": tag, "rule": rule},
    )


def check_move(policy: RepoPolicy, name: str, tag: str, current: str | None, wanted: str) -> None:
    """DENIED when `tag` exists at another digest and a rule makes it immutable."""
    if current is None or current == wanted:
        return
    rule = policy.immutable_rule(tag)
    if rule is not None:
        raise _denied(name, tag, rule, f"moved from {current} to {wanted}")


def check_delete(policy: RepoPolicy, name: str, tags: Iterable[str]) -> None:
    for tag in tags:
        rule = policy.immutable_rule(tag)
        if rule is not None:
            raise _denied(name, tag, rule, "deleted")


# --- retention -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TagState:
    tag: str
    digest: str
    updated_at: str  # ISO time of the tag record's last write (updatedAt, else createdAt)


@dataclass(frozen=True)
class ManifestState:
    digest: str
    created_at: str
    names: frozenset[str] = frozenset()  # digests it names: an index's children, a referrer's subject


@dataclass
class RetentionPlan:
    tags: list[TagState] = field(default_factory=list)  # tags that go
    manifests: list[ManifestState] = field(default_factory=list)  # manifests that go
    reasons: dict[str, str] = field(default_factory=dict)  # tag or digest -> why

    @property
    def empty(self) -> bool:
        return not self.tags and not self.manifests


def _when(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return datetime.max.replace(tzinfo=UTC)  # unknown age: treated as new (kept)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def plan(
    policy: RepoPolicy, tags: Sequence[TagState], manifests: Sequence[ManifestState], now: datetime
) -> RetentionPlan:
    out = RetentionPlan()
    going: set[str] = set()
    for rule in policy.keep:
        # Protected and immutable tags are kept and do not count toward the newest N.
        matching = [t for t in tags if fnmatchcase(t.tag, rule.pattern) and not policy.protected(t.tag)]
        matching.sort(key=lambda t: (_when(t.updated_at), t.tag), reverse=True)
        for t in matching[rule.count :]:
            if t.tag in going:
                continue
            going.add(t.tag)
            out.tags.append(t)
            out.reasons[t.tag] = f"beyond the newest {rule.count} of {rule.pattern!r}"
    remaining = {t.digest for t in tags if t.tag not in going}
    untagged_by_plan = {t.digest for t in out.tags} - remaining
    cutoff = now - timedelta(days=policy.untagged_days) if policy.untagged_days is not None else None
    candidates: dict[str, str] = {}
    for m in manifests:
        if m.digest in remaining:
            continue
        if m.digest in untagged_by_plan:
            candidates[m.digest] = "its tags were removed by retention"
        elif cutoff is not None and _when(m.created_at) < cutoff:
            candidates[m.digest] = f"untagged and older than {policy.untagged_days} days"
    # A manifest a kept manifest names (an index's child, a referrer's subject) stays.
    kept_names: set[str] = set()
    for m in manifests:
        if m.digest not in candidates:
            kept_names |= m.names
    for m in manifests:
        if m.digest in candidates and m.digest not in kept_names:
            out.manifests.append(m)
            out.reasons[m.digest] = candidates[m.digest]
    return out
