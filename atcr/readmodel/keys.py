"""The Valkey key layout of the AppView read model (docs/cache.md is the reference).

Every key starts with ``av:``. Keys that belong to one DID carry the DID as a hash tag,
``av:{<did>}:...``, so that all of one user's (or one hold's) state lives in one cluster slot
and the apply scripts can update it atomically with Lua, in a cluster as on a single node.
Cross-user indexes (catalog, recent, popular, search) are updated after the per-DID script and
therefore only eventually consistent with it. Each is split into buckets with their own hash
tag, so that in a cluster no single shard takes every push's index write and every home page's
read (docs/cache.md, "Hot keys").

Record keys written by this AppView are derived here, so that a re-push overwrites instead of
duplicating: ``tag_rkey`` for tags, ``manifest_rkey`` (digest hex, ATCR's convention) and
``repo_manifest_rkey`` (digest hex plus a repository suffix) for manifests, and ``stats_rkey``
(ATCR's hold stats scheme) for hold stats. docs/records.md says which manifest rkey a push
uses and why.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Final

PREFIX: Final = "av:"

# Collections the model keeps.
MANIFEST: Final = "io.atcr.manifest"
TAG: Final = "io.atcr.tag"
PROFILE: Final = "io.atcr.sailor.profile"
STAR: Final = "io.atcr.sailor.star"
REPO_PAGE: Final = "io.atcr.repo.page"
BSKY_PROFILE: Final = "app.bsky.actor.profile"
CAPTAIN: Final = "io.atcr.hold.captain"
CREW: Final = "io.atcr.hold.crew"
STATS: Final = "io.atcr.hold.stats"

USER_COLLECTIONS: Final = (MANIFEST, TAG, PROFILE, STAR, REPO_PAGE, BSKY_PROFILE)
HOLD_COLLECTIONS: Final = (CAPTAIN, CREW, STATS)
COLLECTIONS: Final = frozenset(USER_COLLECTIONS + HOLD_COLLECTIONS)


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=").lower()


def tag_rkey(repository: str, tag: str) -> str:
    """Deterministic rkey of the tag record (repository, tag).

    ``base32(sha256(repository + ":" + tag)[:16])``, lowercase, unpadded: 26 chars of
    ``[a-z2-7]``, valid under every record-key rule. Re-tagging overwrites the same record
    (and its swapRecord CAS protects concurrent pushes). Readers never rely on it: tags
    written by other AppViews may use any rkey, so tags are read by listing the collection.
    """
    return _b32(hashlib.sha256(f"{repository}:{tag}".encode()).digest()[:16])


def stats_rkey(owner_did: str, repository: str) -> str:
    """ATCR's rkey of ``io.atcr.hold.stats``: ``base32(sha256(ownerDid + "/" + repository)[:16])``.

    Lowercase and unpadded like `tag_rkey` (the case ATCR uses is not documented; holds in
    this tree import this function so writer and reader agree).
    """
    return _b32(hashlib.sha256(f"{owner_did}/{repository}".encode()).digest()[:16])


def manifest_rkey(digest: str) -> str:
    """The rkey of a manifest record: the digest's hex without the algorithm.

    ``sha256:<64 hex>`` -> the 64 hex chars (ATCR's convention). ``sha512:<128 hex>`` -> the
    128 hex chars (still a valid rkey; the length tells the algorithm back).
    """
    return digest.split(":", 1)[1] if ":" in digest else digest


REPO_SUFFIX_LEN: Final = 16


def repo_suffix(repository: str) -> str:
    """16 chars of ``[a-z2-7]``: ``base32(sha256(repository)[:10])``, lowercase, unpadded."""
    return _b32(hashlib.sha256(repository.encode()).digest()[:10])


def repo_manifest_rkey(repository: str, digest: str) -> str:
    """The rkey of the manifest record of `digest` in `repository` when the plain hex rkey
    already holds that digest for another repository of the same account.

    ``<hex>-<repo_suffix>``: still a valid record key (max 512 chars of ``[A-Za-z0-9._:~-]``),
    deterministic, so a re-push into the same repository overwrites, and it starts with the
    digest, so the digest is readable from the key (`digest_from_rkey`) and from an AT-URI.
    """
    return f"{manifest_rkey(digest)}-{repo_suffix(repository)}"


_HEX = frozenset("0123456789abcdef")
_SUFFIX = frozenset("abcdefghijklmnopqrstuvwxyz234567")


def digest_from_rkey(rkey: str) -> str | None:
    """The digest a manifest rkey names: the hex rkey (`manifest_rkey`) or the hex part of
    `repo_manifest_rkey`; None for other rkeys (e.g. TIDs written by other AppViews)."""
    hexpart, sep, suffix = rkey.partition("-")
    if sep and (len(suffix) != REPO_SUFFIX_LEN or not set(suffix) <= _SUFFIX):
        return None
    if len(hexpart) not in (64, 128) or not set(hexpart) <= _HEX:
        return None
    return ("sha256:" if len(hexpart) == 64 else "sha512:") + hexpart


# --- identity (global) ------------------------------------------------------------------------


def identity(ident: str) -> str:
    """Resolved identity JSON, under the DID and under the (lowercased) verified handle."""
    return f"{PREFIX}id:{ident}"


def negative_identity(ident: str) -> str:
    return f"{PREFIX}neg:id:{ident}"


TRACKED_PREFIXES: Final = (f"{PREFIX}{{", f"{PREFIX}id:", f"{PREFIX}neg:id:")
"""Key prefixes whose changes the AppView's near cache must hear of (appview/cache/near.py)."""


def scope_of_key(key: str) -> str | None:
    """The near-cache scope a changed key belongs to: its DID, or ``id:<identifier>``."""
    if key.startswith(f"{PREFIX}{{"):
        did, sep, _ = key[len(PREFIX) + 1 :].partition("}")
        return did if sep else None
    for prefix in (f"{PREFIX}id:", f"{PREFIX}neg:id:"):
        if key.startswith(prefix):
            return "id:" + key[len(prefix) :]
    return None


# --- per DID (hash-tagged) --------------------------------------------------------------------


def did_prefix(did: str) -> str:
    return f"{PREFIX}{{{did}}}:"


def records(did: str, collection: str) -> str:
    """rkey -> ordering entry ``{r: rev, c: cid, t: ms, p: pointer, d: tombstone}``."""
    return f"{did_prefix(did)}r:{collection}"


def sync(did: str) -> str:
    """``<collection>|at`` (ms of the last complete load) and ``<collection>|floor`` (its repo rev)."""
    return f"{did_prefix(did)}sync"


def manifests(did: str, repository: str) -> str:
    return f"{did_prefix(did)}m:{repository}"


def manifest_rkeys(did: str, repository: str, digest: str) -> str:
    """Set of the rkeys of every live record holding `digest` in `repository` (usually one;
    records of other AppViews may add more). The ``m:`` entry goes only with the last of them."""
    return f"{did_prefix(did)}mo:{repository}@{digest}"


def manifest_bytes(did: str, digest: str) -> str:
    return f"{did_prefix(did)}mb:{digest}"


def blob_hints(did: str) -> str:
    """Blob digest -> ``<hold DID>|<size>|<ms>`` for the blobs the account's manifests name (when applied)."""
    return f"{did_prefix(did)}bl"


def referrers(did: str, repository: str, subject: str) -> str:
    return f"{did_prefix(did)}ref:{repository}@{subject}"


def emptied(did: str) -> str:
    """Repositories whose last manifest and tag were deleted: they list no tags rather than not existing."""
    return f"{did_prefix(did)}emptied"


def tags(did: str, repository: str) -> str:
    return f"{did_prefix(did)}t:{repository}"


def repositories(did: str) -> str:
    return f"{did_prefix(did)}repos"


def single(did: str, name: str) -> str:
    """One-record collections: ``profile``, ``bsky`` (Bluesky profile), ``captain``."""
    return f"{did_prefix(did)}{name}"


def repo_page(did: str, repository: str) -> str:
    return f"{did_prefix(did)}page:{repository}"


def crew(did: str) -> str:
    return f"{did_prefix(did)}crew"


def starred(did: str) -> str:
    """Stars a user gave: star rkey -> ``<subject did>/<repository>``."""
    return f"{did_prefix(did)}starred"


def stars(did: str, repository: str) -> str:
    """DIDs that starred one repository (in the repository owner's slot)."""
    return f"{did_prefix(did)}stars:{repository}"


def stats(did: str, repository: str) -> str:
    """Per-hold counters of one repository: hold DID -> JSON."""
    return f"{did_prefix(did)}stats:{repository}"


# --- global indexes ---------------------------------------------------------------------------

# Zsets of ``<did>/<repo>``, each split into GLOBAL_BUCKETS keys ``<family>:{<n>}`` (n =
# CRC32 of the member mod GLOBAL_BUCKETS): one member always lands in one bucket, a reader
# merges the buckets. The unsplit names are what earlier versions wrote (`migrate_legacy`).
CATALOG: Final = f"{PREFIX}catalog"
RECENT: Final = f"{PREFIX}recent"
POPULAR_STARS: Final = f"{PREFIX}pop:stars"
POPULAR_PULLS: Final = f"{PREFIX}pop:pulls"
BUCKETED: Final = (CATALOG, RECENT, POPULAR_STARS, POPULAR_PULLS)
GLOBAL_BUCKETS: Final = 16

# Search tokens, split by the token's first character (a query word has 2+ characters, so a
# prefix lookup still reads exactly one key): ``av:sx:t:{<c>}``.
SEARCH_TERMS: Final = f"{PREFIX}sx:t"


def bucket(family: str, member: str) -> str:
    """The bucket key of `family` (one of BUCKETED) that holds `member`."""
    return f"{family}:{{{zlib.crc32(member.encode()) % GLOBAL_BUCKETS}}}"


def buckets(family: str) -> list[str]:
    return [f"{family}:{{{n}}}" for n in range(GLOBAL_BUCKETS)]


def search_terms(token: str) -> str:
    """The search-token key holding `token` (and every token with its first character)."""
    return f"{SEARCH_TERMS}:{{{token[:1]}}}"


def search_doc(doc_id: str) -> str:
    return f"{PREFIX}sx:d:{doc_id}"


# --- loader machinery -------------------------------------------------------------------------


def lock(flight: str) -> str:
    return f"{PREFIX}lock:{flight}"


def failure(flight: str) -> str:
    return f"{PREFIX}err:{flight}"
