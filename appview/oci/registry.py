"""The registry's behaviour (OCI Distribution v1.1) with no HTTP types.

Reads go through the read-model loader (Valkey, refilled from PDSes on a miss). Writes go to
the user's PDS through their session: the manifest bytes as a blob, then the
`io.atcr.manifest` record, then the `io.atcr.tag` record with compare-and-swap. Blob bytes
go to the user's hold and are served from it by redirect; they never rest in the AppView.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import unquote

from appview.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    Denied,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    RangeInvalid,
    RegistryError,
    SizeInvalid,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from appview.holds.client import NSID_INITIATE, NSID_NOTIFY, HoldClient, HoldError, HoldUnavailable
from appview.holds.pulls import PullCounter
from appview.holds.pushhold import PushHolds
from appview.oci.parts import OutgoingPart, PartSplitter
from appview.oci.uploads import UploadSession, UploadStore
from appview.policy import retention
from appview.policy.rules import RepoPolicy, check_delete, check_move
from appview.policy.schedule import RetentionSchedule
from appview.policy.store import read_policy

if TYPE_CHECKING:
    from appview.webhooks.events import WebhookEvents
from atcr.digest import Digest, InvalidDigest
from atcr.errors import (
    AtcrError,
    AuthenticationRequired,
    DidNotFound,
    HandleNotFound,
    InvalidDidDocument,
    InvalidIdentifier,
    InvalidSwap,
    NetworkError,
    RecordNotFound,
    RecordValidationError,
    XrpcError,
)
from atcr.identity import Identity
from atcr.oci import InvalidManifest, Manifest, parse_manifest
from atcr.readmodel import ManifestEntry, TagEntry, tag_rkey
from atcr.readmodel.keys import manifest_rkey, repo_manifest_rkey
from atcr.readmodel.records import tag_digest
from atcr.syntax import is_did, is_oci_repository, is_oci_tag
from atcr.tasks import cancel_and_wait
from atcr.ttlcache import TtlCache
from atcr.xrpc import XrpcClient

# Jitter only (not security): a private generator, so the global one (which tests and
# libraries seed or watch) is never touched from background threads.
_jitter = random.Random()  # noqa: S311

log = logging.getLogger("appview.registry")

T = TypeVar("T")

MANIFEST_COLLECTION = "io.atcr.manifest"
TAG_COLLECTION = "io.atcr.tag"
PROFILE_COLLECTION = "io.atcr.sailor.profile"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
TAG_CAS_ATTEMPTS = 8
TAG_WRITES_AT_ONCE = 8
"""Tags of one push (`?tag=`) read and written at the PDS at once; any number may be asked for."""


class ReadModel(Protocol):
    """What the registry needs from the loader (appview.cache.loader.Loader)."""

    async def identity(self, identifier: str) -> Identity: ...
    async def tags(self, did: str, repository: str) -> dict[str, str]: ...
    async def tag(self, did: str, repository: str, tag: str) -> TagEntry | None: ...
    async def manifest(self, did: str, repository: str, digest: str) -> ManifestEntry | None: ...
    async def manifest_in(
        self, did: str, repository: str, digest: str, tag: TagEntry | None = None
    ) -> ManifestEntry | None: ...
    async def manifest_rkeys(self, did: str, repository: str, digest: str) -> list[str]: ...
    async def manifest_slots(self, did: str, rkeys: list[str]) -> dict[str, tuple[str, str] | None] | None: ...
    async def blob_hint(self, did: str, digest: str) -> tuple[str, int] | None: ...
    async def forget_blob_hints(self, did: str, digests: Sequence[str]) -> None: ...
    async def peek(
        self, did: str, repository: str, digest: str, tag: str | None
    ) -> tuple[ManifestEntry | None, TagEntry | None]: ...
    async def tag_entries(self, did: str, repository: str) -> dict[str, TagEntry]: ...
    async def manifests(self, did: str, repository: str) -> list[ManifestEntry]: ...
    async def emptied(self, did: str, repository: str) -> bool: ...
    async def referrers(self, did: str, repository: str, digest: str) -> list[ManifestEntry]: ...
    async def catalog(self, last: str | None, n: int) -> list[str]: ...
    async def profile(self, did: str) -> dict[str, Any] | None: ...
    async def captain(self, hold_did: str) -> dict[str, Any] | None: ...
    async def wrote_record(
        self, did: str, collection: str, rkey: str, record: dict[str, Any], *, cid: str | None,
        raw_manifest: bytes | None = None, rev: str | None = None,
    ) -> None: ...
    async def deleted_record(self, did: str, collection: str, rkey: str, *, rev: str | None = None) -> None: ...


class SessionSource(Protocol):
    async def client(self, did: str) -> XrpcClient | None: ...


@dataclass(frozen=True)
class RepoRef:
    """A parsed `<identity>/<repository>` name, resolved to its owner."""

    name: str
    did: str
    handle: str | None
    repository: str
    pds: str


@dataclass(frozen=True)
class _Push:
    """One manifest PUT: what each step of writing it needs."""

    ref: RepoRef
    user_did: str
    client: XrpcClient
    raw: bytes
    manifest: Manifest
    hold_did: str


@dataclass(frozen=True)
class PutResult:
    digest: str
    subject: str | None
    tags: tuple[str, ...] = ()
    """Every tag the push pointed at the manifest (the reference's, then the `tag` query's)."""
    after: Callable[[], Awaitable[None]] | None = None
    """Work to run once the answer is sent (a re-tag's record check and hold notification):
    the HTTP layer runs it after the response, so it does not compete with the answer."""


RECORD_BUDGET = 256 * 1024


def fit_record(record: dict[str, Any]) -> dict[str, Any]:
    """Keep a manifest record under PDS record limits.

    The exact manifest is always in `manifestBlob`; the record's copies of annotations are a
    convenience for indexers. A manifest whose annotations would push the record past the
    budget (PDSes refuse records around 1 MB) keeps its descriptors and loses the copies,
    first on layers, then at the top level.
    """
    if len(json.dumps(record)) <= RECORD_BUDGET:
        return record
    out = dict(record)
    for key in ("layers", "manifests"):
        if key in out:
            out[key] = [{k: v for k, v in d.items() if k != "annotations"} for d in out[key]]
    if len(json.dumps(out)) > RECORD_BUDGET:
        out.pop("annotations", None)
    return out


def _rev(out: Any) -> str | None:
    """The repo rev of a write (orders our write-through against Jetstream replays)."""
    commit = out.get("commit") if isinstance(out, dict) else None
    rev = commit.get("rev") if isinstance(commit, dict) else None
    return rev if isinstance(rev, str) else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _unavailable_message(exc: HoldUnavailable, *, unreachable: str = "your hold is unreachable",
                         nothing: str = "stored") -> str:
    """Which side of a push is down: the user's PDS (it issues the hold's tokens, so the hold
    was never asked), the hold's storage, or the hold (`unreachable`)."""
    if exc.error == "PdsUnavailable":
        return f"your PDS is unreachable (it issues the hold's tokens); nothing was {nothing}"
    if exc.error in ("StorageUnavailable", "UploadsUnavailable"):
        return f"your hold's storage is unavailable: {exc.message or exc.error}"
    return unreachable


@contextlib.contextmanager
def _pds_errors() -> Iterator[None]:
    """What a failed write at the user's PDS means to the client."""
    try:
        yield
    except RecordValidationError as exc:
        raise ManifestInvalid(str(exc)) from None
    except AuthenticationRequired:
        raise Unauthorized("your PDS session has expired: run docker login again") from None
    except XrpcError as exc:
        if exc.status >= 500:
            message = f"your PDS is failing ({exc.status} {exc.error}); nothing was written"
            raise Unavailable(message, headers={"Retry-After": "10"}) from None
        raise Unavailable(f"your PDS refused the write: {exc.error}") from None
    except NetworkError:
        raise Unavailable("your PDS is unreachable; nothing was written", headers={"Retry-After": "10"}) from None


async def _ready(value: T) -> T:
    return value


def _resolved(value: T) -> asyncio.Future[T]:
    """An already finished future: awaited any number of times, never left un-awaited."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


async def _first_error(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """Await them all (none is abandoned half-way), then raise the first failure, if any."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results  # type: ignore[return-value]


