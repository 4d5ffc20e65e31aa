"""Errors of the hold's repository.

`RepoError` derives from the hold's one root, `HoldError`, so the hold's HTTP layer renders
every leaf as XRPC JSON `{"error", "message"}`. The names and statuses are the ones the
reference PDS answers with (checked against `@atproto/pds` 0.5.35 on the test network):
`RecordNotFound` and `RepoNotFound` are 400 there, not 404, and clients key on the name.
"""

from __future__ import annotations

from hold.errors import HoldError


class RepoError(HoldError):
    """Root of every error raised by `hold.repo`."""

    error, status, default_message = "InternalServerError", 500, "repository error"


class InvalidRecord(RepoError):
    """A record cannot be stored: not in the ATProto data model, or it fails its lexicon."""

    error, status, default_message = "InvalidRequest", 400, "invalid record"


class InvalidKey(RepoError):
    """A collection NSID or record key that the repository spec does not allow."""

    error, status, default_message = "InvalidRequest", 400, "invalid collection or record key"


class RecordNotFound(RepoError):
    """The record named by a read, an update or a delete does not exist."""

    error, status, default_message = "RecordNotFound", 400, "record not found"


class RecordAlreadyExists(RepoError):
    """A create names a record key that is already taken."""

    error, status, default_message = "RecordAlreadyExists", 409, "record already exists"


class InvalidSwap(RepoError):
    """Compare-and-swap lost: the record or the commit changed since the caller read it."""

    error, status, default_message = "InvalidSwap", 400, "record or commit changed"


class InvalidParams(RepoError):
    """A read was asked for something out of range (limit, a malformed CID ...)."""

    error, status, default_message = "InvalidRequest", 400, "invalid parameters"


class InvalidCursor(RepoError):
    """A pagination or firehose cursor the repository cannot interpret."""

    error, status, default_message = "InvalidRequest", 400, "invalid cursor"


class FutureCursor(InvalidCursor):
    """A firehose cursor ahead of the newest event: the client talked to another log."""

    error, default_message = "FutureCursor", "cursor is in the future"


class RepoMismatch(RepoError):
    """The database on disk belongs to another DID than the one the hold was started with."""


class RepoLocked(RepoError):
    """Another process has the repository open; two writers would fork its history."""


class CorruptRepo(RepoError):
    """Stored blocks do not form a valid repository (missing block, bad node, wrong hash)."""


class MissingBlock(CorruptRepo):
    """A block the tree points at is not in the store."""

    def __init__(self, cid: str) -> None:
        self.cid = cid
        super().__init__(f"missing block {cid}")


class UnknownRepo(RepoError):
    """A request names a repo this hold does not host (it hosts exactly one: its own DID)."""

    error, status, default_message = "RepoNotFound", 400, "repo not found"


class RepoClosed(RepoError):
    """The repository was closed; no further reads or writes are possible."""

    error, status, default_message = "ServiceUnavailable", 503, "repository is shutting down"
