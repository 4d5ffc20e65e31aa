"""An in-memory stand-in for the Loader: just the reads the UI makes."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from atcr.errors import HandleNotFound
from atcr.identity import Identity
from atcr.readmodel.models import CrewEntry, ManifestEntry, RepoStats, RepoSummary, SearchResults, TagEntry, UserEntry
from atcr.readmodel.search import tokenize

OWNER = "did:plc:owner"
HOLD = "did:web:hold.test"


def manifest(repo: str, n: int, annotations: dict[str, str] | None = None) -> ManifestEntry:
    digest = "sha256:" + f"{n:064x}"
    record = {
        "repository": repo, "digest": digest, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "c" * 64, "size": 100},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "sha256:" + "d" * 64,
                    "size": 2_000_000}],
        "annotations": annotations or {}, "createdAt": f"2026-11-{10 + n:02d}T00:00:00Z",
    }
    raw = json.dumps({"schemaVersion": 2, **{k: v for k, v in record.items() if k in ("mediaType", "config", "layers",
                                                                                         "annotations")}}).encode()
    return ManifestEntry(did=OWNER, repository=repo, digest=digest, media_type=record["mediaType"], raw=raw,
                         hold_did=HOLD, record=record, cid=None, subject_digest=None, artifact_type=None,
                         annotations=annotations or {}, size=len(raw), created_at=record["createdAt"])


@dataclass
class FakeLoader:
    repos: dict[str, list[ManifestEntry]] = field(default_factory=dict)
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)
    stars: dict[str, int] = field(default_factory=dict)
    pulls: dict[str, int] = field(default_factory=dict)

    async def identity(self, name: str) -> Identity:
        if name not in (OWNER, "owner.test"):
            raise HandleNotFound(name)
        return Identity(did=OWNER, handle="owner.test", pds_endpoint="https://pds.test", signing_key=None)

    async def user(self, did: str) -> UserEntry:
        return UserEntry(did=did, handle="owner.test", pds_endpoint="https://pds.test")

    async def repositories(self, did: str) -> list[str]:
        return sorted(self.repos)

    async def manifests(self, did: str, repo: str) -> list[ManifestEntry]:
        return [replace_raw(m) for m in self.repos.get(repo, [])]

    async def manifest(self, did: str, repo: str, digest: str) -> ManifestEntry | None:
        return next((m for m in self.repos.get(repo, []) if m.digest == digest), None)

    async def manifest_in(self, did: str, repo: str, digest: str, tag: TagEntry | None = None) -> ManifestEntry | None:
        return await self.manifest(did, repo, digest)

    async def tag_entries(self, did: str, repo: str) -> dict[str, TagEntry]:
        ms = self.repos.get(repo, [])
        return {f"v{i}": TagEntry(did, repo, f"v{i}", m.digest, f"rk{i}", None, m.created_at)
                for i, m in enumerate(ms)}

    async def tags(self, did: str, repo: str) -> dict[str, str]:
        return {t: e.digest for t, e in (await self.tag_entries(did, repo)).items()}

    async def referrers(self, did: str, repo: str, digest: str) -> list[ManifestEntry]:
        return []

    async def repo_page(self, did: str, repo: str) -> dict[str, Any] | None:
        return self.pages.get(repo)

    async def stats(self, did: str, repo: str) -> RepoStats:
        return RepoStats(pull_count=self.pulls.get(repo, 0), push_count=1,
                         daily_pulls=(("2026-11-20", self.pulls.get(repo, 0)),))

    async def star_count(self, did: str, repo: str) -> int:
        return self.stars.get(repo, 0)

    async def starred(self, did: str) -> list[str]:
        return []

    async def summaries(self, refs: list[str]) -> list[RepoSummary]:
        out = []
        for ref in refs:
            did, _, repo = ref.partition("/")
            out.append(RepoSummary(did, repo, "owner.test", None, self.stars.get(repo, 0), self.pulls.get(repo, 0),
                                   1, 1_800_000_000_000))
        return out

    async def search(self, query: str, n: int) -> SearchResults:
        words = tokenize(query)
        hits = [f"{OWNER}/{r}" for r in sorted(self.repos)
                if all(any(t.startswith(w) for t in tokenize(r + " " + str((self.pages.get(r) or {}).get(
                    "description", "")))) for w in words)]
        return SearchResults(users=[OWNER] if all("owner".startswith(w) for w in words) else [], repositories=hits[:n])

    async def recent(self, n: int) -> list[str]:
        return [f"{OWNER}/{r}" for r in sorted(self.repos)][:n]

    async def popular(self, n: int, by: str = "stars") -> list[str]:
        table = self.stars if by == "stars" else self.pulls
        return [f"{OWNER}/{r}" for r in sorted(self.repos, key=lambda r: -table.get(r, 0))][:n]

    async def profile(self, did: str) -> dict[str, Any] | None:
        return {"defaultHold": HOLD}

    async def captain(self, hold: str) -> dict[str, Any] | None:
        return {"owner": "did:plc:someone", "public": True}

    async def crew_member(self, hold: str, member: str, *, refresh: bool = False) -> CrewEntry | None:
        return CrewEntry(hold, member, "member", ("blob:read", "blob:write"), "rk", tier="deckhand")


def replace_raw(m: ManifestEntry) -> ManifestEntry:
    from dataclasses import replace

    return replace(m, raw=b"")
