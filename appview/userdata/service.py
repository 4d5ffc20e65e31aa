"""Everything the AppView and the user's holds keep about one account: export it, delete it.

The AppView keeps (Valkey): devices (name, address, user agent, times; the secret only as a
bcrypt hash), browser sessions (creation time), the sealed PDS/OAuth session, app-password
check proofs, webhooks with their delivery logs, the push-hold pin, open uploads, and its read
model's cache of the account's public records (repositories, tags, manifests, stars, stats).
The holds keep crew, layer, stats and scan records and the posts about pushes.

Deleting removes all of the AppView's keys and asks each hold the account used to delete its
records (`io.atcr.hold.deleteUserData`). Records in the account's own PDS (manifests, tags,
stars, profile) are the user's: the registry cannot and does not delete them, and shows them
again for as long as they exist there.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
import zipfile
from dataclasses import dataclass
from typing import Any, Protocol

import valkey.asyncio as avalkey

from appview.auth.device import DeviceFlowService, awaited
from appview.auth.sessions import PdsSessionStore
from appview.holds.client import HoldClient, HoldError
from appview.policy.schedule import forget_account
from appview.scans.service import forget_account as forget_scans
from appview.web.websession import WebSessionStore
from appview.webhooks.store import WebhookStore
from atcr import errors
from atcr.readmodel import keys
from atcr.readmodel.apply import forget_did
from atcr.readmodel.search import index_repository, index_user
from atcr.syntax import is_did

log = logging.getLogger("appview.userdata")

HOLD_WAIT = 20.0
# Fields of a stored PDS/OAuth session that are credentials, never exported.
_SECRET_HINTS = ("jwt", "token", "key", "secret", "dpop", "nonce", "verifier", "password")


class ReadModel(Protocol):
    async def profile(self, did: str) -> dict[str, Any] | None: ...
    async def repositories(self, did: str) -> list[str]: ...
    async def manifests(self, did: str, repository: str) -> list[Any]: ...
    async def starred(self, did: str) -> list[str]: ...
    async def stats(self, did: str, repository: str) -> Any: ...


@dataclass(frozen=True)
class HoldOutcome:
    hold_did: str
    ok: bool
    result: dict[str, Any]


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def session_metadata(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A stored PDS session without its credentials."""
    if record is None:
        return None
    return {k: v for k, v in record.items()
            if not any(h in k.lower() for h in _SECRET_HINTS) and isinstance(v, str | int | float | bool | None)}


