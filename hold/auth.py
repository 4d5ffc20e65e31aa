"""Who may do what on this hold (ATCR-NOTES.md §5.3), and who is calling.

* write (uploads, push notifications): the captain (owner), or a crew member with
  ``blob:write`` or ``crew:admin``. When the captain allows all crew, an authenticated DID that
  is not crew yet is enrolled on its first write (the `Enroller`, which writes the crew record
  ``requestCrew`` would have written), so a push works even when the AppView never called
  ``requestCrew``; an explicit crew record without ``blob:write`` still refuses;
* read (getBlob): anyone when the hold is public, otherwise the captain, crew with
  ``blob:read``/``blob:write``/``crew:admin``, or (allow-all-crew) any authenticated DID, since
  such a DID could enrol itself anyway.

Captain settings and crew records come from the hold's embedded repo (`hold.crew.RepoCrew`);
both sit behind small protocols (`CaptainSource`, `CrewDirectory`) so tests can use fakes.

The caller is established from a service token (atcr/serviceauth.py); this module turns its
refusals into hold errors, keeping the reference server's error names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from atcr import serviceauth
from atcr.serviceauth import ServiceAuthVerifier
from hold.errors import AuthRequired, Forbidden, IssuerUnavailable

BLOB_READ = "blob:read"
BLOB_WRITE = "blob:write"
CREW_ADMIN = "crew:admin"


@dataclass(frozen=True)
class Captain:
    owner: str | None
    public: bool
    allow_all_crew: bool


@dataclass(frozen=True)
class CrewMember:
    did: str
    role: str = "member"
    permissions: frozenset[str] = field(default_factory=frozenset)
    tier: str | None = None

    @property
    def may_write(self) -> bool:
        return bool(self.permissions & {BLOB_WRITE, CREW_ADMIN})

    @property
    def may_read(self) -> bool:
        return bool(self.permissions & {BLOB_READ, BLOB_WRITE, CREW_ADMIN})


class CaptainSource(Protocol):
    async def captain(self) -> Captain: ...


class CrewDirectory(Protocol):
    async def member(self, did: str) -> CrewMember | None:
        """The crew record of `did`, or None when `did` is not crew."""
        ...


class Enroller(Protocol):
    async def enroll(self, did: str) -> CrewMember | None:
        """Make `did` crew because the captain allows all crew; None if that is not allowed now."""
        ...


class StaticCaptain:
    def __init__(self, captain: Captain) -> None:
        self._captain = captain

    async def captain(self) -> Captain:
        return self._captain


class NoCrew:
    """The crew directory until the embedded repo provides one: nobody is crew."""

    async def member(self, did: str) -> CrewMember | None:
        return None


class StaticCrew:
    def __init__(self, members: dict[str, CrewMember]) -> None:
        self._members = members

    async def member(self, did: str) -> CrewMember | None:
        return self._members.get(did)


class HoldAuth:
    """Authenticates callers (service tokens) and answers authorization questions."""

    def __init__(
        self,
        verifier: ServiceAuthVerifier,
        captain: CaptainSource,
        crew: CrewDirectory,
        enroller: Enroller | None = None,
    ) -> None:
        self.verifier = verifier
        self.captain_source = captain
        self.crew = crew
        self.enroller = enroller

    async def authenticate(self, bearer: str | None, *, lxm: str) -> str:
        """The DID that signed `bearer` for method `lxm`, or `AuthRequired` naming why not."""
        if not bearer:
            raise AuthRequired("a service token is required (Authorization: Bearer <jwt>)", error="AuthMissing")
        try:
            claims = await self.verifier.verify(bearer, lxm=lxm)
        except serviceauth.IssuerUnavailable as exc:
            raise IssuerUnavailable(str(exc)) from None
        except serviceauth.ServiceAuthError as exc:
            raise AuthRequired(str(exc), error=exc.error) from None
        return claims.iss

    async def captain(self) -> Captain:
        return await self.captain_source.captain()

    async def is_public(self) -> bool:
        return (await self.captain_source.captain()).public

    async def is_owner(self, did: str) -> bool:
        owner = (await self.captain_source.captain()).owner
        return owner is not None and did == owner

    async def is_admin(self, did: str) -> bool:
        """Crew admin: the captain, or crew with ``crew:admin``."""
        if await self.is_owner(did):
            return True
        member = await self.crew.member(did)
        return member is not None and CREW_ADMIN in member.permissions

    async def can_write(self, did: str) -> bool:
        captain = await self.captain_source.captain()
        if captain.owner is not None and did == captain.owner:
            return True
        member = await self.crew.member(did)
        if member is not None:
            return member.may_write
        return captain.allow_all_crew

    async def can_read(self, did: str | None) -> bool:
        captain = await self.captain_source.captain()
        if captain.public:
            return True
        if did is None:
            return False
        if captain.owner is not None and did == captain.owner:
            return True
        member = await self.crew.member(did)
        if member is not None:
            return member.may_read
        return captain.allow_all_crew

    async def require_write(self, did: str) -> None:
        captain = await self.captain_source.captain()
        if captain.owner is not None and did == captain.owner:
            return
        member = await self.crew.member(did)
        if (
            member is None
            and captain.allow_all_crew
            and (self.enroller is None or await self.enroller.enroll(did) is not None)
        ):
            return
        if member is None or not member.may_write:
            raise Forbidden(f"{did} may not write to this hold (not the captain or crew with blob:write)")

    async def require_read(self, did: str | None) -> None:
        if not await self.can_read(did):
            if did is None:
                raise AuthRequired("this hold is private: a service token is required", error="AuthMissing")
            raise Forbidden(f"{did} may not read from this private hold")

    async def require_admin(self, did: str) -> None:
        if not await self.is_admin(did):
            raise Forbidden(f"{did} is not the captain or crew with crew:admin")
