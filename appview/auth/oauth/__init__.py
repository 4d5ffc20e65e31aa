"""The AppView as an ATProto OAuth client (PAR, PKCE, DPoP, private_key_jwt), and its sessions.

Layout: `dpop` (proofs, nonces), `metadata` (client id, metadata document, keys, scopes),
`discovery` (PDS -> authorization server, checked), `client` (the protocol exchanges),
`session` (pending sign-ins and live sessions in Valkey, refresh under a lock, DPoP XRPC auth).
HTTP routes live in `appview.web.auth_routes`; nothing here knows about HTTP requests.
"""

from __future__ import annotations

from appview.auth.oauth.client import OAuthClient, OAuthSession, PendingAuth
from appview.auth.oauth.discovery import AuthServer, Discovery
from appview.auth.oauth.dpop import DpopKey, NonceCache
from appview.auth.oauth.metadata import (
    CALLBACK_PATH,
    CLIENT_METADATA_PATH,
    JWKS_PATH,
    ClientKeys,
    OAuthClientConfig,
    default_scope,
)
from appview.auth.oauth.session import DpopXrpcAuth, OAuthSessions, PendingStore

__all__ = [
    "CALLBACK_PATH",
    "CLIENT_METADATA_PATH",
    "JWKS_PATH",
    "AuthServer",
    "ClientKeys",
    "Discovery",
    "DpopKey",
    "DpopXrpcAuth",
    "NonceCache",
    "OAuthClient",
    "OAuthClientConfig",
    "OAuthSession",
    "OAuthSessions",
    "PendingAuth",
    "PendingStore",
    "default_scope",
]
