"""Syntax checks for ATProto identifiers and OCI names, shared by every layer.

Kept free of I/O so they can guard inputs at the edge before anything is resolved or stored.
"""

from __future__ import annotations

import re

# atproto.com/specs/did: method lowercase, identifier of allowed chars, no trailing ':' or '%'.
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")
# atproto.com/specs/handle
_HANDLE = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
)
_NSID = re.compile(
    r"^[a-zA-Z]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}$"
)
_RKEY = re.compile(r"^[a-zA-Z0-9._:~-]{1,512}$")
_TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")

# OCI distribution-spec name components and tags.
_OCI_COMPONENT = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$")
_OCI_TAG = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")

# Handles that can never be registered (atproto spec: disallowed TLDs).
_DISALLOWED_TLDS = {"alt", "arpa", "example", "internal", "invalid", "local", "localhost", "onion"}


def is_did(value: str) -> bool:
    return len(value) <= 2048 and bool(_DID.match(value))


def is_handle(value: str, *, allow_reserved_tlds: bool = False) -> bool:
    """A syntactically valid handle; `.test` is allowed (the local network uses it)."""
    if len(value) > 253 or not _HANDLE.match(value):
        return False
    tld = value.rsplit(".", 1)[-1].lower()
    return allow_reserved_tlds or tld not in _DISALLOWED_TLDS


def is_nsid(value: str) -> bool:
    return len(value) <= 317 and bool(_NSID.match(value))


def is_record_key(value: str) -> bool:
    return value not in (".", "..") and bool(_RKEY.match(value))


def is_tid(value: str) -> bool:
    return bool(_TID.match(value))


def is_oci_repository(value: str) -> bool:
    """A repository path (the part after the identity) under the OCI name rules."""
    if not value or len(value) > 255:
        return False
    return all(_OCI_COMPONENT.match(part) for part in value.split("/"))


def is_oci_tag(value: str) -> bool:
    return bool(_OCI_TAG.match(value))
