"""The AppView read model in Valkey: key layout, record normalization, apply-functions, reads.

Shared by the AppView (cache-miss loader, write-through) and the Jetstream consumer, which
both write through `apply_record` / `apply_snapshot`. Pure Valkey: no HTTP here.
See docs/cache.md for the key design and TTLs.
"""

from atcr.readmodel import keys
from atcr.readmodel.apply import (
    DEFAULT_BYTES_TTL,
    DEFAULT_RETENTION,
    apply_record,
    apply_snapshot,
    forget_did,
    forget_identity,
    store_manifest_bytes,
    verify_digest,
)
from atcr.readmodel.keys import manifest_rkey, stats_rkey, tag_rkey
from atcr.readmodel.models import (
    CrewEntry,
    ManifestEntry,
    RepoStats,
    RepoSummary,
    SearchResults,
    TagEntry,
    UserEntry,
)

__all__ = [
    "DEFAULT_BYTES_TTL",
    "DEFAULT_RETENTION",
    "CrewEntry",
    "ManifestEntry",
    "RepoStats",
    "RepoSummary",
    "SearchResults",
    "TagEntry",
    "UserEntry",
    "apply_record",
    "apply_snapshot",
    "forget_did",
    "forget_identity",
    "keys",
    "manifest_rkey",
    "stats_rkey",
    "store_manifest_bytes",
    "tag_rkey",
    "verify_digest",
]