class UserDataService:
    def __init__(
        self,
        valkey: avalkey.Valkey,
        model: ReadModel,
        holds: HoldClient,
        *,
        devices: DeviceFlowService,
        web_sessions: WebSessionStore,
        pds_sessions: PdsSessionStore,
        webhooks: WebhookStore,
        default_hold_did: str,
        registry_host: str,
    ) -> None:
        self._v = valkey
        self.model = model
        self.holds = holds
        self.devices = devices
        self.web_sessions = web_sessions
        self.pds_sessions = pds_sessions
        self.webhooks = webhooks
        self.default_hold_did = default_hold_did
        self.registry_host = registry_host

    async def hold_dids(self, did: str) -> list[str]:
        """The holds this account used: the registry's default, its profile's, and those holding its images."""
        found = [self.default_hold_did]
        try:
            profile = await self.model.profile(did)
            current = (profile or {}).get("defaultHold")
            if isinstance(current, str) and is_did(current):
                found.append(current)
            for repo in (await self.model.repositories(did))[:200]:
                found += [m.hold_did for m in await self.model.manifests(did, repo) if m.hold_did]
        except errors.AtcrError as exc:
            log.info("holds of %s: only the known ones (%s)", did, exc)
        pin = await self._v.get(f"av:{{{did}}}:pushhold")
        if pin:
            value = pin.decode() if isinstance(pin, bytes) else str(pin)
            if is_did(value):
                found.append(value)
        return list(dict.fromkeys(found))

    async def _web_sessions(self, did: str) -> list[dict[str, Any]]:
        out = []
        for member in await awaited(self._v.smembers(f"av:websess-user:{did}")):
            key = member.decode() if isinstance(member, bytes) else str(member)
            raw = await self._v.get(f"av:websess:{key}")
            if raw:
                data = json.loads(raw)
                out.append({"createdAt": _iso(float(data.get("created", 0))), "handle": data.get("handle")})
        return sorted(out, key=lambda s: str(s["createdAt"]))

    async def _per_hold(self, did: str, hold_dids: list[str], *, delete: bool) -> list[HoldOutcome]:
        async def one(hold_did: str) -> HoldOutcome:
            call = self.holds.delete_user_data if delete else self.holds.export_user_data
            try:
                return HoldOutcome(hold_did, True, await asyncio.wait_for(call(hold_did, did), HOLD_WAIT))
            except (HoldError, errors.AtcrError, TimeoutError) as exc:
                reason = str(exc) or type(exc).__name__
                log.info("%s at %s for %s failed: %s", "deleteUserData" if delete else "exportUserData", hold_did,
                         did, reason)
                return HoldOutcome(hold_did, False, {"error": reason[:300]})

        return list(await asyncio.gather(*(one(h) for h in hold_dids)))

    async def export(self, did: str, handle: str | None) -> dict[str, Any]:
        hooks = await self.webhooks.for_user(did)
        repos: list[str] = []
        stars: list[str] = []
        stats: dict[str, Any] = {}
        try:
            repos = await self.model.repositories(did)
            stars = await self.model.starred(did)
            for repo in repos[:200]:
                s = await self.model.stats(did, repo)
                stats[repo] = {"pullCount": s.pull_count, "pushCount": s.push_count, "lastPull": s.last_pull,
                               "lastPush": s.last_push, "holds": list(s.holds)}
        except errors.AtcrError as exc:
            log.info("export of %s: read model incomplete (%s)", did, exc)
        holds = await self._per_hold(did, await self.hold_dids(did), delete=False)
        return {
            "exportedAt": _iso(time.time()),
            "registry": self.registry_host,
            "did": did,
            "handle": handle,
            "appview": {
                "devices": [
                    {"id": d.id, "name": d.name, "address": d.ip, "userAgent": d.user_agent,
                     "createdAt": _iso(d.created), "lastUsedAt": _iso(d.last_used) if d.last_used else None}
                    for d in await self.devices.devices(did)
                ],
                "webSessions": await self._web_sessions(did),
                "pdsSession": session_metadata(await self.pds_sessions.load(did)),
                "webhooks": [
                    {**h.public(), "deliveries": await self.webhooks.deliveries(h.id)} for h in hooks
                ],
                "repositories": repos,
                "stars": stars,
                "stats": stats,
            },
            "holds": [
                {"holdDid": o.hold_did, **({"export": o.result} if o.ok else {"error": o.result["error"]})}
                for o in holds
            ],
        }

    async def _forget_search(self, did: str) -> int:
        """The search index's documents of the account and its repositories (`did`, `did/<repo>`)."""
        base = keys.search_doc(did)
        docs = [base] + [k.decode() if isinstance(k, bytes) else str(k)
                         async for k in self._v.scan_iter(match=base.replace("[", "\\[") + "/*", count=500)]
        for key in docs:
            doc_id = key[len(keys.search_doc("")):]
            if doc_id == did:
                await index_user(self._v, did, None)
            else:
                await index_repository(self._v, did, doc_id[len(did) + 1:], None)
        return len(docs)

    async def delete(self, did: str) -> dict[str, Any]:
        """Ask the holds first (that needs the account's PDS session), then drop every AppView key."""
        holds = await self._per_hold(did, await self.hold_dids(did), delete=True)
        webhooks = await self.webhooks.delete_all(did)
        devices = 0
        for device in await self.devices.devices(did):
            devices += int(await self.devices.revoke(did, device.id))
        await self.pds_sessions.drop(did)
        await self._v.delete(f"av:apppw:{did}", f"av:{{{did}}}:pushhold", f"av:uploads-open:{did}",
                             f"av:devices:{did}")
        cached = (
            await self._forget_search(did) + await forget_did(self._v, did) + await forget_account(self._v, did)
            + await forget_scans(self._v, did)
        )
        sessions = await self.web_sessions.delete_all(did)  # last: this signs the browser out
        log.info("deleted the data of %s: %d webhook(s), %d device(s), %d session(s), %d cached key(s), holds %s",
                 did, webhooks, devices, sessions, cached, {o.hold_did: o.ok for o in holds})
        return {
            "webhooks": webhooks,
            "devices": devices,
            "webSessions": sessions,
            "cachedKeys": cached,
            "holds": [{"holdDid": o.hold_did, "ok": o.ok, **o.result} for o in holds],
        }


def as_zip(export: dict[str, Any]) -> bytes:
    """The export as a zip: everything in export.json, and each part on its own for reading."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("export.json", json.dumps(export, indent=2, sort_keys=True))
        for name, part in export["appview"].items():
            z.writestr(f"appview/{name}.json", json.dumps(part, indent=2, sort_keys=True))
        for hold in export["holds"]:
            safe = hold["holdDid"].replace(":", "_").replace("/", "_")
            z.writestr(f"holds/{safe}.json", json.dumps(hold, indent=2, sort_keys=True))
    return buf.getvalue()


__all__ = ["HoldOutcome", "UserDataService", "as_zip", "session_metadata"]
