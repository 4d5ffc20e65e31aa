"""Typed views of read-model entries, as the readers (OCI routes, UI, token endpoint) see them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest of a repository.

    `raw` holds the exact bytes when the entry comes from ``Loader.manifest``; list views
    (``manifests``, ``referrers``) leave it empty (``b""``) and carry `size` instead, which is
    the exact byte length (from the ``manifestBlob`` ref, checked when the bytes are fetched).
    """

    did: str
    repository: str
    digest: str
    media_type: str
    raw: bytes
    hold_did: str | None
    record: dict[str, Any]
    cid: str | None
    subject_digest: str | None
    artifact_type: str | None
    annotations: dict[str, str]
    size: int
    created_at: str
    rkey: str = ""
    blob_cid: str | None = None


@dataclass(frozen=True)
class TagEntry:
    """One tag record. `digest` is resolved from the ``manifest`` AT-URI, else ``manifestDigest``."""

    did: str
    repository: str
    tag: str
    digest: str
    rkey: str
    cid: str | None
    updated_at: str
    manifest_uri: str | None = None


@dataclass(frozen=True)
class CrewEntry:
    """A crew record of a hold (member DID, role, permissions)."""

    hold_did: str
    member: str
    role: str
    permissions: tuple[str, ...]
    rkey: str
    tier: str | None = None
    added_at: str = ""


@dataclass(frozen=True)
class RepoStats:
    """Pull/push counters of a repository, summed across every hold that reported them."""

    pull_count: int = 0
    push_count: int = 0
    last_pull: str | None = None
    last_push: str | None = None
    holds: tuple[str, ...] = ()
    daily_pulls: tuple[tuple[str, int], ...] = ()
    """(UTC day ``YYYY-MM-DD``, pulls) summed over holds, oldest first; empty when no hold keeps them."""


@dataclass(frozen=True)
class UserEntry:
    """What a page shows of a user: identity plus display name and avatar (Bluesky profile)."""

    did: str
    handle: str | None
    pds_endpoint: str
    display_name: str | None = None
    avatar_cid: str | None = None
    avatar_mime: str | None = None

    @property
    def avatar_url(self) -> str | None:
        """The avatar served by the user's PDS (public, no auth)."""
        if not self.avatar_cid:
            return None
        return f"{self.pds_endpoint}/xrpc/com.atproto.sync.getBlob?did={self.did}&cid={self.avatar_cid}"


@dataclass(frozen=True)
class RepoSummary:
    """One repository card (home, search, user pages), read in one pipelined round trip per page."""

    did: str
    repository: str
    handle: str | None
    description: str | None
    star_count: int
    pull_count: int
    push_count: int
    last_push_ms: int


@dataclass(frozen=True)
class SearchResults:
    users: list[str] = field(default_factory=list)  # DIDs
    repositories: list[str] = field(default_factory=list)  # "<did>/<repository>"
