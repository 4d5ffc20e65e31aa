"""The one exception root of the shared core.

Every error the `atcr` package raises derives from `AtcrError`, so callers can catch
the family and the HTTP layers can map each leaf to a precise wire error.
"""

from __future__ import annotations


class AtcrError(Exception):
    """Root of every error raised by the shared core."""


class ConfigError(AtcrError):
    """A setting has a wrong value; the message names the setting."""


class LexiconError(AtcrError):
    """A lexicon document is missing or malformed (a bug in the tree, not in user input)."""


class RecordValidationError(AtcrError):
    """A record does not satisfy its lexicon.

    `path` names the offending field (e.g. ``layers[0].digest``) so the message a user
    sees points at what to fix.
    """

    def __init__(self, nsid: str, path: str, message: str) -> None:
        self.nsid = nsid
        self.path = path
        self.reason = message
        super().__init__(f"{nsid}: field '{path}': {message}" if path else f"{nsid}: {message}")


class NetworkError(AtcrError):
    """An outbound request failed (connect, timeout, too large, too many redirects)."""


class UpstreamUnavailable(NetworkError):
    """An upstream service (PDS, PLC, hold) could not be reached in time."""


class ResponseTooLarge(NetworkError):
    """An upstream response exceeded the configured size limit."""


class BlockedAddress(NetworkError):
    """The SSRF guard refused a destination (private, loopback, link-local ...)."""


class IdentityError(AtcrError):
    """Identity resolution failed."""


class HandleNotFound(IdentityError):
    """The handle does not resolve to a DID."""


class DidNotFound(IdentityError):
    """The DID has no document."""


class InvalidIdentifier(IdentityError):
    """The string is neither a syntactically valid handle nor DID."""


class InvalidDidDocument(IdentityError):
    """The DID document lacks what we need (PDS endpoint, signing key) or is malformed."""


class XrpcError(AtcrError):
    """An XRPC call answered with an error body.

    `error` is the XRPC error name (e.g. ``InvalidSwap``, ``RecordNotFound``); `status` the HTTP status.
    """

    def __init__(self, status: int, error: str, message: str = "") -> None:
        self.status = status
        self.error = error
        self.message = message
        super().__init__(f"XRPC {status} {error}: {message}" if message else f"XRPC {status} {error}")


class RecordNotFound(XrpcError):
    """`getRecord` on a record that does not exist."""


class InvalidSwap(XrpcError):
    """Compare-and-swap lost: the record changed since it was read."""


class AuthenticationRequired(XrpcError):
    """The upstream refused the call for missing or bad credentials."""


class ReadModelError(AtcrError):
    """The AppView read model cannot give a trustworthy answer for a record it holds."""


class DigestMismatch(ReadModelError):
    """Bytes fetched for a manifest do not hash to its digest; they are refused, never cached."""


class ManifestBytesUnavailable(ReadModelError):
    """A manifest record exists but its exact bytes cannot be had (no ``manifestBlob`` ref)."""


class OAuthError(AtcrError):
    """An ATProto OAuth exchange failed (sign-in, token refresh, discovery).

    `error` is the OAuth error code when the authorization server sent one (``invalid_grant``,
    ``use_dpop_nonce``, ...), else a short local code; the message is safe to show a user.
    """

    def __init__(self, error: str, message: str = "") -> None:
        self.error = error
        self.message = message or error
        super().__init__(f"{error}: {message}" if message else error)


class AuthServerInvalid(OAuthError):
    """The PDS's authorization server metadata fails the checks the ATProto profile requires."""


class OAuthCallbackInvalid(OAuthError):
    """A callback cannot be trusted: unknown or replayed state, wrong issuer, wrong account."""


class InvalidGrant(OAuthError):
    """The authorization server refused a code or refresh token: the session is gone."""
