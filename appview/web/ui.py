"""What each page shows, assembled from the read model (no HTTP types here).

Every page is built from `Loader` calls, so a cold cache (after `FLUSHALL`) only makes the
first view slower, never different: the loader refills from the PDSes and holds. The home and
search pages read cross-user indexes no single upstream can answer; `Discovery` re-seeds those
when it finds them gone. Independent reads of a page run concurrently, so a warm page costs
about one Valkey round trip per card rather than a chain of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, TypeVar

from appview.cache.loader import Loader
from appview.web import markdown
from appview.web.configinfo import ConfigPlatforms
from appview.web.errors import PageNotFound, UpstreamDown
from appview.web.holdhealth import HoldHealth, HoldStatus
from appview.web.sparkline import Sparkline
from appview.web.sparkline import build as build_sparkline
from atcr import errors
from atcr.identity import Identity
from atcr.oci import INDEX_TYPES, InvalidManifest, artifact_kind, parse_manifest
from atcr.readmodel.models import ManifestEntry, RepoStats, TagEntry, UserEntry
from atcr.readmodel.search import tokenize
from atcr.syntax import is_did, is_oci_repository

log = logging.getLogger("appview.web")

T = TypeVar("T")


HOLD_WAIT: Final = 0.4
"""Seconds a page waits on parts that come from holds (stats, health) by default
(`ATCR_UI_HOLD_WAIT`): a hung hold must not hold the page (docs/web-ui.md). What is not ready
by then shows on a later view."""

_behind: set[asyncio.Future[Any]] = set()


async def _within(call: Awaitable[T], default: T, seconds: float) -> T:
    """`call`'s answer if it comes within `seconds`, else `default` while it finishes behind
    the page (its result lands in the caches the next view reads)."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        _behind.add(task)
        task.add_done_callback(_finished_behind)
        return default
    try:
        return task.result()
    except errors.AtcrError:
        return default


def _finished_behind(task: asyncio.Future[Any]) -> None:
    _behind.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a failure behind a page is not an error of its own


async def _optional(call: Awaitable[T], default: T) -> T:
    """A part of a page that may be missing: its reader failing shows `default`, not an error page."""
    try:
        return await call
    except errors.AtcrError:
        return default

GC_RUNS_WAIT: Final = 0.8  # seconds the settings page waits for a hold's GC runs (a PDS token + a hold call)
PAGE_COLLECTION: Final = "io.atcr.repo.page"
STAR_COLLECTION: Final = "io.atcr.sailor.star"
HOME_CARDS: Final = 12
SEARCH_PAGE: Final = 20
SEARCH_CANDIDATES: Final = 200
USER_REPOS: Final = 200

SIGNATURE_TYPES: Final = frozenset(
    {
        "application/vnd.dev.cosign.artifact.sig.v1+json",
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.cncf.notary.signature",
    }
)
SBOM_MARKERS: Final = ("spdx", "cyclonedx", "sbom", "syft")


def page_rkey(repository: str) -> str:
    """The rkey of a repository's ``io.atcr.repo.page`` record.

    ATCR uses the repository name; a nested name (``team/app``) is not a valid rkey, so its
    slashes become ``:`` (a character repository names cannot contain, so the mapping is
    reversible and `atcr.readmodel.records.star_subject` reads it back).
    """
    return repository.replace("/", ":")


def page_uri(did: str, repository: str) -> str:
    """The star subject: the AT-URI of the repository's page record (ATCR's current schema)."""
    return f"at://{did}/{PAGE_COLLECTION}/{page_rkey(repository)}"


def avatar_path(did: str, cid: str | None) -> str | None:
    """Our caching proxy for a blob of `did` (see `appview.web.blobs`); None without a blob."""
    return f"/img/{did}/{cid}" if cid else None


def owner_name(did: str, handle: str | None) -> str:
    """How the owner appears in URLs and pull commands: the handle when it is verified."""
    return handle or did


def repo_href(did: str, handle: str | None, repository: str) -> str:
    return f"/r/{owner_name(did, handle)}/{repository}"


# --- page models ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Viewer:
    """The signed-in user looking at a page (None on the page when signed out)."""

    did: str
    handle: str | None


