"""The AppView's one exception root, with a leaf per OCI error code.

Services raise these; only the HTTP layer turns them into the distribution-spec JSON body
`{"errors":[{"code","message","detail"}]}` with the leaf's status.
"""

from __future__ import annotations

from typing import Any


class RegistryError(Exception):
    code = "UNKNOWN"
    status = 500
    default_message = "unknown error"

    def __init__(self, message: str | None = None, detail: Any = None, headers: dict[str, str] | None = None) -> None:
        self.message = message or self.default_message
        self.detail = detail
        self.headers = headers or {}
        super().__init__(self.message)


class BlobUnknown(RegistryError):
    code, status, default_message = "BLOB_UNKNOWN", 404, "blob unknown to registry"


class BlobUploadInvalid(RegistryError):
    code, status, default_message = "BLOB_UPLOAD_INVALID", 400, "blob upload invalid"


class RangeInvalid(BlobUploadInvalid):
    status, default_message = 416, "requested range not satisfiable"


class RangeNotSatisfiable(RegistryError):
    """A blob GET's Range the blob cannot satisfy (distribution's code; the OCI spec names none)."""

    code, status, default_message = "RANGE_INVALID", 416, "requested range not satisfiable"


class BlobUploadUnknown(RegistryError):
    code, status, default_message = "BLOB_UPLOAD_UNKNOWN", 404, "blob upload unknown to registry"


class DigestInvalid(RegistryError):
    code, status, default_message = "DIGEST_INVALID", 400, "provided digest did not match uploaded content"


class ManifestBlobUnknown(RegistryError):
    code, status = "MANIFEST_BLOB_UNKNOWN", 400
    default_message = "manifest references a manifest or blob unknown to registry"


class ManifestInvalid(RegistryError):
    code, status, default_message = "MANIFEST_INVALID", 400, "manifest invalid"


class ManifestUnknown(RegistryError):
    code, status, default_message = "MANIFEST_UNKNOWN", 404, "manifest unknown to registry"


class NameInvalid(RegistryError):
    code, status, default_message = "NAME_INVALID", 400, "invalid repository name"


class NameUnknown(RegistryError):
    code, status, default_message = "NAME_UNKNOWN", 404, "repository name not known to registry"


class SizeInvalid(RegistryError):
    code, status, default_message = "SIZE_INVALID", 400, "provided length did not match content length"


class TooLarge(SizeInvalid):
    status, default_message = 413, "content exceeds the size limit"


class Unauthorized(RegistryError):
    code, status, default_message = "UNAUTHORIZED", 401, "authentication required"


class Denied(RegistryError):
    code, status, default_message = "DENIED", 403, "requested access to the resource is denied"


class Unsupported(RegistryError):
    code, status, default_message = "UNSUPPORTED", 405, "the operation is unsupported"


class PaginationInvalid(RegistryError):
    code, status, default_message = "PAGINATION_NUMBER_INVALID", 400, "invalid number of results requested"


class TooManyRequests(RegistryError):
    code, status, default_message = "TOOMANYREQUESTS", 429, "too many requests"


class Unavailable(RegistryError):
    code, status, default_message = "UNAVAILABLE", 503, "service unavailable"


class SignInError(RegistryError):
    """Device-flow and web sign-in failures; `code` is the RFC 6749/8628 error the HTTP layer sends."""

    code, status, default_message = "invalid_request", 400, "sign-in request invalid"


class AuthorizationPending(SignInError):
    code, default_message = "authorization_pending", "the user has not approved this device yet"


class SlowDown(SignInError):
    code, default_message = "slow_down", "polling too fast; wait longer between requests"


class ExpiredToken(SignInError):
    code, default_message = "expired_token", "the device code has expired; start the login again"


class AccessDenied(SignInError):
    code, status, default_message = "access_denied", 400, "the user denied this device"


class InvalidDeviceGrant(SignInError):
    code, default_message = "invalid_grant", "unknown or already used device code"


class InvalidUserCode(SignInError):
    code, status, default_message = "invalid_user_code", 400, "that code is wrong or has expired"


class TooManyAttempts(SignInError):
    code, status, default_message = "too_many_attempts", 429, "too many attempts; wait a few minutes"


class CsrfRejected(SignInError):
    code, status, default_message = "csrf", 403, "the form expired or came from another site; reload and retry"
