"""What a signed-in user changes from the web UI, written to their own PDS.

Every write goes through the user's OAuth session (`PdsSessionStore.client`, DPoP for OAuth
users) into the user's repository, and then straight into the read model
(`Loader.wrote_record` / `deleted_record`, with the commit rev) so the next page view shows
it without waiting for Jetstream. Nothing here is AppView-private: stars, pages and the
profile are ordinary records the user owns and any other AppView reads.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Final, Protocol

from appview.cache.loader import Loader
from appview.errors import RegistryError
from appview.oci.registry import PROFILE_COLLECTION, Registry, RepoRef, now_iso
from appview.web.errors import BadInput, NotOwner, PageNotFound, PdsSessionMissing, UpstreamDown
from appview.web.ui import PAGE_COLLECTION, STAR_COLLECTION, Viewer, page_rkey, page_uri
from atcr import errors
from atcr.readmodel.records import star_subject
from atcr.syntax import is_did, is_oci_repository, is_oci_tag
from atcr.xrpc import XrpcClient

log = logging.getLogger("appview.web.actions")

MAX_DESCRIPTION: Final = 100_000
MAX_ICON: Final = 3_000_000
ICON_TYPES: Final = {
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
}


class Sessions(Protocol):
    async def client(self, did: str) -> XrpcClient | None: ...


def sniff_image(data: bytes) -> str | None:
    """The image type by its magic bytes (png, jpeg, webp); the upload's own claim is not trusted."""
    for magic, mime in ICON_TYPES.items():
        if data.startswith(magic):
            return mime
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def star_rkey(subject: str) -> str:
    """One star per subject: re-starring overwrites instead of piling up duplicates."""
    return base64.b32encode(hashlib.sha256(subject.encode()).digest()[:16]).decode().rstrip("=").lower()


def _rev(out: Any) -> str | None:
    commit = out.get("commit") if isinstance(out, dict) else None
    rev = commit.get("rev") if isinstance(commit, dict) else None
    return rev if isinstance(rev, str) else None


@dataclass(frozen=True)
class StarState:
    starred: bool
    count: int