@dataclass(frozen=True)
class Person:
    did: str
    handle: str | None
    display_name: str | None
    avatar: str | None

    @property
    def name(self) -> str:
        return owner_name(self.did, self.handle)

    @property
    def href(self) -> str:
        return f"/u/{self.name}"


@dataclass(frozen=True)
class Card:
    """One repository in a list (home, search, user pages)."""

    owner: Person
    repository: str
    summary: str
    stars: int
    pulls: int
    pushes: int
    last_push: int  # ms
    icon: str | None
    tag_count: int | None = None

    @property
    def href(self) -> str:
        return repo_href(self.owner.did, self.owner.handle, self.repository)


@dataclass(frozen=True)
class HomePage:
    recent: list[Card]
    popular: list[Card]
    popular_by: str


@dataclass(frozen=True)
class SearchPage:
    query: str
    users: list[Person]
    repositories: list[Card]
    page: int
    has_next: bool
    total: int


@dataclass(frozen=True)
class UserPage:
    person: Person
    repositories: list[Card]
    is_self: bool


@dataclass(frozen=True)
class TagRow:
    tag: str
    digest: str
    media_type: str
    kind: str  # container-image, index, helm-chart, artifact, or missing (the manifest is not found)
    platforms: list[str]
    size: int | None
    pushed_at: str
    artifact_type: str | None = None
    hold_did: str | None = None  # where its layers (and its scan record) are


@dataclass(frozen=True)
class ManifestRow:
    digest: str
    media_type: str
    kind: str
    artifact_type: str | None
    size: int | None
    created_at: str
    tags: list[str]
    platforms: list[str]
    is_referrer: bool
    parent: str | None = None  # the index this row is a platform image of (listed right under it)
    platform: str = ""  # that platform, as the index names it


@dataclass(frozen=True)
class RepoPage:
    owner: Person
    repository: str
    description_html: str
    description_source: str
    icon: str | None
    tags: list[TagRow]
    manifests: list[ManifestRow]
    stats: RepoStats
    stars: int
    starred: bool
    is_owner: bool
    hold: HoldStatus | None
    sparkline: Sparkline
    pull_ref: str  # "<host>/<owner>/<repo>:<tag>"
    pull_command: str = ""  # docker pull, oras pull (artifacts) or helm pull (charts) of pull_ref

    @property
    def href(self) -> str:
        return repo_href(self.owner.did, self.owner.handle, self.repository)


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int
    annotations: dict[str, str]


@dataclass(frozen=True)
class Child:
    digest: str
    media_type: str
    size: int
    platform: str
    tags: list[str] = field(default_factory=list)
    present: bool = True  # False: a sparse index names it, but the repository does not have it


@dataclass(frozen=True)
class Referrer:
    digest: str
    artifact_type: str
    category: str  # "signature" | "sbom" | "attestation" | "artifact"
    size: int
    created_at: str
    annotations: dict[str, str]


@dataclass(frozen=True)
class ManifestPage:
    owner: Person
    repository: str
    digest: str
    media_type: str
    kind: str
    artifact_type: str | None
    size: int
    total_size: int
    created_at: str
    tags: list[str]
    config: Layer | None
    layers: list[Layer]
    children: list[Child]
    annotations: dict[str, str]
    referrers: list[Referrer]
    subject: str | None
    hold: HoldStatus | None
    is_owner: bool
    pull_ref: str
    pull_command: str = ""
    platform: str | None = None  # a single-platform image's, from its config

    @property
    def repo_href(self) -> str:
        return repo_href(self.owner.did, self.owner.handle, self.repository)


@dataclass(frozen=True)
class HoldChoice:
    did: str
    role: str | None  # crew role, "captain", or None when not crew
    permissions: tuple[str, ...]
    tier: str | None
    reachable: bool | None
    public: bool | None
    is_default: bool
    is_appview_default: bool
    endpoint: str | None = None
    gc: GcSummary | None = None  # the captain's view of the hold's garbage collection

    @property
    def host(self) -> str:
        return hold_host(self.did, self.endpoint)


