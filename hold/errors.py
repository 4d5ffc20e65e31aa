"""The hold's one exception root, with a leaf per XRPC error it answers.

Services and storage drivers raise these; only the HTTP layer (hold/xrpc.py) turns them into
``{"error": <name>, "message": ...}`` with the leaf's status. Names follow ATCR's lexicons
where ATCR defines one (``InvalidUploadId``, ``InvalidPartNumber``, ``MissingParts``,
``CompletionFailed``, ``InvalidDigest``) and the atproto reference server elsewhere
(``AuthMissing``, ``BadJwtAudience``, ``Forbidden``, ``BlobNotFound``).
"""

from __future__ import annotations

from typing import ClassVar


class HoldError(Exception):
    """Root of every error the hold raises on purpose."""

    error: ClassVar[str] = "InternalServerError"
    status: ClassVar[int] = 500
    default_message: ClassVar[str] = "internal error"

    def __init__(self, message: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        self.headers = headers or {}
        super().__init__(self.message)

    @property
    def error_name(self) -> str:
        return self.error


# --- request problems (400) ----------------------------------------------------------------------


class InvalidRequest(HoldError):
    error, status, default_message = "InvalidRequest", 400, "invalid request"


class InvalidDigest(InvalidRequest):
    error, default_message = "InvalidDigest", "invalid digest"


class DigestMismatch(InvalidRequest):
    """The uploaded bytes do not hash to the digest the client named; nothing was stored."""

    error, default_message = "DigestMismatch", "uploaded content does not match the digest"


class InvalidPartNumber(InvalidRequest):
    error, default_message = "InvalidPartNumber", "part number must be between 1 and 10000"


class PartTooSmall(InvalidRequest):
    """A part other than the last is below the minimum part size (S3: 5 MiB)."""

    error, default_message = "PartTooSmall", "every part but the last must be at least the minimum part size"


class MissingParts(InvalidRequest):
    """The completion names parts that were not uploaded, or ETags that do not match."""

    error, default_message = "MissingParts", "completion lists parts that were not uploaded"


class LayerNotStored(InvalidRequest):
    """notifyManifest(push) names layers this hold does not store: nothing is recorded for them
    (they would count as usage and appear as layers without ever having been uploaded)."""

    error, default_message = "LayerNotStored", "the manifest names layers that are not in this hold's storage"


class SizeMismatch(InvalidRequest):
    error, default_message = "SizeMismatch", "uploaded size differs from the declared size"


class RangeNotSatisfiable(HoldError):
    error, status, default_message = "InvalidRange", 416, "requested range not satisfiable"


# --- too large (413) -----------------------------------------------------------------------------


class TooLarge(HoldError):
    error, status, default_message = "PayloadTooLarge", 413, "request body too large"


class PartTooLarge(TooLarge):
    error, default_message = "PartTooLarge", "part exceeds the maximum part size"


class BlobTooLarge(TooLarge):
    """The upload would exceed its declared size or the hold's maximum blob size."""

    error, default_message = "BlobTooLarge", "upload exceeds its declared size or the hold's limit"


# --- not found (404) / conflicts -----------------------------------------------------------------


class UploadNotFound(HoldError):
    """Unknown, expired, finished, or someone else's upload id (indistinguishable on purpose)."""

    error, status, default_message = "InvalidUploadId", 404, "unknown or expired upload id"


class BlobNotFound(HoldError):
    error, status, default_message = "BlobNotFound", 404, "blob not found"


class RepoNotFound(HoldError):
    error, status, default_message = "RepoNotFound", 404, "this hold does not serve that repo"


class UploadBusy(HoldError):
    """Completion or abort is already running for this upload."""

    error, status, default_message = "UploadInProgress", 409, "the upload is being completed or aborted"


# --- authentication / authorization --------------------------------------------------------------


class AuthRequired(HoldError):
    """No usable credentials. `error` names why (AuthMissing, BadJwtAudience, JwtReplayed ...)."""

    error, status, default_message = "AuthMissing", 401, "authentication required"

    def __init__(self, message: str | None = None, *, error: str | None = None) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="atcr-hold"'})
        self._error = error or type(self).error

    @property
    def error_name(self) -> str:
        return self._error


class Forbidden(HoldError):
    error, status, default_message = "Forbidden", 403, "not allowed"


class UrlSignatureInvalid(Forbidden):
    """A hold-signed URL was altered, is for another resource, or has expired."""

    error, default_message = "InvalidSignature", "URL signature invalid or expired"


class IssuerUnavailable(HoldError):
    error, status, default_message = "IssuerUnavailable", 503, "could not resolve the token issuer"


# --- storage -------------------------------------------------------------------------------------


class StorageError(HoldError):
    """The storage backend refused or failed an operation (after retries where retrying helps)."""

    error, status, default_message = "StorageError", 502, "storage backend error"


class StorageUnavailable(StorageError):
    """The backend is throttling or down; the caller may retry later."""

    error, status, default_message = "StorageUnavailable", 503, "storage backend unavailable, retry later"

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class CompletionFailed(StorageError):
    error, default_message = "CompletionFailed", "could not assemble the uploaded parts"