class Actions:
    def __init__(self, loader: Loader, sessions: Sessions, registry: Registry) -> None:
        self.loader = loader
        self.sessions = sessions
        self.registry = registry

    async def _client(self, viewer: Viewer) -> XrpcClient:
        client = await self.sessions.client(viewer.did)
        if client is None:
            raise PdsSessionMissing()
        return client

    async def _owner(self, owner: str, repository: str) -> tuple[str, str | None]:
        if not is_oci_repository(repository):
            raise PageNotFound(f"{repository[:100]} is not a valid repository name.")
        try:
            ident = await self.loader.identity(owner)
        except errors.IdentityError:
            raise PageNotFound(f"No account named {owner[:100]} could be found.") from None
        except errors.NetworkError:
            raise UpstreamDown() from None
        return ident.did, ident.handle

    # -- stars -----------------------------------------------------------------------------

    async def set_star(self, viewer: Viewer, owner: str, repository: str, *, on: bool) -> StarState:
        """Star (or unstar) a repository: an ``io.atcr.sailor.star`` record in the viewer's PDS."""
        did, _ = await self._owner(owner, repository)
        client = await self._client(viewer)
        subject = page_uri(did, repository)
        try:
            if on:
                record = {"subject": subject, "createdAt": now_iso()}
                rkey = star_rkey(subject)
                out = await client.put_record(viewer.did, STAR_COLLECTION, rkey, record)
                await self.loader.wrote_record(
                    viewer.did, STAR_COLLECTION, rkey, {"$type": STAR_COLLECTION, **record},
                    cid=out.get("cid"), rev=_rev(out),
                )
            else:
                await self._unstar(client, viewer, did, repository)
        except errors.XrpcError as exc:
            log.info("star write for %s failed: %s", viewer.did, exc)
            raise UpstreamDown("Your account's server refused the change. Try again, or sign in again.") from None
        except errors.NetworkError:
            raise UpstreamDown("Your account's server did not answer.") from None
        return StarState(on, await self.loader.star_count(did, repository))

    async def _unstar(self, client: XrpcClient, viewer: Viewer, did: str, repository: str) -> None:
        """Delete every star of the viewer on this repository, whatever rkey or subject shape
        (another AppView may have written one): the listing comes from the PDS itself."""
        async for rec in client.iter_records(viewer.did, STAR_COLLECTION, max_pages=50):
            value = rec.get("value")
            if isinstance(value, dict) and star_subject(value) == (did, repository):
                rkey = str(rec.get("uri", "")).rsplit("/", 1)[-1]
                out = await client.delete_record(viewer.did, STAR_COLLECTION, rkey)
                await self.loader.deleted_record(viewer.did, STAR_COLLECTION, rkey, rev=_rev(out))

    # -- repository page -------------------------------------------------------------------

    async def edit_page(
        self,
        viewer: Viewer,
        owner: str,
        repository: str,
        *,
        description: str,
        icon: bytes | None = None,
        remove_icon: bool = False,
    ) -> None:
        """Write the repository's ``io.atcr.repo.page`` (README and icon)."""
        did, _ = await self._owner(owner, repository)
        if did != viewer.did:
            raise NotOwner()
        description = description.replace("\r\n", "\n")
        if len(description) > MAX_DESCRIPTION:
            raise BadInput(f"The description is longer than {MAX_DESCRIPTION:,} characters.")
        mime = None
        if icon:
            if len(icon) > MAX_ICON:
                raise BadInput("The icon is larger than 3 MB.")
            mime = sniff_image(icon)
            if mime is None:
                raise BadInput("The icon must be a PNG, JPEG or WebP image.")
        client = await self._client(viewer)
        try:
            current = await self.loader.repo_page(did, repository)
        except errors.NetworkError:
            raise UpstreamDown("Your account's server did not answer.") from None
        record: dict[str, Any] = {
            "repository": repository,
            "createdAt": (current or {}).get("createdAt") or now_iso(),
            "updatedAt": now_iso(),
        }
        if description.strip():
            record["description"] = description
        try:
            if icon and mime:
                record["avatar"] = await client.upload_blob(icon, mime)
            elif not remove_icon and isinstance((current or {}).get("avatar"), dict):
                record["avatar"] = (current or {})["avatar"]
            rkey = page_rkey(repository)
            out = await client.put_record(did, PAGE_COLLECTION, rkey, record)
        except errors.RecordValidationError as exc:
            raise BadInput(f"The page could not be saved: {exc}") from None
        except errors.XrpcError as exc:
            log.info("repo page write for %s/%s failed: %s", did, repository, exc)
            raise UpstreamDown("Your account's server refused the change. Try again, or sign in again.") from None
        except errors.NetworkError:
            raise UpstreamDown("Your account's server did not answer.") from None
        await self.loader.wrote_record(
            did, PAGE_COLLECTION, rkey, {"$type": PAGE_COLLECTION, **record}, cid=out.get("cid"), rev=_rev(out)
        )

    # -- deletes ---------------------------------------------------------------------------

    async def delete(self, viewer: Viewer, owner: str, repository: str, *, tag: str | None, digest: str | None) -> None:
        """Delete a tag, or a manifest with the tags that point at it (the registry's own delete)."""
        did, handle = await self._owner(owner, repository)
        if did != viewer.did:
            raise NotOwner()
        if tag is not None and not is_oci_tag(tag):
            raise BadInput("That is not a valid tag.")
        reference = tag if tag is not None else digest
        if not reference:
            raise BadInput("Nothing to delete was named.")
        try:
            ident = await self.loader.identity(did)
            ref = RepoRef(
                name=f"{handle or did}/{repository}", did=did, handle=handle, repository=repository,
                pds=ident.pds_endpoint,
            )
            await self.registry.delete_manifest(ref, viewer.did, reference)
        except RegistryError as exc:
            if exc.status == 404:
                raise PageNotFound("It was already deleted.") from None
            if exc.status in (401, 403):
                raise PdsSessionMissing() from None
            if exc.status >= 500:
                raise UpstreamDown() from None
            raise BadInput(exc.message) from None
        except errors.NetworkError:
            raise UpstreamDown() from None

    # -- settings --------------------------------------------------------------------------

    async def set_default_hold(self, viewer: Viewer, hold_did: str) -> None:
        """Write ``defaultHold`` into the viewer's ``io.atcr.sailor.profile``, keeping its other fields."""
        hold_did = hold_did.strip()
        if not is_did(hold_did):
            raise BadInput("A hold is named by its DID, such as did:web:hold01.example.com.")
        client = await self._client(viewer)
        try:
            current = await self.loader.profile(viewer.did) or {}
        except errors.NetworkError:
            raise UpstreamDown("Your account's server did not answer.") from None
        record = {k: v for k, v in current.items() if k != "$type"}
        record.update({"defaultHold": hold_did, "updatedAt": now_iso()})
        record.setdefault("createdAt", now_iso())
        try:
            out = await client.put_record(viewer.did, PROFILE_COLLECTION, "self", record)
        except errors.RecordValidationError as exc:
            raise BadInput(f"The profile could not be saved: {exc}") from None
        except errors.XrpcError as exc:
            log.info("profile write for %s failed: %s", viewer.did, exc)
            raise UpstreamDown("Your account's server refused the change. Try again, or sign in again.") from None
        except errors.NetworkError:
            raise UpstreamDown("Your account's server did not answer.") from None
        await self.loader.wrote_record(
            viewer.did, PROFILE_COLLECTION, "self", {"$type": PROFILE_COLLECTION, **record},
            cid=out.get("cid"), rev=_rev(out),
        )
        await self.registry.push_holds.forget(viewer.did)  # the next push goes to the new hold


__all__ = ["Actions", "StarState", "sniff_image", "star_rkey"]