@dataclass(frozen=True)
class GcSummary:
    """A hold's garbage-collection runs as its captain sees them on the settings page."""

    runs: int
    last_finished: float | None
    last_blobs: int
    last_bytes: int
    total_blobs: int
    total_bytes: int

    @classmethod
    def of(cls, runs: list[dict[str, Any]]) -> GcSummary:
        real = [r for r in runs if not r.get("dry_run") and not r.get("skipped")]
        last = real[0] if real else {}

        def num(r: dict[str, Any], k: str) -> int:
            v = r.get(k)
            return int(v) if isinstance(v, int | float) else 0

        finished = last.get("finished_at")
        return cls(
            runs=len(real),
            last_finished=float(finished) if isinstance(finished, int | float) else None,
            last_blobs=num(last, "blobs_deleted"),
            last_bytes=num(last, "bytes_reclaimed"),
            total_blobs=sum(num(r, "blobs_deleted") for r in real),
            total_bytes=sum(num(r, "bytes_reclaimed") for r in real),
        )


@dataclass(frozen=True)
class SettingsPage:
    person: Person
    default_hold: str | None
    holds: list[HoldChoice]
    devices: list[Any] = field(default_factory=list)


# --- helpers ----------------------------------------------------------------------------------


def _platforms(record: dict[str, Any]) -> list[str]:
    out = []
    for child in record.get("manifests") or []:
        plat = child.get("platform") if isinstance(child, dict) else None
        if isinstance(plat, dict):
            text = "/".join(str(p) for p in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if p)
            if text and text != "unknown/unknown":
                out.append(text)
    return out


def _record_size(entry: ManifestEntry, by_digest: dict[str, ManifestEntry]) -> int | None:
    """Bytes a pull downloads: config + layers; for an index, the largest platform image."""
    rec = entry.record
    if entry.media_type in INDEX_TYPES or rec.get("manifests"):
        sizes = [_record_size(by_digest[c["digest"]], {}) for c in rec.get("manifests") or []
                 if isinstance(c, dict) and c.get("digest") in by_digest]
        known = [s for s in sizes if s is not None]
        return max(known) if known else None
    total = 0
    found = False
    for desc in [rec.get("config"), *(rec.get("layers") or [])]:
        if isinstance(desc, dict) and isinstance(desc.get("size"), int):
            total += int(desc["size"])
            found = True
    return (total + entry.size) if found else None


def _kind(entry: ManifestEntry) -> str:
    """container-image, index, helm-chart or artifact (ATCR's "unknown": anything else with a manifest)."""
    if entry.media_type in INDEX_TYPES:
        return "index"
    config = entry.record.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    kind = artifact_kind(config_type, entry.record.get("artifactType"))
    return "artifact" if kind == "unknown" else kind


def _config_digest(entry: ManifestEntry) -> str | None:
    config = entry.record.get("config")
    digest = config.get("digest") if isinstance(config, dict) else None
    return digest if isinstance(digest, str) and ":" in digest else None


def pull_command(kind: str, host: str, name: str, ref: str, *, plain_http: bool = False) -> str:
    """What to run to fetch `host/name` at `ref` (``:tag`` or ``@digest``) for this kind of content.

    Images and indexes: ``docker pull``. Helm charts: ``helm pull oci://``. Any other artifact
    (an SBOM, a signature, a file pushed with oras): ``oras pull``; docker cannot pull those.
    """
    plain = " --plain-http" if plain_http else ""
    if kind == "artifact":
        return f"oras pull{plain} {host}/{name}{ref}"
    if kind == "helm-chart":
        if ref.startswith(":"):
            return f"helm pull oci://{host}/{name} --version {ref[1:]}{plain}"
        return f"helm pull oci://{host}/{name}{ref}{plain}"
    return f"docker pull {host}/{name}{ref}"


def hold_host(did: str, endpoint: str | None) -> str:
    """How a hold is named on a page: the host its endpoint (or its did:web) names, not the raw DID."""
    return HoldStatus(did, False, endpoint, 0.0).host


def referrer_category(artifact_type: str | None) -> str:
    kind = (artifact_type or "").lower()
    if kind in SIGNATURE_TYPES or "signature" in kind or kind.endswith(".sig"):
        return "signature"
    if any(m in kind for m in SBOM_MARKERS):
        return "sbom"
    if "in-toto" in kind or "attestation" in kind or "provenance" in kind:
        return "attestation"
    return "artifact"


