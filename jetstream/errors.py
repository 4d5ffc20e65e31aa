"""The one exception root of the consumer, and the precise failures under it.

The consumer runs unattended and must never stop for one bad input: sources and the
processor raise these to say *which* thing went wrong, and the loops that call them decide
whether that means "skip this event", "reconnect" or "retry the backfill later". Deriving
from `AtcrError` lets the CLI print any of them as one clean line.
"""

from __future__ import annotations

from atcr.errors import AtcrError


class JetstreamError(AtcrError):
    """Root of every error the `jetstream` package raises."""


class MalformedEvent(JetstreamError):
    """An event (Jetstream JSON or firehose frame) cannot be read; it is logged and skipped."""


class VerificationFailed(MalformedEvent):
    """A firehose commit's signature does not verify against the repository's signing key."""


class SourceError(JetstreamError):
    """A stream connection failed or ended; the source reconnects with backoff."""


class StreamRefused(SourceError):
    """The server answered the subscription with an error (HTTP status or error frame)."""


class BackfillError(JetstreamError):
    """A backfill step failed (relay or PDS unreachable); the run is resumed later."""


class StatusUnavailable(JetstreamError):
    """`atcr jetstream --status` could not reach the running consumer's status endpoint."""
