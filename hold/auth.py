"""Who may do what on this hold (ATCR-NOTES.md §5.3), and who is calling.

* write (uploads): the captain (owner), a crew member with ``blob:write`` or ``crew:admin``,
  or, when the captain allows all crew, any authenticated DID;
* read (getBlob): anyone when the hold is public, otherwise anyone who may write or a crew
  member with ``blob:read``.

Captain settings and crew records will come from the hold's embedded repo; until then the
captain comes from settings and the crew directory is empty. Both sit behind small protocols
(`CaptainSource`, `CrewDirectory`) that the repo implements.

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


class CaptainSource(Protocol):
    async def captain(self) -> Captain: ...


class CrewDirectory(Protocol):
    async def member(self, did: str) -> CrewMember | None:
        """The crew record of `did`, or None when `did` is not crew."""
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

    def __init__(self, verifier: ServiceAuthVerifier, captain: CaptainSource, crew: CrewDirectory) -> None:
        self.verifier = verifier
        self.captain_source = captain
        self.crew = crew

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

    async def is_public(self) -> bool:
        return (await self.captain_source.captain()).public

    async def can_write(self, did: str) -> bool:
        captain = await self.captain_source.captain()
        if captain.owner is not None and did == captain.owner:
            return True
        if captain.allow_all_crew:
            return True
        member = await self.crew.member(did)
        return member is not None and bool(member.permissions & {BLOB_WRITE, CREW_ADMIN})

    async def can_read(self, did: str | None) -> bool:
        if await self.is_public():
            return True
        if did is None:
            return False
        if await self.can_write(did):
            return True
        member = await self.crew.member(did)
        return member is not None and BLOB_READ in member.permissions

    async def require_write(self, did: str) -> None:
        if not await self.can_write(did):
            raise Forbidden(f"{did} may not write to this hold (not the captain or crew with blob:write)")

    async def require_read(self, did: str | None) -> None:
        if not await self.can_read(did):
            if did is None:
                raise AuthRequired("this hold is private: a service token is required", error="AuthMissing")
            raise Forbidden(f"{did} may not read from this private hold")