def _planned_rkey(slots: dict[str, tuple[str, dict[str, Any]] | None], repository: str, digest: str) -> str:
    """The rkey `Registry._put_manifest_record` will write, as far as these reads tell."""
    hex_rkey = manifest_rkey(digest)
    for rk, slot in slots.items():
        if slot is not None and _holds(slot[1], repository, digest):
            return rk
    return hex_rkey if slots.get(hex_rkey) is None else repo_manifest_rkey(repository, digest)


def _kept_record(
    entry: ManifestEntry | None, known: list[str], ref: RepoRef, raw: bytes, manifest: Manifest, hold_did: str
) -> str | None:
    """The rkey of a record the read model shows holding exactly this manifest in this
    repository (a re-tag), else None. Only a hint: `Registry._retag` checks it at the PDS."""
    if entry is None or entry.rkey not in known:
        return None
    wanted = manifest.to_record(repository=ref.repository, hold_did=hold_did, manifest_blob=None, created_at="")
    return entry.rkey if _same_record(entry.record, fit_record(wanted), len(raw)) else None


def _record_blobs(record: dict[str, Any]) -> list[str]:
    """The blob digests (config, layers) a manifest record names."""
    layers = record.get("layers")
    descs = [record.get("config"), *(layers if isinstance(layers, list) else [])]
    return [str(d["digest"]) for d in descs if isinstance(d, dict) and isinstance(d.get("digest"), str)]


def _hold_name(hold_did: str) -> str:
    """A hold as people know it: the host (and port) of a did:web, else the DID."""
    if hold_did.startswith("did:web:"):
        return unquote(hold_did.removeprefix("did:web:").split(":", 1)[0])
    return hold_did


def _holds(value: dict[str, Any], repository: str, digest: str) -> bool:
    """Whether a manifest record holds `digest` in `repository`."""
    return value.get("repository") == repository and value.get("digest") == digest


_VOLATILE = ("$type", "createdAt", "manifestBlob")


def _same_record(existing: dict[str, Any], wanted: dict[str, Any], size: int) -> bool:
    """Whether an existing record already says what a push would write (its creation time and
    blob ref aside): then the push keeps it instead of writing it again."""
    blob = existing.get("manifestBlob")
    if not isinstance(blob, dict) or blob.get("size") != size:
        return False
    def strip(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k not in _VOLATILE}

    return strip(existing) == strip(wanted)


def _tag_target(value: dict[str, Any] | None) -> str | None:
    """The digest a tag record points at, by its AT-URI's rkey or ``manifestDigest``."""
    if value is None:
        return None
    digest, _ = tag_digest(value)
    return digest or None


def split_name(name: str) -> tuple[str, str]:
    """Split `<identity>/<repository>`; raise NAME_INVALID on anything the spec refuses."""
    identity, sep, repository = name.partition("/")
    if not sep or not identity or not is_oci_repository(repository):
        raise NameInvalid(detail={"name": name[:300]})
    if not (is_did(identity) or _plausible_handle(identity)):
        raise NameInvalid(detail={"name": name[:300]})
    return identity, repository


def _plausible_handle(value: str) -> bool:
    return 3 <= len(value) <= 253 and "." in value and all(c.isalnum() or c in ".-" for c in value)


def push_target(reference: str, query_tags: Sequence[str] = ()) -> tuple[Digest | None, list[str]]:
    """What a manifest PUT asks for: the digest it is pushed by (None for a push by tag) and
    every tag to point at it, the reference's first, then each `tag` query parameter once
    (``PUT /v2/<name>/manifests/<digest>?tag=a&tag=b``, distribution-spec main).

    Decided before anything is written: an invalid digest is DIGEST_INVALID, an invalid tag,
    in the path or in any query parameter, MANIFEST_INVALID (as a PUT to an invalid tag is).
    """
    digest: Digest | None = None
    tags: list[str] = []
    if ":" in reference:
        try:
            digest = Digest.parse(reference)
        except InvalidDigest:
            raise DigestInvalid(detail={"reference": reference[:200]}) from None
    elif is_oci_tag(reference):
        tags.append(reference)
    else:
        raise ManifestInvalid("invalid tag", detail={"reference": reference[:200]})
    for tag in query_tags:
        if not is_oci_tag(tag):
            raise ManifestInvalid("invalid tag in a tag query parameter", detail={"tag": tag[:200]})
    return digest, list(dict.fromkeys([*tags, *query_tags]))


def refused_references(
    missing_blobs: Sequence[str], absent_children: Sequence[str], *, sparse_indexes: bool
) -> list[str]:
    """The references that refuse a manifest push (MANIFEST_BLOB_UNKNOWN), sorted, once each.

    A blob (config, layer) must be on the push hold. A child manifest of an index must be in
    the repository unless sparse indexes are allowed (`ATCR_SPARSE_INDEXES`): then an index
    may name platforms the repository does not have, as a mirror of some platforms does.
    """
    refused = list(missing_blobs) if sparse_indexes else [*missing_blobs, *absent_children]
    return sorted(set(refused))