async def _gather(aws: Iterable[Awaitable[T]]) -> list[T]:
    return list(await asyncio.gather(*aws))


def _person(user: UserEntry) -> Person:
    return Person(user.did, user.handle, user.display_name, avatar_path(user.did, user.avatar_cid))


def _search_score(query: str, tokens: list[str], repository: str, handle: str | None, stars: int, pulls: int) -> float:
    """Rank: exact name, then name-prefix, then owner, then description-only matches; popularity breaks ties."""
    name_tokens = tokenize(repository)
    handle_tokens = tokenize(handle or "")
    last = repository.rsplit("/", 1)[-1]
    if query in (repository, last):
        base = 100.0
    elif all(any(n.startswith(t) for n in name_tokens) for t in tokens):
        base = 60.0 if repository.startswith(tokens[0]) or last.startswith(tokens[0]) else 50.0
    elif all(any(n.startswith(t) for n in name_tokens + handle_tokens) for t in tokens):
        base = 30.0
    else:
        base = 10.0
    return base + 3 * math.log1p(stars) + math.log1p(pulls)


# --- the service ------------------------------------------------------------------------------


class UiService:
    """Builds page models; the HTTP layer renders them."""

    def __init__(
        self,
        loader: Loader,
        holds: HoldHealth,
        *,
        registry_host: str,
        default_hold_did: str,
        configs: ConfigPlatforms | None = None,
        plain_http: bool = False,
        gc_runs: Callable[[str, str], Awaitable[list[dict[str, Any]]]] | None = None,
        hold_wait: float = HOLD_WAIT,
    ) -> None:
        self.loader = loader
        self.hold_wait = hold_wait
        self.holds = holds
        self.gc_runs = gc_runs  # HoldClient.gc_runs: (hold DID, captain DID) -> the hold's runs
        self.registry_host = registry_host
        self.default_hold_did = default_hold_did
        self.configs = configs
        self.plain_http = plain_http  # the registry speaks http: oras and helm need --plain-http

    async def config_platforms(self, manifests: Iterable[ManifestEntry]) -> dict[str, str]:
        """manifest digest -> platform of single-platform images, read from their config blobs."""
        if self.configs is None:
            return {}
        configs = self.configs
        wanted = {}
        for m in manifests:
            cfg = _config_digest(m)
            if cfg is not None and _kind(m) == "container-image":
                wanted[m.digest] = (m.hold_did, cfg)
        by_config = {cfg: hold for hold, cfg in wanted.values()}
        found = await _gather(configs.platform(hold, cfg) for cfg, hold in by_config.items())
        platform = dict(zip(by_config, found, strict=True))
        return {digest: p for digest, (_, cfg) in wanted.items() if (p := platform.get(cfg))}

    # -- people and cards ------------------------------------------------------------------

    async def identity(self, name: str) -> Identity:
        """A handle or DID from a URL, or PageNotFound."""
        try:
            return await self.loader.identity(name)
        except (errors.IdentityError, errors.InvalidIdentifier):
            raise PageNotFound(f"No account named {name[:100]} could be found.") from None
        except errors.NetworkError:
            raise UpstreamDown("The directory that resolves account names did not answer.") from None

    async def person(self, did: str) -> Person:
        try:
            return _person(await self.loader.user(did))
        except errors.AtcrError:
            return Person(did, None, None, None)

    async def _card(self, did: str, repository: str, *, with_tags: bool = False) -> Card:
        async def tags() -> int | None:
            return len(await self.loader.tags(did, repository)) if with_tags else None

        owner, record, st, stars, tag_count = await asyncio.gather(
            self.person(did),
            _optional(self.loader.repo_page(did, repository), None),
            _optional(self.loader.stats(did, repository), RepoStats()),
            self.loader.star_count(did, repository),
            _optional(tags(), None),
        )
        desc = record.get("description") if record else None
        return Card(
            owner=owner,
            repository=repository,
            summary=markdown.summary(desc if isinstance(desc, str) else None),
            stars=stars,
            pulls=st.pull_count,
            pushes=st.push_count,
            last_push=0,
            icon=avatar_path(did, _blob_cid(record.get("avatar")) if record else None),
            tag_count=tag_count,
        )

    async def cards(self, refs: Sequence[str], *, with_tags: bool = False) -> list[Card]:
        pairs = []
        for ref in refs:
            did, _, repo = ref.partition("/")
            if is_did(did) and is_oci_repository(repo):
                pairs.append((did, repo))
        summaries, cards = await asyncio.gather(
            self.loader.summaries([f"{d}/{r}" for d, r in pairs]),
            _gather(self._card(d, r, with_tags=with_tags) for d, r in pairs),
        )
        last = {(s.did, s.repository): s.last_push_ms for s in summaries}
        return [replace(c, last_push=last.get((c.owner.did, c.repository), 0)) for c in cards]

    # -- pages ----------------------------------------------------------------------------

    async def home(self, popular_by: str = "stars") -> HomePage:
        by = "pulls" if popular_by == "pulls" else "stars"
        recent_refs, popular_refs = await asyncio.gather(
            self.loader.recent(HOME_CARDS), self.loader.popular(HOME_CARDS, by=by)
        )
        recent, popular = await asyncio.gather(self.cards(recent_refs), self.cards(popular_refs))
        # The ranking keeps repositories whose last star went away (score 0); they are not popular.
        popular = [c for c in popular if (c.stars if by == "stars" else c.pulls) > 0]
        return HomePage(recent=recent, popular=popular, popular_by=by)

    async def search(self, query: str, page: int = 1) -> SearchPage:
        query = query.strip()[:200]
        page = max(1, min(page, 50))
        tokens = tokenize(query, limit=5)
        if not tokens:
            return SearchPage(query, [], [], 1, False, 0)
        found = await self.loader.search(query, SEARCH_CANDIDATES)
        summaries = await self.loader.summaries(found.repositories)
        q = query.lower()
        ranked = sorted(
            summaries,
            key=lambda s: (-_search_score(q, tokens, s.repository, s.handle, s.star_count, s.pull_count),
                           s.repository, s.did),
        )
        start = (page - 1) * SEARCH_PAGE
        window = ranked[start : start + SEARCH_PAGE]
        cards = await self.cards([f"{s.did}/{s.repository}" for s in window])
        users: list[Person] = []
        if page == 1:
            people = await _gather(self.person(d) for d in found.users[:SEARCH_PAGE])
            users = sorted(people, key=lambda p: (p.handle != q, not (p.handle or "").startswith(q), p.handle or p.did))
        return SearchPage(query, users, cards, page, start + SEARCH_PAGE < len(ranked), len(ranked))

    async def user(self, name: str, viewer: Viewer | None) -> UserPage:
        ident = await self.identity(name)
        try:
            repos = await self.loader.repositories(ident.did)
        except errors.NetworkError:
            raise UpstreamDown("This account's server did not answer.") from None
        person, cards = await asyncio.gather(
            self.person(ident.did),
            self.cards([f"{ident.did}/{r}" for r in repos[:USER_REPOS]], with_tags=True),
        )
        return UserPage(person, cards, viewer is not None and viewer.did == ident.did)

    async def _repo_basics(
        self, owner: str, repository: str
    ) -> tuple[Identity, list[ManifestEntry], dict[str, TagEntry]]:
        if not is_oci_repository(repository):
            raise PageNotFound(f"{repository[:100]} is not a valid repository name.")
        ident = await self.identity(owner)
        try:
            manifests, tags = await asyncio.gather(
                self.loader.manifests(ident.did, repository), self.loader.tag_entries(ident.did, repository)
            )
        except errors.NetworkError:
            raise UpstreamDown(
                "The owner's server did not answer, and nothing about this repository is cached."
            ) from None
        if not manifests and not tags:
            raise PageNotFound(f"{owner_name(ident.did, ident.handle)} has no repository named {repository}.")
        held = {m.digest for m in manifests}
        orphans = {t.digest: t for _, t in sorted(tags.items()) if t.digest not in held}
        if orphans:
            # Tags whose record an older scheme overwrote still show their image (docs/records.md).
            healed = await _gather(
                _optional(self.loader.manifest_in(ident.did, repository, d, t), None) for d, t in orphans.items()
            )
            manifests = manifests + [m for m in healed if m is not None]
        return ident, manifests, tags

    async def _hold_status(self, hold_did: str | None) -> HoldStatus | None:
        if not hold_did:
            return None
        return await self.holds.status(hold_did)

    async def _starred(self, viewer: Viewer | None, did: str, repository: str) -> bool:
        if viewer is None:
            return False
        return f"{did}/{repository}" in await _optional(self.loader.starred(viewer.did), [])

    async def repo(self, owner: str, repository: str, viewer: Viewer | None) -> RepoPage:
        ident, manifests, tags = await self._repo_basics(owner, repository)
        did = ident.did
        newest_hold = next((m.hold_did for m in manifests if m.hold_did), None)
        person, record, st, stars, starred, hold = await asyncio.gather(
            self.person(did),
            _optional(self.loader.repo_page(did, repository), None),
            _within(self.loader.stats(did, repository), RepoStats(), self.hold_wait),
            self.loader.star_count(did, repository),
            self._starred(viewer, did, repository),
            _within(self._hold_status(newest_hold), None, self.hold_wait),
        )
        by_digest = {m.digest: m for m in manifests}
        # A platform image's platform: what an index says about it, else its own config blob.
        named: dict[str, str] = {}
        for m in manifests:
            for c in m.record.get("manifests") or []:
                if isinstance(c, dict) and isinstance(c.get("digest"), str):
                    text = _platform_text(c.get("platform"))
                    if text and text != "unknown/unknown":
                        named.setdefault(c["digest"], text)
        single = await self.config_platforms(m for m in manifests if m.digest not in named)
        own = {**single, **named}

        def platforms(m: ManifestEntry) -> list[str]:
            return _platforms(m.record) or ([own[m.digest]] if m.digest in own else [])

        tag_rows = []
        tags_of: dict[str, list[str]] = {}
        for name, t in tags.items():
            tags_of.setdefault(t.digest, []).append(name)
            hit = by_digest.get(t.digest)
            tag_rows.append(
                TagRow(
                    tag=name,
                    digest=t.digest,
                    media_type=hit.media_type if hit else "",
                    kind=_kind(hit) if hit else "missing",
                    platforms=platforms(hit) if hit else [],
                    size=_record_size(hit, by_digest) if hit else None,
                    pushed_at=t.updated_at or (hit.created_at if hit else ""),
                    artifact_type=hit.artifact_type if hit else None,
                    hold_did=hit.hold_did if hit else None,
                )
            )
        tag_rows.sort(key=lambda r: (r.pushed_at, r.tag), reverse=True)
        children = {
            c.get("digest") for m in manifests for c in (m.record.get("manifests") or []) if isinstance(c, dict)
        }

        def manifest_row(m: ManifestEntry, parent: str | None = None, platform: str = "") -> ManifestRow:
            return ManifestRow(
                digest=m.digest,
                media_type=m.media_type,
                kind=_kind(m),
                artifact_type=m.artifact_type,
                size=_record_size(m, by_digest),
                created_at=m.created_at,
                tags=sorted(tags_of.get(m.digest, [])),
                platforms=platforms(m),
                is_referrer=m.subject_digest is not None,
                parent=parent,
                platform=platform,
            )

        manifest_rows = []
        for m in manifests:
            if m.digest in children:
                continue  # a platform image is listed right under its index
            manifest_rows.append(manifest_row(m))
            for c in m.record.get("manifests") or []:
                child = by_digest.get(str(c.get("digest"))) if isinstance(c, dict) else None
                if child is not None:
                    manifest_rows.append(manifest_row(child, m.digest, _platform_text(c.get("platform"))))
        desc = record.get("description") if record else None
        source = desc if isinstance(desc, str) else ""
        latest = "latest" if "latest" in tags else (tag_rows[0].tag if tag_rows else None)
        image = f"{owner_name(did, ident.handle)}/{repository}"
        ref, kind = "", "container-image"
        if latest:
            ref, kind = f":{latest}", next(r.kind for r in tag_rows if r.tag == latest)
        elif manifest_rows:
            ref, kind = f"@{manifest_rows[0].digest}", manifest_rows[0].kind
        pull_ref = f"{self.registry_host}/{image}{ref}"
        return RepoPage(
            owner=person,
            repository=repository,
            description_html=markdown.render(source),
            description_source=source,
            icon=avatar_path(did, _blob_cid(record.get("avatar")) if record else None),
            tags=tag_rows,
            manifests=manifest_rows,
            stats=st,
            stars=stars,
            starred=starred,
            is_owner=viewer is not None and viewer.did == did,
            hold=hold,
            sparkline=build_sparkline(dict(st.daily_pulls)),
            pull_ref=pull_ref,
            pull_command=pull_command(kind, self.registry_host, image, ref, plain_http=self.plain_http),
        )

    async def manifest(self, owner: str, repository: str, digest: str, viewer: Viewer | None) -> ManifestPage:
        ident, manifests, tags = await self._repo_basics(owner, repository)
        did = ident.did
        try:
            entry = await self.loader.manifest_in(did, repository, digest)
        except (errors.ManifestBytesUnavailable, errors.DigestMismatch):
            entry = next((m for m in manifests if m.digest == digest), None)
        except errors.NetworkError:
            raise UpstreamDown("The owner's server did not answer.") from None
        if entry is None:
            raise PageNotFound(f"{repository} has no manifest {digest[:80]}.")
        person, referrers, hold = await asyncio.gather(
            self.person(did),
            self.loader.referrers(did, repository, digest),
            _within(self._hold_status(entry.hold_did), None, self.hold_wait),
        )
        doc: dict[str, Any] = {}
        if entry.raw:
            try:
                parse_manifest(entry.raw, entry.media_type or None)
                loaded = json.loads(entry.raw)
                doc = loaded if isinstance(loaded, dict) else {}
            except (InvalidManifest, ValueError):
                doc = {}
        source = doc or entry.record

        def layer(d: Any) -> Layer | None:
            if not isinstance(d, dict) or not isinstance(d.get("digest"), str):
                return None
            ann = d.get("annotations")
            return Layer(
                digest=d["digest"],
                media_type=str(d.get("mediaType") or ""),
                size=int(d.get("size") or 0),
                annotations={str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else {},
            )

        layers = [x for x in (layer(d) for d in source.get("layers") or []) if x is not None]
        config = layer(source.get("config"))
        tags_of: dict[str, list[str]] = {}
        for t, e in sorted(tags.items()):
            tags_of.setdefault(e.digest, []).append(t)
        children = []
        held = {m.digest for m in manifests}  # a sparse index may name children this repository lacks
        for c in source.get("manifests") or []:
            if isinstance(c, dict) and isinstance(c.get("digest"), str):
                plat = c.get("platform")
                children.append(
                    Child(
                        digest=c["digest"],
                        media_type=str(c.get("mediaType") or ""),
                        size=int(c.get("size") or 0),
                        platform=_platform_text(plat),
                        tags=tags_of.get(c["digest"], []),
                        present=c["digest"] in held,
                    )
                )
        ann = source.get("annotations")
        annotations = {str(k): str(v) for k, v in ann.items()} if isinstance(ann, dict) else dict(entry.annotations)
        subject = source.get("subject")
        subject_digest = subject.get("digest") if isinstance(subject, dict) else None
        refs = [
            Referrer(
                digest=r.digest,
                artifact_type=r.artifact_type or r.media_type,
                category=referrer_category(r.artifact_type),
                size=r.size,
                created_at=r.created_at,
                annotations=dict(r.annotations),
            )
            for r in sorted(referrers, key=lambda r: (r.created_at, r.digest), reverse=True)
        ]
        size = len(entry.raw) if entry.raw else entry.size
        total = size + sum(x.size for x in layers) + (config.size if config else 0)
        tag_names = sorted(t for t, e in tags.items() if e.digest == digest)
        kind = "index" if children else _kind(entry)
        # A plain image's "artifact type" is just its config type: only name real artifact types.
        artifact_type = entry.artifact_type if entry.record.get("artifactType") or kind == "artifact" else None
        platform = None
        if kind == "container-image":
            parents = [
                _platform_text(c.get("platform")) for m in manifests for c in (m.record.get("manifests") or [])
                if isinstance(c, dict) and c.get("digest") == digest
            ]
            platform = next((p for p in parents if p and p != "unknown/unknown"), None)
            if platform is None:
                platform = (await self.config_platforms([entry])).get(digest)
        name = f"{owner_name(did, ident.handle)}/{repository}"
        return ManifestPage(
            owner=person,
            repository=repository,
            digest=digest,
            media_type=entry.media_type,
            kind=kind,
            artifact_type=artifact_type,
            size=size,
            total_size=total,
            created_at=entry.created_at,
            tags=tag_names,
            config=config,
            layers=layers,
            children=children,
            annotations=annotations,
            referrers=refs,
            subject=subject_digest if isinstance(subject_digest, str) else None,
            hold=hold,
            is_owner=viewer is not None and viewer.did == did,
            pull_ref=f"{self.registry_host}/{name}@{digest}",
            pull_command=pull_command(kind, self.registry_host, name, f"@{digest}", plain_http=self.plain_http),
            platform=platform,
        )

    async def settings(self, viewer: Viewer) -> SettingsPage:
        try:
            profile = await self.loader.profile(viewer.did)
        except errors.NetworkError:
            raise UpstreamDown("Your account's server did not answer.") from None
        current = (profile or {}).get("defaultHold")
        current = current if isinstance(current, str) and is_did(current) else None
        candidates = [self.default_hold_did]
        if current:
            candidates.append(current)
        try:
            repos = (await self.loader.repositories(viewer.did))[:50]
            listed = await _gather(self.loader.manifests(viewer.did, r) for r in repos)
            candidates.extend(m.hold_did for ms in listed for m in ms if m.hold_did)
        except errors.AtcrError:
            pass  # the settings still show the default hold and the profile's
        unique = list(dict.fromkeys(candidates))
        person, choices = await asyncio.gather(
            self.person(viewer.did),
            _gather(self._hold_choice(h, viewer.did, current) for h in unique),
        )
        return SettingsPage(person=person, default_hold=current, holds=choices)

    async def _hold_choice(self, hold_did: str, member: str, current: str | None) -> HoldChoice:
        async def crew() -> Any:
            found = await self.loader.crew_member(hold_did, member)
            # "Not crew" may predate the user's first push (the listing is cached): ask again.
            return found or await self.loader.crew_member(hold_did, member, refresh=True)

        cap, entry, status = await asyncio.gather(
            _optional(self.loader.captain(hold_did), None), _optional(crew(), None), self.holds.status(hold_did)
        )
        role: str | None = entry.role or "crew" if entry is not None else None
        if cap is not None and cap.get("owner") == member:
            role = "captain"
        public = cap.get("public") if cap is not None else None
        gc = None
        if role == "captain" and status.reachable and self.gc_runs is not None:
            try:
                gc = GcSummary.of(await asyncio.wait_for(self.gc_runs(hold_did, member), GC_RUNS_WAIT))
            except (errors.AtcrError, TimeoutError) as exc:
                log.info("gc runs of %s not shown: %s", hold_did, exc)
        return HoldChoice(
            endpoint=status.endpoint,
            did=hold_did,
            role=role,
            permissions=entry.permissions if entry is not None else (),
            tier=entry.tier if entry is not None else None,
            reachable=status.reachable,
            public=public if isinstance(public, bool) else None,
            is_default=hold_did == (current or self.default_hold_did),
            is_appview_default=hold_did == self.default_hold_did,
            gc=gc,
        )


def _platform_text(plat: Any) -> str:
    if not isinstance(plat, dict):
        return ""
    parts = [str(p) for p in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if p]
    return "/".join(parts)


def _blob_cid(blob: Any) -> str | None:
    if not isinstance(blob, dict):
        return None
    ref = blob.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("$link"), str):
        return str(ref["$link"])
    cid = blob.get("cid")
    return cid if isinstance(cid, str) else None


__all__ = [
    "Card",
    "HomePage",
    "ManifestPage",
    "Person",
    "RepoPage",
    "SearchPage",
    "SettingsPage",
    "UiService",
    "UserPage",
    "Viewer",
    "hold_host",
    "page_rkey",
    "page_uri",
    "pull_command",
    "referrer_category",
]
