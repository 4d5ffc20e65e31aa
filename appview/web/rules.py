"""The repository rules page (`/r/{owner}/{repo}/-/rules`): immutable tags and retention,
saved as the owner's `io.atcr.repo.policy` record, with a preview of what retention would
remove (appview/policy/)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from appview.oci.registry import now_iso
from appview.policy import retention
from appview.policy.rules import POLICY_COLLECTION, KeepRule, RepoPolicy, RetentionPlan, policy_rkey
from appview.policy.store import read_policy
from appview.web.actions import Actions
from appview.web.errors import BadInput, NotOwner, UpstreamDown
from appview.web.ui import Viewer
from atcr import errors

log = logging.getLogger("appview.web")

MAX_PATTERNS = 50


@dataclass(frozen=True)
class RulesForm:
    """The form's fields as text (shown back as typed when they do not parse)."""

    immutable: str = ""
    keep: str = ""
    untagged_days: str = ""
    protect: str = ""

    @classmethod
    def of(cls, policy: RepoPolicy) -> RulesForm:
        return cls(
            immutable="\n".join(policy.immutable),
            keep="\n".join(f"{k.pattern} {k.count}" for k in policy.keep),
            untagged_days="" if policy.untagged_days is None else str(policy.untagged_days),
            protect="\n".join(policy.protect),
        )

    @classmethod
    def from_post(cls, form: dict[str, Any]) -> RulesForm:
        return cls(*(str(form.get(k) or "") for k in ("immutable", "keep", "untagged_days", "protect")))

    def policy(self, repository: str) -> RepoPolicy:
        """The rules the form describes; BadInput names the first line that does not parse."""

        def patterns(text: str, what: str) -> tuple[str, ...]:
            out = tuple(dict.fromkeys(line.strip() for line in text.splitlines() if line.strip()))
            if len(out) > MAX_PATTERNS or any(len(p) > 128 for p in out):
                raise BadInput(f"{what}: at most {MAX_PATTERNS} patterns of up to 128 characters.")
            return out

        keep = []
        for line in self.keep.splitlines():
            if not line.strip():
                continue
            pattern, _, count = line.strip().rpartition(" ")
            if not pattern.strip() or not count.isdigit() or int(count) > 10_000:
                raise BadInput(f"Keep newest: write one rule per line as `pattern count`, e.g. `build-* 3` "
                               f"(got {line.strip()[:60]!r}).")
            keep.append(KeepRule(pattern.strip(), int(count)))
        days: int | None = None
        if self.untagged_days.strip():
            if not self.untagged_days.strip().isdigit() or not 1 <= int(self.untagged_days) <= 36500:
                raise BadInput("Untagged manifests: a number of days from 1 to 36500, or empty.")
            days = int(self.untagged_days)
        return RepoPolicy(
            repository=repository,
            immutable=patterns(self.immutable, "Immutable tags"),
            keep=tuple(keep[:20]),
            untagged_days=days,
            protect=patterns(self.protect, "Protected tags"),
        )


class RepoRules:
    def __init__(self, actions: Actions) -> None:
        self.actions = actions

    async def _owner_client(self, viewer: Viewer, owner: str, repository: str) -> tuple[str, Any]:
        did, _ = await self.actions._owner(owner, repository)
        if did != viewer.did:
            raise NotOwner()
        return did, await self.actions._client(viewer)

    async def load(self, viewer: Viewer, owner: str, repository: str) -> RepoPolicy:
        did, client = await self._owner_client(viewer, owner, repository)
        try:
            return await read_policy(client, did, repository)
        except Exception as exc:
            log.info("reading the rules of %s/%s failed: %s", did, repository, exc)
            raise UpstreamDown("Your account's server did not answer.") from None

    async def preview(self, viewer: Viewer, owner: str, repository: str, policy: RepoPolicy) -> RetentionPlan:
        did, _ = await self._owner_client(viewer, owner, repository)
        return await retention.preview(self.actions.loader, did, repository, policy)

    async def save(self, viewer: Viewer, owner: str, repository: str, policy: RepoPolicy) -> None:
        did, client = await self._owner_client(viewer, owner, repository)
        rkey = policy_rkey(repository)
        try:
            current = await client.get_record(did, POLICY_COLLECTION, rkey)
            created = str((current.get("value") or {}).get("createdAt") or now_iso())
        except errors.RecordNotFound:
            created = now_iso()
        except (errors.XrpcError, errors.NetworkError):
            raise UpstreamDown("Your account's server did not answer.") from None
        record = {"$type": POLICY_COLLECTION, **policy.to_record(created_at=created, updated_at=now_iso())}
        try:
            await client.put_record(did, POLICY_COLLECTION, rkey, record)
        except errors.RecordValidationError as exc:
            raise BadInput(f"The rules could not be saved: {exc}") from None
        except errors.XrpcError as exc:
            log.info("rules write for %s/%s failed: %s", did, repository, exc)
            raise UpstreamDown("Your account's server refused the change. Try again, or sign in again.") from None
        except errors.NetworkError:
            raise UpstreamDown("Your account's server did not answer.") from None
        schedule = self.actions.registry.retention_schedule
        if policy.has_retention and schedule is not None:
            await schedule.remember(did, repository)  # scheduled runs apply it without a push