class Registry:
    def __init__(
        self,
        model: ReadModel,
        holds: HoldClient,
        sessions: SessionSource,
        uploads: UploadStore,
        *,
        default_hold_did: str,
        pulls: PullCounter | None = None,
        push_holds: PushHolds | None = None,
        sparse_indexes: bool = True,
    ) -> None:
        self.pulls = pulls
        # An index may name child manifests the repository does not have (ATCR_SPARSE_INDEXES).
        self.sparse_indexes = sparse_indexes
        self.push_holds = push_holds or PushHolds(None, model.profile, holds.reachable, default_hold_did)
        # Short in-process caches: a pull asks for the same blob location and URL many times
        # (HEAD, GET, retries, parallel layers); presigned URLs stay valid for minutes.
        self._locations = TtlCache[tuple[str, str, str, str], tuple[str, int]](ttl=30.0)
        self._urls = TtlCache[tuple[str, str, str], str](ttl=60.0)
        self.model = model
        self.holds = holds
        self.sessions = sessions
        self.uploads = uploads
        self.default_hold_did = default_hold_did
        self.retention_schedule: RetentionSchedule | None = None  # set by the app (appview/policy/schedule.py)
        self.events: WebhookEvents | None = None  # set by the app: webhook events (appview/webhooks/)
        self._background: set[asyncio.Future[None]] = set()  # work after an answer (`_spawn`)

    # --- names --------------------------------------------------------------------------------

    async def resolve(self, name: str) -> RepoRef:
        identity, repository = split_name(name)
        try:
            ident = await self.model.identity(identity)
        except (HandleNotFound, DidNotFound, InvalidIdentifier, InvalidDidDocument):
            raise NameUnknown(detail={"name": name}) from None
        except NetworkError:
            raise Unavailable("identity resolution is unavailable; try again", headers={"Retry-After": "5"}) from None
        return RepoRef(name=name, did=ident.did, handle=ident.handle, repository=repository, pds=ident.pds_endpoint)

    # --- manifests ----------------------------------------------------------------------------

    async def get_manifest(self, ref: RepoRef, reference: str) -> ManifestEntry:
        digest, tag = await self._digest_for(ref, reference)
        entry = await self._guard(self.model.manifest_in(ref.did, ref.repository, digest, tag))
        if entry is None:
            raise ManifestUnknown(detail={"reference": reference})
        return entry

    async def _digest_for(self, ref: RepoRef, reference: str) -> tuple[str, TagEntry | None]:
        if ":" in reference:
            try:
                return str(Digest.parse(reference)), None
            except InvalidDigest:
                raise DigestInvalid("invalid digest", detail={"reference": reference[:200]}) from None
        if not is_oci_tag(reference):
            # No manifest can have this name: it is unknown (the conformance suite asks exactly that).
            raise ManifestUnknown("no such tag: not a valid tag name", detail={"reference": reference[:200]})
        tag = await self._guard(self.model.tag(ref.did, ref.repository, reference))
        if tag is None:
            raise ManifestUnknown(detail={"tag": reference})
        return tag.digest, tag

    async def put_manifest(
        self,
        ref: RepoRef,
        user_did: str,
        reference: str,
        raw: bytes,
        content_type: str | None,
        tags: Sequence[str] = (),
    ) -> PutResult:
        """Push a manifest by digest or tag; `tags` (the `tag` query parameters) are pointed at
        it too. Every tag is checked before anything is written (`push_target`)."""
        if len(raw) > MAX_MANIFEST_BYTES:
            raise TooLarge(f"manifest larger than {MAX_MANIFEST_BYTES} bytes")
        wanted, all_tags = push_target(reference, tags)
        try:
            # Pushed by digest, the manifest is named by that digest's algorithm (sha512 too).
            manifest = parse_manifest(raw, content_type, wanted.algorithm if wanted is not None else "sha256")
        except InvalidManifest as exc:
            raise ManifestInvalid(str(exc)) from None
        if wanted is not None and manifest.digest != str(wanted):
            raise DigestInvalid("manifest digest does not match the reference", detail={"digest": manifest.digest})

        hold_did, client = await asyncio.gather(self.push_hold(user_did), self._pds(user_did))
        # Retention runs after a tagged push by the owner; its rules are read meanwhile.
        rules = (
            asyncio.ensure_future(self._retention_rules(client, ref))
            if all_tags and user_did == ref.did
            else None
        )
        try:
            result = await self._put_manifest(_Push(ref, user_did, client, raw, manifest, hold_did), all_tags)
        except BaseException:
            if rules is not None:
                rules.cancel()
                await asyncio.gather(rules, return_exceptions=True)
            raise
        if rules is not None:
            await self._apply_retention(ref, client, rules)
        if self.events is not None and all_tags:
            # A push by digest only (an index's children) is part of a tagged push: no event of its own.
            await self.events.emit(
                "push", ref.did, ref.handle, ref.repository, actor_did=user_did,
                actor_handle=ref.handle if user_did == ref.did else None, tag=all_tags[0], digest=result.digest,
                media_type=manifest.media_type, tags=list(result.tags),
            )
        return result

    async def _retention_rules(self, client: XrpcClient, ref: RepoRef) -> RepoPolicy | None:
        """The repository's rules, or None where it has none to our knowledge and they were
        looked at recently (appview/policy/schedule.py: a re-tag reads nothing at the PDS)."""
        schedule = self.retention_schedule
        if schedule is not None and not await schedule.may_have_retention(ref.did, ref.repository):
            return None
        return await read_policy(client, ref.did, ref.repository)

    async def _apply_retention(
        self, ref: RepoRef, client: XrpcClient, rules: Awaitable[RepoPolicy | None]
    ) -> None:
        """The repository's retention rules after a push (appview/policy/retention.py). The push
        has succeeded: a failure here is logged, and the next push or run tries again."""
        try:
            policy = await rules
            if policy is None or not policy.has_retention:
                return
            if self.retention_schedule is not None:
                await self.retention_schedule.remember(ref.did, ref.repository)
            await self.apply_retention(ref, client, policy)
        except (RegistryError, NetworkError, XrpcError) as exc:
            log.info("retention in %s after a push failed: %s", ref.name, exc)

    async def apply_retention(self, ref: RepoRef, client: XrpcClient, policy: RepoPolicy) -> retention.RetentionPlan:
        """Remove what `policy`'s retention says from the repository, with the owner's `client`."""
        return await retention.apply(
            self.model, ref.did, ref.repository, policy,
            delete_tag=lambda t: self._delete(client, ref.did, TAG_COLLECTION, t.rkey),
            delete_manifest=lambda digest: self._delete_manifest_records(client, ref, digest),
        )

    async def _put_manifest(self, push: _Push, all_tags: Sequence[str]) -> PutResult:
        ref, client, raw, manifest, hold_did = push.ref, push.client, push.raw, push.manifest, push.hold_did
        # What the model knows of the manifest and of every tag, in one round of reads.
        digest = manifest.digest
        known, seen, guess = await asyncio.gather(
            self.model.manifest_rkeys(ref.did, ref.repository, digest),
            asyncio.gather(*(self.model.peek(ref.did, ref.repository, digest, t) for t in all_tags)),
            self.model.manifest_slots(ref.did, [manifest_rkey(digest), repo_manifest_rkey(ref.repository, digest)]),
        )
        if known and all_tags:
            kept = _kept_record(seen[0][0], known, ref, raw, manifest, hold_did)
            if kept is not None:
                known_tags = {t: found[1] for t, found in zip(all_tags, seen, strict=True)}
                return await self._retag(push, known_tags, kept)
        # Independent round trips at once: the references are checked, the tags' current
        # versions are read (for the compare-and-swap and the immutable-tag check), the
        # manifest's bytes go to the PDS (unreferenced, they stay a temporary blob the PDS
        # discards) unless the repository already has it, and the hold's token for the quota
        # check is minted. The records that may already hold this manifest are read too, unless
        # the read model has listed the account's manifests and shows none in this repository
        # (`fresh`): a new manifest under new tags is then created in one commit, create-only,
        # and a guess the PDS contradicts is read after all.
        self.holds.mint_ahead(push.user_did, hold_did, NSID_NOTIFY)
        fresh = guess is not None and not known and all(g is None or g[0] != ref.repository for g in guess.values())
        blob_task = None if known else asyncio.ensure_future(client.upload_blob(raw, manifest.media_type))
        slots_task: asyncio.Future[dict[str, tuple[str, dict[str, Any]] | None]]
        if fresh and guess is not None:
            slots_task = _resolved(
                {rk: None if g is None else ("", {"repository": g[0], "digest": g[1]}) for rk, g in guess.items()}
            )
        else:
            slots_task = asyncio.ensure_future(self._read_slots(client, ref, digest, known))
        # In a fresh push a tag the model does not know is not read either: the create-only
        # commit finds it if it exists after all, and the tags are then read (as in `_retag`).
        # So notifyManifest waits on no PDS read and runs beside the manifest's upload.
        unknown = {t for t, found in zip(all_tags, seen, strict=True) if found[1] is None} if fresh else set()
        tag_reads = self._read_tags(client, ref, all_tags, absent=unknown)
        try:
            return await self._write_manifest(push, slots_task, blob_task, tag_reads, fresh=fresh)
        finally:
            await cancel_and_wait(*(t for t in (slots_task, blob_task, *tag_reads.values()) if t is not None))

    def _read_tags(
        self, client: XrpcClient, ref: RepoRef, tags: Sequence[str], absent: Collection[str] = ()
    ) -> dict[str, asyncio.Future[tuple[str | None, dict[str, Any] | None]]]:
        """Start reading the tags' records at the PDS, a few at once; those in `absent` are
        taken as missing without a read (for create-only writes, which find them if not)."""
        reads = asyncio.Semaphore(TAG_WRITES_AT_ONCE)
        return {
            t: (
                _resolved((None, None))
                if t in absent
                else asyncio.ensure_future(
                    self._bounded(reads, self._read_tag(client, ref.did, tag_rkey(ref.repository, t)))
                )
            )
            for t in tags
        }

    @staticmethod
    async def _bounded(sem: asyncio.Semaphore, aw: Awaitable[T]) -> T:
        async with sem:
            return await aw

    async def _retag(self, push: _Push, known_tags: dict[str, TagEntry | None], rkey: str) -> PutResult:
        """A push of a manifest the repository already holds: one PDS write per tag.

        The read model says this repository's record at `rkey` holds exactly this manifest, and
        the blobs are on the push hold (the reference check). The tags are written and the push
        answered; the record itself is checked at the PDS right after (`_after_retag`), not
        before nor beside the tag write: a read racing the write on the PDS slowed the write by
        more than the read cost. Should the check find the record gone or changed (deleted
        behind the model's back, which the Jetstream consumer reports within a second), the
        record is written again and the tags re-pointed then. docs/records.md has the rule.
        """
        ref, client, manifest = push.ref, push.client, push.manifest
        await self._check_references(ref, push.user_did, manifest, push.hold_did)
        digest = manifest.digest
        tags = list(known_tags)
        # A tag the model does not know is created with create-only semantics (a tag that does
        # exist after all makes it re-read); one it knows is read for its CAS and createdAt.
        first_reads = self._read_tags(client, ref, tags, absent={t for t, known in known_tags.items() if known is None})
        try:
            await self._check_tag_moves(client, ref, digest, first_reads)
            replaced = await self._write_tags(client, ref, digest, rkey, first_reads)
        finally:
            await cancel_and_wait(*first_reads.values())
        await self._remove_replaced(ref, push.user_did, client, digest, replaced)
        return PutResult(
            digest=digest,
            subject=manifest.subject.digest if manifest.subject else None,
            tags=tuple(tags),
            after=functools.partial(self._after_retag, push, rkey, tags),
        )

    async def _after_retag(self, push: _Push, rkey: str, tags: list[str]) -> None:
        """What a re-tag leaves until after its answer: the manifest record checked at the PDS
        (rewritten, and the tags re-pointed, if it is gone or changed), then notifyManifest."""
        ref, client, raw, manifest, hold_did = push.ref, push.client, push.raw, push.manifest, push.hold_did
        digest = manifest.digest
        try:
            slot = await self._read_slot(client, ref.did, rkey)
            wanted = manifest.to_record(repository=ref.repository, hold_did=hold_did, manifest_blob=None, created_at="")
            if slot is None or not (
                _holds(slot[1], ref.repository, digest) and _same_record(slot[1], fit_record(wanted), len(raw))
            ):
                log.warning("re-tag of %s in %s: record %s was gone or changed; writing it again",
                            digest, ref.name, rkey)
                slots = await self._read_slots(client, ref, digest, [])
                written = await self._put_manifest_record(ref, client, raw, manifest, hold_did, _ready(slots), None)
                if written != rkey:
                    again = {t: self._read_tag(client, ref.did, tag_rkey(ref.repository, t)) for t in tags}
                    await self._write_tags(client, ref, digest, written, again)
                    rkey = written
        except Exception as exc:  # after the answer: nobody to raise to
            # The tags point at the record the model showed; the next push of the image checks again.
            log.warning("re-tag of %s in %s: its manifest record could not be checked: %s", digest, ref.name, exc)
        await self._notify_push(ref, push.user_did, hold_did, manifest, tags[0], rkey)

    def _spawn(self, work: Awaitable[None]) -> None:
        """Run `work` after the answer; kept referenced until done (the loop holds tasks weakly)."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def drain(self, timeout: float = 10.0) -> None:
        """Let work started after an answer finish (on shutdown), for at most `timeout` seconds."""
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout)

    @staticmethod
    async def _read_slot(client: XrpcClient, did: str, rkey: str) -> tuple[str, dict[str, Any]] | None:
        """(cid, value) of the manifest record at `rkey`, None when there is none."""
        try:
            out = await client.get_record(did, MANIFEST_COLLECTION, rkey)
        except RecordNotFound:
            return None
        value = out.get("value")
        return (str(out.get("cid") or ""), value) if isinstance(value, dict) else None

    @classmethod
    async def _read_slots(
        cls, client: XrpcClient, ref: RepoRef, digest: str, known: list[str]
    ) -> dict[str, tuple[str, dict[str, Any]] | None]:
        """The records at every rkey that may hold `digest` in this repository: rkey ->
        (cid, value), or None where there is no record (docs/records.md)."""
        rkeys = list(dict.fromkeys([manifest_rkey(digest), repo_manifest_rkey(ref.repository, digest), *known]))
        found = await asyncio.gather(*(cls._read_slot(client, ref.did, rk) for rk in rkeys))
        return dict(zip(rkeys, found, strict=True))

    async def _write_manifest(
        self,
        push: _Push,
        slots_task: Awaitable[dict[str, tuple[str, dict[str, Any]] | None]],
        blob_task: Awaitable[Any] | None,
        tag_reads: Mapping[str, Awaitable[tuple[str | None, dict[str, Any] | None]]],
        *,
        fresh: bool = False,
    ) -> PutResult:
        ref, user_did, client, manifest, hold_did = push.ref, push.user_did, push.client, push.manifest, push.hold_did
        # A hold of ours (it takes direct uploads) proves every blob the manifest names at
        # notifyManifest, before anything is written: asking it blob by blob first only repeats that.
        await self._check_references(
            ref, user_did, manifest, hold_did, blobs=not await self.holds.takes_direct_uploads(hold_did)
        )
        with _pds_errors():
            slots = await slots_task
        planned = _planned_rkey(slots, ref.repository, manifest.digest)
        # The hold checks the quota and records the layers before anything is written to the
        # PDS: a manifest over quota is refused here, with nothing written (docs/hold.md).
        tag = next(iter(tag_reads), None)  # the hold's body names one tag (ATCR's field)
        await self._check_tag_moves(client, ref, manifest.digest, tag_reads)  # immutable tags: nothing written yet
        await self._admit_manifest(ref, user_did, hold_did, manifest, tag, planned)
        if fresh and slots.get(planned) is None and all([(await r)[0] is None for r in tag_reads.values()]):
            with _pds_errors():
                created = await self._create_fresh(push, planned, slots, blob_task, list(tag_reads))
            if created:
                return PutResult(
                    digest=manifest.digest,
                    subject=manifest.subject.digest if manifest.subject else None,
                    tags=tuple(tag_reads),
                )
            # The read model's guess was wrong (a record or tag another client wrote): read them.
            with _pds_errors():
                slots = await self._read_slots(client, ref, manifest.digest, [])
            again = self._read_tags(client, ref, list(tag_reads))
            try:
                await self._check_tag_moves(client, ref, manifest.digest, again)
                return await self._write_records(push, slots, blob_task, again, planned)
            finally:
                await cancel_and_wait(*again.values())
        return await self._write_records(push, slots, blob_task, tag_reads, planned)

    async def _write_records(
        self,
        push: _Push,
        slots: dict[str, tuple[str, dict[str, Any]] | None],
        blob_task: Awaitable[Any] | None,
        tag_reads: Mapping[str, Awaitable[tuple[str | None, dict[str, Any] | None]]],
        planned: str,
    ) -> PutResult:
        """The manifest record (found or written), then every tag by compare-and-swap."""
        ref, user_did, client, manifest, hold_did = push.ref, push.user_did, push.client, push.manifest, push.hold_did
        tag = next(iter(tag_reads), None)
        with _pds_errors():
            rkey = await self._put_manifest_record(ref, client, push.raw, manifest, hold_did, _ready(slots), blob_task)
        if rkey != planned:  # another push took the planned key meanwhile: the layers follow the record
            self._spawn(self._notify_push(ref, user_did, hold_did, manifest, tag, rkey))
        replaced = await self._write_tags(client, ref, manifest.digest, rkey, tag_reads) if tag_reads else []
        await self._remove_replaced(ref, user_did, client, manifest.digest, replaced)
        return PutResult(
            digest=manifest.digest,
            subject=manifest.subject.digest if manifest.subject else None,
            tags=tuple(tag_reads),
        )

    async def _create_fresh(
        self,
        push: _Push,
        rkey: str,
        slots: dict[str, tuple[str, dict[str, Any]] | None],
        blob_task: Awaitable[Any] | None,
        new_tags: Sequence[str],
    ) -> bool:
        """A new manifest record and its new tags in one commit, every one create-only; False
        when the PDS refuses (some key was taken after all), with nothing written."""
        ref, client, raw, manifest, hold_did = push.ref, push.client, push.raw, push.manifest, push.hold_did
        blob = await self._manifest_blob(client, raw, manifest, slots, blob_task)
        stamp = now_iso()
        wanted = manifest.to_record(repository=ref.repository, hold_did=hold_did, manifest_blob=None, created_at=stamp)
        record = fit_record({**wanted, "manifestBlob": blob})
        uri = f"at://{ref.did}/{MANIFEST_COLLECTION}/{rkey}"
        tag_records = {
            t: {"repository": ref.repository, "tag": t, "manifest": uri, "manifestDigest": manifest.digest,
                "createdAt": stamp, "updatedAt": stamp}
            for t in new_tags
        }
        creates = [(MANIFEST_COLLECTION, rkey, record)]
        creates += [(TAG_COLLECTION, tag_rkey(ref.repository, t), rec) for t, rec in tag_records.items()]
        try:
            out = await client.create_records(ref.did, creates)
        except XrpcError as exc:
            log.info("push of %s in %s: one commit refused (%s); reading the records", manifest.digest, ref.name, exc)
            return False
        results = out.get("results") or []
        rev = _rev(out)
        cids = [r.get("cid") if isinstance(r, dict) else None for r in results] + [None] * len(creates)
        await self.model.wrote_record(
            ref.did, MANIFEST_COLLECTION, rkey, {"$type": MANIFEST_COLLECTION, **record}, cid=cids[0],
            raw_manifest=raw, rev=rev,
        )
        for i, (t, rec) in enumerate(tag_records.items(), start=1):
            await self.model.wrote_record(
                ref.did, TAG_COLLECTION, tag_rkey(ref.repository, t), {"$type": TAG_COLLECTION, **rec}, cid=cids[i],
                rev=rev,
            )
            if self.events is not None:
                await self.events.emit("tag", ref.did, ref.handle, ref.repository, tag=t, digest=manifest.digest,
                                       previousDigest=None)
        return True

    async def _write_tags(
        self,
        client: XrpcClient,
        ref: RepoRef,
        digest: str,
        rkey: str,
        first_reads: Mapping[str, Awaitable[tuple[str | None, dict[str, Any] | None]]],
    ) -> list[str]:
        """Point every tag at the manifest record (`_write_tag` each, a few at once); the
        digests they pointed at before, once each. Every tag is tried; the first failure is
        raised after all of them are done."""
        sem = asyncio.Semaphore(TAG_WRITES_AT_ONCE)

        async def one(tag: str, first_read: Awaitable[tuple[str | None, dict[str, Any] | None]]) -> str | None:
            async with sem:
                return await self._write_tag(client, ref, tag, digest, rkey, first_read)

        previous = await _first_error([one(t, read) for t, read in first_reads.items()])
        return [p for p in dict.fromkeys(previous) if p]

    async def _remove_replaced(
        self, ref: RepoRef, user_did: str, client: XrpcClient, digest: str, replaced: list[str]
    ) -> None:
        """`autoRemoveUntagged` for each manifest the push's tags moved away from."""
        for previous in replaced:
            if previous != digest:
                await self._auto_remove_untagged(ref, user_did, client, previous)

    async def _put_manifest_record(
        self,
        ref: RepoRef,
        client: XrpcClient,
        raw: bytes,
        manifest: Manifest,
        hold_did: str,
        slots_task: Awaitable[dict[str, tuple[str, dict[str, Any]] | None]],
        blob_task: Awaitable[Any] | None,
    ) -> str:
        """Write (or find already written) the manifest record of (repository, digest); its rkey.

        The rkey is the digest hex (ATCR's) unless that record holds the digest for another
        repository of the account; then it is `repo_manifest_rkey`. A record already holding
        exactly this manifest is kept as it is (a re-tag writes only the tag). The hex rkey is
        claimed with create-only semantics, so two pushes of one digest into two repositories
        at once cannot both take it. docs/records.md has the rule.
        """
        digest = manifest.digest
        hex_rkey, own_rkey = manifest_rkey(digest), repo_manifest_rkey(ref.repository, digest)
        slots = await slots_task
        for _attempt in range(3):
            held = [(rk, slot) for rk, slot in slots.items() if slot is not None]
            mine = next(((rk, slot) for rk, slot in held if _holds(slot[1], ref.repository, digest)), None)
            wanted_base = manifest.to_record(
                repository=ref.repository, hold_did=hold_did, manifest_blob=None, created_at=now_iso()
            )
            if mine is not None:
                rk, (cid, value) = mine
                if _same_record(value, fit_record(wanted_base), len(raw)):
                    await self.model.wrote_record(ref.did, MANIFEST_COLLECTION, rk, value, cid=cid, raw_manifest=raw)
                    return rk
            blob = await self._manifest_blob(client, raw, manifest, slots, blob_task)
            record = fit_record({**wanted_base, "manifestBlob": blob})
            try:
                if mine is not None:
                    rkey, swap = mine[0], mine[1][0] or None
                    out = await client.put_record(ref.did, MANIFEST_COLLECTION, rkey, record, swap_record=swap)
                elif slots.get(hex_rkey) is None:
                    rkey = hex_rkey
                    out = await client.put_record(ref.did, MANIFEST_COLLECTION, rkey, record, create_only=True)
                else:
                    rkey = own_rkey
                    out = await client.put_record(ref.did, MANIFEST_COLLECTION, rkey, record)
            except InvalidSwap:
                # Another push of this digest wrote first: read again and decide again.
                slots = await self._read_slots(client, ref, digest, [])
                continue
            await self.model.wrote_record(
                ref.did, MANIFEST_COLLECTION, rkey, {"$type": MANIFEST_COLLECTION, **record},
                cid=out.get("cid"), raw_manifest=raw, rev=_rev(out),
            )
            return rkey
        raise Unavailable("this manifest is being pushed concurrently; retry", headers={"Retry-After": "1"})

    @staticmethod
    async def _manifest_blob(
        client: XrpcClient,
        raw: bytes,
        manifest: Manifest,
        slots: dict[str, tuple[str, dict[str, Any]] | None],
        blob_task: Awaitable[Any] | None,
    ) -> Any:
        """The manifest bytes' blob ref: the upload started with the push, else the ref of a
        record of this account that already holds these bytes, else a fresh upload."""
        if blob_task is not None:
            return await blob_task
        for slot in slots.values():
            if slot is not None and slot[1].get("digest") == manifest.digest:
                blob = slot[1].get("manifestBlob")
                size = blob.get("size") if isinstance(blob, dict) else None
                if size == len(raw):
                    return blob
        return await client.upload_blob(raw, manifest.media_type)

    @staticmethod
    async def _read_tag(client: XrpcClient, did: str, tag_key: str) -> tuple[str | None, dict[str, Any] | None]:
        """The tag record's current CID and value, (None, None) when there is none."""
        try:
            current = await client.get_record(did, TAG_COLLECTION, tag_key)
        except RecordNotFound:
            return None, None
        value = current.get("value")
        return current.get("cid"), value if isinstance(value, dict) else {}

    async def _check_tag_moves(
        self,
        client: XrpcClient,
        ref: RepoRef,
        digest: str,
        reads: Mapping[str, Awaitable[tuple[str | None, dict[str, Any] | None]]],
    ) -> None:
        """DENIED when the push would move a tag an `immutableTags` rule protects
        (appview/policy/). The policy record is read only when some tag would move."""
        moving: list[tuple[str, str]] = []
        with _pds_errors():
            for tag, read in reads.items():
                _, current = await read  # futures: `_write_tag` awaits the same result again
                previous = _tag_target(current)
                if previous is not None and previous != digest:
                    moving.append((tag, previous))
        if moving:
            policy = await read_policy(client, ref.did, ref.repository)
            for tag, previous in moving:
                check_move(policy, ref.name, tag, previous, digest)

    async def _write_tag(
        self,
        client: XrpcClient,
        ref: RepoRef,
        tag: str,
        digest: str,
        rkey: str,
        first_read: Awaitable[tuple[str | None, dict[str, Any] | None]],
    ) -> str | None:
        """Point the tag at the manifest with compare-and-swap, retried on conflict.

        Returns the digest the tag pointed at before (None when it is new). A tag already
        pointing at this record is left as it is.
        """
        tag_key = tag_rkey(ref.repository, tag)
        uri = f"at://{ref.did}/{MANIFEST_COLLECTION}/{rkey}"
        for attempt in range(TAG_CAS_ATTEMPTS):
            read = first_read if attempt == 0 else self._read_tag(client, ref.did, tag_key)
            swap, current = await read
            previous = _tag_target(current)
            if attempt > 0 and previous is not None and previous != digest:
                # The tag turned out to exist (the read model did not know it, or another push
                # moved it meanwhile): `immutableTags` is checked for this move too.
                check_move(await read_policy(client, ref.did, ref.repository), ref.name, tag, previous, digest)
            if current is not None and swap and current.get("manifest") == uri and previous == digest:
                await self.model.wrote_record(
                    ref.did, TAG_COLLECTION, tag_key, {"$type": TAG_COLLECTION, **current}, cid=swap
                )
                return previous
            created = (current or {}).get("createdAt")
            record = {
                "repository": ref.repository,
                "tag": tag,
                "manifest": uri,
                "manifestDigest": digest,
                "createdAt": str(created) if created else now_iso(),
                "updatedAt": now_iso(),
            }
            try:
                out = await client.put_record(
                    ref.did, TAG_COLLECTION, tag_key, record, swap_record=swap, create_only=swap is None
                )
            except InvalidSwap:
                await asyncio.sleep(min(0.05 * 2**attempt, 1.0) * (0.5 + _jitter.random()))
                continue
            except (XrpcError, NetworkError) as exc:
                raise Unavailable(f"tag write failed: {exc}", headers={"Retry-After": "5"}) from None
            await self.model.wrote_record(
                ref.did, TAG_COLLECTION, tag_key, {"$type": TAG_COLLECTION, **record}, cid=out.get("cid"),
                rev=_rev(out),
            )
            if self.events is not None and previous != digest:
                await self.events.emit("tag", ref.did, ref.handle, ref.repository, tag=tag, digest=digest,
                                       previousDigest=previous)
            return previous
        raise Unavailable("tag is being updated concurrently; retry", headers={"Retry-After": "1"})

    async def _auto_remove_untagged(self, ref: RepoRef, user_did: str, client: XrpcClient, digest: str) -> None:
        """``autoRemoveUntagged`` (the owner's profile): a manifest a push left without tags in
        this repository goes from this repository only. Kept when it is another manifest's
        child or subject here; a failure only leaves it in place."""
        try:
            profile = await self.model.profile(ref.did)
            if not (profile or {}).get("autoRemoveUntagged"):
                return
            tags = await self.model.tags(ref.did, ref.repository)
            if digest in tags.values():
                return
            for entry in await self.model.manifests(ref.did, ref.repository):
                children = {c.get("digest") for c in entry.record.get("manifests") or [] if isinstance(c, dict)}
                if digest in children or entry.subject_digest == digest:
                    return
            await self._delete_manifest_records(client, ref, digest)
        except (RegistryError, NetworkError, XrpcError) as exc:
            log.info("autoRemoveUntagged of %s in %s kept it: %s", digest, ref.name, exc)

    async def _check_references(
        self, ref: RepoRef, user_did: str, manifest: Manifest, hold_did: str, *, blobs: bool = True
    ) -> None:
        """MANIFEST_BLOB_UNKNOWN unless the blobs (config, layers) are on the push hold and the
        child manifests (an index's) are in the repository. With sparse indexes on, absent
        children are allowed: a pull of one answers MANIFEST_UNKNOWN until it is pushed.
        `blobs=False` leaves the blobs to the hold's own check at notifyManifest."""
        missing: list[str] = []
        absent: list[str] = []
        blob_refs = manifest.blob_references() if blobs else []

        async def check_blob(digest: str) -> None:
            if await self.blob_size(ref, digest, user_did=user_did, prefer=hold_did, pushing=True) is None:
                missing.append(digest)

        async def check_child(digest: str) -> None:
            if await self._guard(self.model.manifest(ref.did, ref.repository, digest)) is None:
                absent.append(digest)

        sem = asyncio.Semaphore(16)

        async def bounded(coro: Any) -> None:
            async with sem:
                await coro

        await asyncio.gather(
            *(bounded(check_blob(d.digest)) for d in blob_refs),
            *(bounded(check_child(d.digest)) for d in manifest.manifests),
        )
        refused = refused_references(missing, absent, sparse_indexes=self.sparse_indexes)
        if refused:
            raise ManifestBlobUnknown(detail={"digests": refused[:50]})
        if absent:
            log.info("sparse index %s in %s: %d child manifest(s) not in the repository", manifest.digest,
                     ref.name, len(set(absent)))

    async def _admit_manifest(
        self, ref: RepoRef, user_did: str, hold_did: str, manifest: Manifest, tag: str | None, rkey: str
    ) -> None:
        """notifyManifest(push) before the record is written: the hold's quota decides."""
        try:
            await self.holds.notify_manifest(hold_did, user_did, self._push_body(ref, manifest, tag, rkey))
        except HoldUnavailable as exc:
            message = _unavailable_message(
                exc, unreachable=f"your hold {_hold_name(hold_did)} did not answer the push; nothing was written",
                nothing="written",
            )
            raise Unavailable(message, headers={"Retry-After": "10"}) from None
        except HoldError as exc:
            if "quota" in exc.error.lower():
                raise Denied(f"quota exceeded on {_hold_name(hold_did)}: {exc.message or exc.error}") from None
            if exc.status in (401, 403):
                raise Denied(await self._refusal(hold_did)) from None
            if exc.error == "LayerNotStored":
                # A blob checked a moment ago is gone from the hold's storage: nothing is written,
                # and what said it was there is forgotten, so the client's retry uploads it.
                await self._forget_blobs(ref, user_did, manifest)
                raise ManifestBlobUnknown(exc.message or "the manifest names blobs your hold does not store") from None
            # Anything else (an older hold refusing a field, say) must not lose the push.
            log.warning("notifyManifest(push) to %s refused (%s); writing the manifest anyway", hold_did, exc)
        except NetworkError as exc:
            raise Unavailable(f"your hold did not answer the push ({exc}); nothing was written") from None

    async def _forget_blobs(self, ref: RepoRef, user_did: str, manifest: Manifest) -> None:
        digests = [d.digest for d in manifest.blob_references()]
        for digest in digests:
            self._locations.drop((ref.did, ref.repository, digest, user_did))
        await self.model.forget_blob_hints(ref.did, digests)

    def _push_body(self, ref: RepoRef, manifest: Manifest, tag: str | None, rkey: str) -> dict[str, Any]:
        body: dict[str, Any] = {
            "repository": ref.repository,
            "userDid": ref.did,
            "manifestDigest": manifest.digest,
            # Not in ATCR's body (its holds ignore it): the record's own AT-URI, since the
            # digest alone no longer names it (docs/records.md).
            "manifestUri": f"at://{ref.did}/{MANIFEST_COLLECTION}/{rkey}",
            "operation": "push",
            "manifest": {
                "mediaType": manifest.media_type,
                "layers": [
                    {"digest": d.digest, "size": d.size, "mediaType": d.media_type} for d in manifest.layers
                ],
                # A child without a platform (an index in an index) sends none: the lexicon's
                # platform needs os and architecture, and the hold refuses an empty one.
                "manifests": [
                    {"digest": d.digest, "size": d.size, "mediaType": d.media_type}
                    | ({"platform": dict(d.platform)} if d.platform else {})
                    for d in manifest.manifests
                ],
            },
        }
        if manifest.config is not None:
            body["manifest"]["config"] = {"digest": manifest.config.digest, "size": manifest.config.size}
        if tag:
            body["tag"] = tag
        return body

    async def _notify_push(
        self, ref: RepoRef, user_did: str, hold_did: str, manifest: Manifest, tag: str | None, rkey: str
    ) -> None:
        """notifyManifest(push) after the fact (a re-tag: nothing new to count), in the background."""
        try:
            await self.holds.notify_manifest(hold_did, user_did, self._push_body(ref, manifest, tag, rkey))
        except (HoldError, NetworkError) as exc:
            log.info("notifyManifest(push) to %s failed: %s", hold_did, exc)

    def notify_pull(self, ref: RepoRef, entry: ManifestEntry, user_did: str | None) -> None:
        """Count a pull at the manifest's hold without delaying the response."""
        if entry.hold_did and self.pulls is not None:
            self.pulls.count(entry.hold_did, ref.did, ref.repository, entry.digest)

    async def delete_manifest(self, ref: RepoRef, user_did: str, reference: str) -> None:
        client = await self._pds(user_did)
        if ":" not in reference:
            if not is_oci_tag(reference):
                raise ManifestInvalid("invalid tag")
            tag = await self._guard(self.model.tag(ref.did, ref.repository, reference))
            if tag is None:
                raise ManifestUnknown(detail={"tag": reference})
            check_delete(await read_policy(client, ref.did, ref.repository), ref.name, [reference])
            await self._delete(client, ref.did, TAG_COLLECTION, tag.rkey)
            if self.events is not None:
                await self.events.emit("tag:deleted", ref.did, ref.handle, ref.repository, actor_did=user_did,
                                       tag=reference, digest=tag.digest)
            return
        digest, _ = await self._digest_for(ref, reference)
        entry = await self._guard(self.model.manifest_in(ref.did, ref.repository, digest))
        if entry is None:
            raise ManifestUnknown(detail={"digest": digest})
        tags = await self._guard(self.model.tag_entries(ref.did, ref.repository))
        pointing = [name for name, t in tags.items() if t.digest == digest]
        if pointing:
            check_delete(await read_policy(client, ref.did, ref.repository), ref.name, pointing)
        for t in tags.values():
            if t.digest == digest:
                await self._delete(client, ref.did, TAG_COLLECTION, t.rkey)
        await self._delete_manifest_records(client, ref, digest)
        if self.events is not None:
            await self.events.emit("manifest:deleted", ref.did, ref.handle, ref.repository, actor_did=user_did,
                                   digest=digest, media_type=entry.media_type, tags=sorted(pointing))

    async def _delete_manifest_records(self, client: XrpcClient, ref: RepoRef, digest: str) -> None:
        """Delete every record holding `digest` in this repository, and only those: a record
        of another repository (even at the hex rkey) is left alone, checked by its CID."""
        known = await self._guard(self.model.manifest_rkeys(ref.did, ref.repository, digest))
        try:
            slots = await self._read_slots(client, ref, digest, known)
        except (XrpcError, NetworkError) as exc:
            raise Unavailable(f"delete failed at your PDS: {exc}") from None
        for rkey, slot in slots.items():
            if slot is None:
                if rkey in known:  # gone already: the model learns it
                    await self.model.deleted_record(ref.did, MANIFEST_COLLECTION, rkey)
                continue
            if not _holds(slot[1], ref.repository, digest):
                continue
            try:
                out = await client.delete_record(ref.did, MANIFEST_COLLECTION, rkey, swap_record=slot[0] or None)
            except InvalidSwap:
                continue  # rewritten meanwhile (e.g. by a push into another repository): not ours to delete
            except (XrpcError, NetworkError) as exc:
                raise Unavailable(f"delete failed at your PDS: {exc}") from None
            await self.model.deleted_record(ref.did, MANIFEST_COLLECTION, rkey, rev=_rev(out))
            # Its blobs may soon be the GC's to delete: HEADs before an upload ask the hold again.
            await self.model.forget_blob_hints(ref.did, _record_blobs(slot[1]))

    async def _delete(self, client: XrpcClient, did: str, collection: str, rkey: str) -> None:
        try:
            out = await client.delete_record(did, collection, rkey)
        except (XrpcError, NetworkError) as exc:
            raise Unavailable(f"delete failed at your PDS: {exc}") from None
        await self.model.deleted_record(did, collection, rkey, rev=_rev(out))

    # --- discovery ----------------------------------------------------------------------------

    async def tags(self, ref: RepoRef) -> list[str]:
        tags = await self._guard(self.model.tags(ref.did, ref.repository))
        if not tags:
            manifests = await self._guard(self.model.manifests(ref.did, ref.repository))
            # A repository emptied by deletes still exists, with no tags (as in distribution);
            # one that never had content does not.
            if not manifests and not await self._guard(self.model.emptied(ref.did, ref.repository)):
                raise NameUnknown(detail={"name": ref.name})
        return sorted(tags)

    async def referrers(self, ref: RepoRef, digest: str, artifact_type: str | None) -> list[dict[str, Any]]:
        try:
            Digest.parse(digest)
        except InvalidDigest:
            raise DigestInvalid(detail={"digest": digest[:200]}) from None
        out = []
        for entry in await self._guard(self.model.referrers(ref.did, ref.repository, digest)):
            if artifact_type and entry.artifact_type != artifact_type:
                continue
            desc: dict[str, Any] = {"mediaType": entry.media_type, "digest": entry.digest, "size": entry.size}
            if entry.artifact_type:
                desc["artifactType"] = entry.artifact_type
            if entry.annotations:
                desc["annotations"] = dict(entry.annotations)
            out.append(desc)
        out.sort(key=lambda d: d["digest"])
        return out

    async def catalog(self, last: str | None, n: int) -> list[str]:
        return await self._guard(self.model.catalog(last, n))

    # --- blobs --------------------------------------------------------------------------------

    async def push_hold(self, user_did: str) -> str:
        """Where a user's push goes: one answer for the whole push (appview/holds/pushhold.py)."""
        return await self.push_holds.resolve(user_did)

    async def _candidate_holds(self, ref: RepoRef, prefer: str | None, *, only: bool = False) -> list[str]:
        holds: list[str] = []
        if prefer:
            holds.append(prefer)
            if only:
                return holds
        # The repository's other holds are a fallback; if its PDS is unreachable, the preferred
        # and default holds are still worth asking.
        with contextlib.suppress(NetworkError):
            for entry in await self.model.manifests(ref.did, ref.repository):
                if entry.hold_did and entry.hold_did not in holds:
                    holds.append(entry.hold_did)
        if self.default_hold_did not in holds:
            holds.append(self.default_hold_did)
        return holds

    async def blob_size(
        self,
        ref: RepoRef,
        digest: str,
        *,
        user_did: str | None,
        prefer: str | None = None,
        pushing: bool = False,
        fresh: bool = False,
    ) -> int | None:
        """The blob's size, or None. `pushing` (the owner asking before an upload, or a
        manifest's reference check) asks the push hold alone: an answer from another hold
        would let the client skip an upload the manifest's hold then lacks. `fresh` asks the
        hold even when the answer is remembered (the owner's HEAD before an upload)."""
        if pushing and user_did:
            prefer = prefer or await self.push_hold(user_did)
        found = await self.locate_blob(ref, digest, user_did=user_did, prefer=prefer, only=pushing, fresh=fresh)
        return None if found is None else found[1]

    async def locate_blob(
        self,
        ref: RepoRef,
        digest: str,
        *,
        user_did: str | None,
        prefer: str | None = None,
        only: bool = False,
        fresh: bool = False,
    ) -> tuple[str, int] | None:
        try:
            Digest.parse(digest)
        except InvalidDigest:
            raise DigestInvalid(detail={"digest": digest[:200]}) from None
        key = (ref.did, ref.repository, digest, user_did or "")
        # The HEAD a client sends before uploading is not answered from this process's memory
        # of locations (it keeps no promise the blob is still there). It is answered from the
        # account's blob hints when a manifest of the owner names the blob on the push hold:
        # the hold's GC keeps a blob a live manifest names, and one whose manifests are gone
        # for HOLD_GC_GRACE (a day) first. A hint that is wrong all the same is caught by the
        # hold's storage check at notifyManifest before anything is written (LayerNotStored,
        # so MANIFEST_BLOB_UNKNOWN), which drops the hints, and the client's retry uploads it.
        hit = None if fresh else self._locations.get(key)
        if hit is not None and (prefer is None or hit[0] == prefer):
            return hit
        if only and prefer is not None and user_did == ref.did:
            hint = await self.model.blob_hint(ref.did, digest)
            if hint is not None and hint[0] == prefer:
                self._locations.put(key, hint)
                return hint
        found = await self._locate(ref, digest, user_did=user_did, prefer=prefer, only=only)
        if found is not None:
            self._locations.put(key, found)
        return found

    async def _locate(
        self, ref: RepoRef, digest: str, *, user_did: str | None, prefer: str | None, only: bool = False
    ) -> tuple[str, int] | None:
        unavailable = refused = False
        for hold in await self._candidate_holds(ref, prefer, only=only):
            try:
                size = await self.holds.stat_blob(hold, digest, user_did=user_did)
            except HoldUnavailable:
                unavailable = True
                continue
            except HoldError as exc:
                refused = refused or exc.status in (401, 403)
                continue
            if size is not None:
                return hold, size
        if unavailable:
            raise Unavailable("the hold storing this blob is unreachable", headers={"Retry-After": "10"})
        if refused:
            # A private hold that may have the blob said no: say so rather than "unknown".
            if only and prefer:
                raise Denied(await self._refusal(prefer))
            raise Denied("a private hold refused access to this blob; log in as a member of its crew")
        return None

    async def _refusal(self, hold_did: str) -> str:
        """Why a push to `hold_did` is refused, and what the user can do about it."""
        name = _hold_name(hold_did)
        try:
            captain = await self.model.captain(hold_did)
        except AtcrError as exc:
            log.info("captain record of %s unavailable: %s", hold_did, exc)
            captain = None
        if captain is not None and captain.get("allowAllCrew"):
            how = "it lets anyone join: sign in to the web UI and choose it as your hold, then push again"
        elif captain is not None:
            how = "it is closed: ask its captain to add you, or choose another hold in the web UI (your profile)"
        else:
            how = "ask its captain to add you, or choose another hold in the web UI (your profile)"
        return f"the hold {name} ({hold_did}) is private and you are not in its crew; {how}"

    async def blob_redirect(self, ref: RepoRef, digest: str, user_did: str | None) -> tuple[str, int]:
        found = await self.locate_blob(ref, digest, user_did=user_did)
        if found is None:
            raise BlobUnknown(detail={"digest": digest})
        hold, size = found
        cached = self._urls.get((hold, digest, user_did or ""))
        if cached is not None:
            return cached, size
        try:
            url = await self.holds.blob_url(hold, digest, user_did=user_did)
        except HoldUnavailable:
            raise Unavailable("the hold storing this blob is unreachable", headers={"Retry-After": "10"}) from None
        except HoldError as exc:
            if exc.status in (401, 403):
                raise Denied("the hold storing this blob refused access") from None
            raise BlobUnknown(detail={"digest": digest}) from None
        if url is None:
            raise BlobUnknown(detail={"digest": digest})
        self._urls.put((hold, digest, user_did or ""), url)
        return url, size

    # --- uploads ------------------------------------------------------------------------------

    async def start_upload(self, ref: RepoRef, user_did: str) -> UploadSession:
        hold = await self.push_hold(user_did)
        session = await self.uploads.create(ref.did, ref.repository, hold)
        # The hold upload starts with the first part; its token is ready by then, and the
        # manifest PUT that ends the push finds the hold's notifyManifest token minted.
        self.holds.mint_ahead(user_did, hold, NSID_INITIATE)
        self.holds.mint_ahead(user_did, hold, NSID_NOTIFY)
        return session

    async def prepare_direct_upload(self, user_did: str) -> None:
        """A push's HEAD found no blob, so an upload POST follows: mint its token now."""
        hold = await self.push_hold(user_did)
        if await self.holds.takes_direct_uploads(hold):
            self.holds.mint_ahead(user_did, hold, NSID_INITIATE)

    async def start_direct_upload(
        self, ref: RepoRef, user_did: str, blob_url: str, max_size: int
    ) -> tuple[str, str] | None:
        """(upload id, the hold's upload URL) when the push hold takes direct uploads, else None.

        The blob then reaches the hold's storage and quota exactly as a proxied one does; the
        manifest PUT that follows checks it at the same hold (docs/direct-uploads.md).
        """
        hold = await self.push_hold(user_did)
        if not await self.holds.takes_direct_uploads(hold):
            return None
        self.holds.mint_ahead(user_did, hold, NSID_NOTIFY)  # for the manifest PUT that ends the push
        try:
            return await self.holds.initiate_direct_upload(hold, user_did, ref.repository, blob_url, max_size)
        except HoldUnavailable as exc:
            raise Unavailable(_unavailable_message(exc), headers={"Retry-After": "10"}) from None
        except HoldError as exc:
            await self._raise_refusal(exc, hold)
            if exc.status == 429:
                raise TooManyRequests(exc.message or "too many open uploads", headers={"Retry-After": "60"}) from None
            # A hold that advertised direct uploads but refuses this one: the proxied path still works.
            log.warning("hold %s refused a direct upload (%s); proxying it", hold, exc)
            return None

    async def _raise_refusal(self, exc: HoldError, hold_did: str) -> None:
        """The client's error for a hold that refused an upload for who the user is or for its
        quota (a missing session, not crew, over quota, too large); returns for anything else."""
        if exc.error == "SessionMissing":
            raise Unauthorized(exc.message) from None
        if exc.status in (401, 403) and "quota" not in exc.error.lower():
            raise Denied(await self._refusal(hold_did)) from None
        if exc.status in (401, 403, 413):
            raise Denied(f"your hold refused the upload: {exc.message or exc.error}") from None

    async def mount(self, ref: RepoRef, user_did: str, digest: str) -> bool:
        """Cross-repository mount: true when the blob is already on the user's hold."""
        try:
            Digest.parse(digest)
        except InvalidDigest:
            return False
        hold = await self.push_hold(user_did)
        try:
            return await self.holds.stat_blob(hold, digest, user_did=user_did) is not None
        except HoldError:
            return False

    async def upload_status(self, ref: RepoRef, upload_id: str) -> UploadSession:
        return await self.uploads.get(upload_id, ref.did, ref.repository)

    async def append(
        self,
        ref: RepoRef,
        user_did: str,
        upload_id: str,
        body: AsyncIterator[bytes],
        *,
        start: int | None,
        length: int | None,
        max_size: int,
        final: bool = False,
    ) -> UploadSession:
        """Append a chunk. `start` (from Content-Range) must equal the current offset (else 416).

        Bytes go on to the hold as they arrive (appview/oci/parts.py). With `final` (the
        client's closing PUT carries them) the remainder goes as the last part, not to Valkey.
        """
        lock = await self.uploads.lock(upload_id)
        try:
            session = await self.uploads.get(upload_id, ref.did, ref.repository)
            if start is not None and start != session.offset:
                raise RangeInvalid(detail={"offset": session.offset})
            tail = await self.uploads.tail(session)
            begin = session.offset

            async def send(part: OutgoingPart) -> None:
                await self._send_part(session, user_did, part.body(), lambda: part.offset + part.size)

            splitter = PartSplitter(send, tail, start=begin - len(tail))
            received = 0
            try:
                async for chunk in body:
                    received += len(chunk)
                    if length is not None and received > length:
                        raise SizeInvalid("body longer than Content-Length")
                    if begin + received > max_size:
                        raise TooLarge(f"blob exceeds {max_size} bytes")
                    await splitter.feed(chunk)
                if length is not None and received != length:
                    raise SizeInvalid("body shorter than Content-Length")
                rest = await splitter.finish(final=final)
            except BaseException:
                await splitter.abort()
                raise
            session.offset = begin + received
            await self.uploads.save(session, rest)
            return session
        finally:
            await self.uploads.unlock(upload_id, lock)

    async def _send_part(
        self, session: UploadSession, user_did: str, data: bytes | AsyncIterator[bytes], end: Callable[[], int]
    ) -> None:
        """Send one part ending at blob offset `end()`; Valkey then says what the hold acknowledged."""
        try:
            if session.hold_upload_id is None:
                session.hold_upload_id = await self.holds.initiate_upload(session.hold_did, user_did, None, None)
                # Persisted at once: a client that aborts after a failed part must abort this too.
                await self.uploads.save_progress(session)
            number = len(session.parts) + 1
            etag = await self.holds.upload_part(session.hold_did, user_did, session.hold_upload_id, number, data)
        except HoldUnavailable as exc:
            raise Unavailable(_unavailable_message(exc), headers={"Retry-After": "10"}) from None
        except HoldError as exc:
            await self._raise_refusal(exc, session.hold_did)
            raise BlobUploadInvalid(f"hold refused the upload: {exc.error}") from None
        session.parts.append({"partNumber": number, "etag": etag})
        # The buffered tail went into this part (or the ones before it): the durable state is now
        # exactly the parts, so a request that fails from here on resumes at this boundary.
        session.offset = end()
        await self.uploads.save(session, b"")

    async def finish(self, ref: RepoRef, user_did: str, upload_id: str, digest: str) -> str:
        try:
            wanted = Digest.parse(digest)
        except InvalidDigest:
            raise DigestInvalid(detail={"digest": digest[:200]}) from None
        lock = await self.uploads.lock(upload_id)
        try:
            session = await self.uploads.get(upload_id, ref.did, ref.repository)
            tail = await self.uploads.tail(session)
            if tail or not session.parts:
                await self._send_part(session, user_did, tail, lambda: session.offset)
            assert session.hold_upload_id is not None
            try:
                await self.holds.complete_upload(
                    session.hold_did, user_did, session.hold_upload_id, str(wanted), session.parts
                )
            except HoldUnavailable as exc:
                raise Unavailable(_unavailable_message(exc), headers={"Retry-After": "10"}) from None
            except HoldError as exc:
                if exc.error == "SessionMissing":
                    raise Unauthorized(exc.message) from None
                if "digest" in exc.error.lower() or "digest" in exc.message.lower():
                    await self.uploads.delete(upload_id)
                    raise DigestInvalid(detail={"digest": str(wanted)}) from None
                if exc.status == 413 or "quota" in exc.error.lower():
                    raise Denied(exc.message or exc.error) from None
                raise BlobUploadInvalid(f"hold refused to complete the upload: {exc.error}") from None
            await self.uploads.delete(upload_id)
            return str(wanted)
        finally:
            await self.uploads.unlock(upload_id, lock)

    async def cancel(self, ref: RepoRef, user_did: str, upload_id: str) -> None:
        session = await self.uploads.get(upload_id, ref.did, ref.repository)
        if session.hold_upload_id:
            await self.holds.abort_upload(session.hold_did, user_did, session.hold_upload_id)
        await self.uploads.delete(upload_id)

    # --- helpers ------------------------------------------------------------------------------

    async def _pds(self, user_did: str) -> XrpcClient:
        client = await self.sessions.client(user_did)
        if client is None:
            raise Unauthorized("no session with your PDS: run docker login again")
        return client

    @staticmethod
    async def _guard(coro: Awaitable[T]) -> T:
        """Map upstream failures of the read model to 503 with Retry-After."""
        try:
            return await coro
        except RegistryError:
            raise
        except NetworkError:
            raise Unavailable("upstream unavailable; try again", headers={"Retry-After": "5"}) from None


__all__ = ["Denied", "PutResult", "Registry", "RepoRef", "split_name"]
