"""The standard PDS read and sync endpoints over the hold's repository.

These are what relays, Jetstream and AppViews call to index the hold (ATCR-NOTES §5.2), so
they answer like the reference PDS does: same parameter names and limits, same error names
and statuses (`RecordNotFound`/`RepoNotFound` are 400 there), and `sync.getRecord` of a
missing record is a 200 proof of absence, not an error.

Parameters are parsed by hand instead of by litestar's signature model so that a bad value
is an XRPC error body (`{"error": "InvalidRequest", ...}`), which is what XRPC clients parse.
Errors are rendered by the hold's one XRPC error mapping (`hold.xrpc.exception_handlers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import Any

from litestar import Request, Response, Router, WebSocket, get, websocket
from litestar.handlers import BaseRouteHandler

from atcr.syntax import is_did, is_handle, is_nsid, is_record_key, is_tid
from atcr.tasks import cancel_and_wait
from hold.errors import InvalidRequest
from hold.repo.errors import RecordNotFound, UnknownRepo
from hold.repo.firehose import error_frame, subscribe_frames
from hold.repo.repo import Repo
from hold.settings import HoldSettings
from hold.xrpc import exception_handlers

CAR_MEDIA_TYPE = "application/vnd.ipld.car"

log = logging.getLogger("atcr.hold.repo")

DidDocument = Mapping[str, Any]
RepoProvider = Callable[[], Repo]


def _version() -> str:
    try:
        return metadata.version("atcr-py")
    except metadata.PackageNotFoundError:
        return "0.0.0"


# --- parameters ----------------------------------------------------------------------------------


def _str(request: Request[Any, Any, Any], name: str, *, required: bool = True) -> str | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f'Error: Params must have the property "{name}"')
        return None
    return str(value)


def _req(request: Request[Any, Any, Any], name: str) -> str:
    value = _str(request, name)
    assert value is not None
    return value


def _int(request: Request[Any, Any, Any], name: str, default: int, lo: int, hi: int) -> int:
    raw = _str(request, name, required=False)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if not lo <= value <= hi:
        raise InvalidRequest(f"{name} must be between {lo} and {hi}")
    return value


def _bool(request: Request[Any, Any, Any], name: str) -> bool:
    raw = _str(request, name, required=False)
    if raw is None:
        return False
    if raw in ("true", "1"):
        return True
    if raw in ("false", "0"):
        return False
    raise InvalidRequest(f"{name} must be true or false")


def _nsid(request: Request[Any, Any, Any], name: str) -> str:
    value = _req(request, name)
    if not is_nsid(value):
        raise InvalidRequest(f"{name} must be a valid NSID")
    return value


def _rkey(request: Request[Any, Any, Any], name: str) -> str:
    value = _req(request, name)
    if not is_record_key(value):
        raise InvalidRequest(f"{name} must be a valid record key")
    return value


# --- the routes ----------------------------------------------------------------------------------


def default_did_document(repo: Repo, service_endpoint: str) -> dict[str, Any]:
    """A minimal DID document (signing key + PDS endpoint), for when the hold's identity has none."""
    multikey = repo.signing_key.removeprefix("did:key:")
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": repo.did,
        "alsoKnownAs": [],
        "verificationMethod": [
            {"id": f"{repo.did}#atproto", "type": "Multikey", "controller": repo.did, "publicKeyMultibase": multikey}
        ],
        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": service_endpoint}],
    }


def _handle_of(doc: DidDocument) -> str | None:
    """The document's `at://` alias if it is a syntactically valid handle (an IP host is not)."""
    for aka in doc.get("alsoKnownAs") or []:
        if isinstance(aka, str) and aka.startswith("at://"):
            handle = aka[5:]
            return handle if is_handle(handle, allow_reserved_tlds=True) else None
    return None


def repo_routes(
    repo: Repo | RepoProvider,
    settings: HoldSettings,
    *,
    did_document: Callable[[], DidDocument] | None = None,
) -> Router:
    """A Router with the com.atproto read/sync endpoints, the firehose and `/xrpc/_health`.

    `repo` may be a callable returning the repository, for apps that open it in their
    lifespan (after the routes exist). `did_document` returns the hold's current DID document
    (for `describeRepo`); without it a minimal one is built from the signing key and
    `settings.public_url`.
    """
    version = _version()
    current: RepoProvider = repo if callable(repo) else lambda: repo

    def doc() -> DidDocument:
        if did_document is not None:
            return did_document()
        return default_did_document(current(), settings.public_url)

    def check_did(value: str) -> Repo:
        if not is_did(value):
            raise InvalidRequest("did must be a valid DID")
        repo = current()
        if value != repo.did:
            raise UnknownRepo(f"Could not find repo for DID: {value}")
        return repo

    def check_repo(value: str) -> Repo:
        repo = current()
        if value == repo.did:
            return repo
        handle = _handle_of(doc())
        if handle is not None and value.lower() == handle.lower():
            return repo
        raise UnknownRepo(f"Could not find repo: {value}")

    def uri(repo: Repo, collection: str, rkey: str) -> str:
        return f"at://{repo.did}/{collection}/{rkey}"

    @get("/xrpc/_health", sync_to_thread=False)
    def health() -> dict[str, str]:
        return {"version": version}

    @get("/xrpc/com.atproto.server.describeServer", sync_to_thread=False)
    def describe_server() -> dict[str, Any]:
        return {"did": current().did, "availableUserDomains": [], "inviteCodeRequired": True}

    @get("/xrpc/com.atproto.repo.describeRepo")
    async def describe_repo(request: Request[Any, Any, Any]) -> dict[str, Any]:
        repo = check_repo(_req(request, "repo"))
        document = doc()
        handle = _handle_of(document)
        return {
            "handle": handle or "handle.invalid",
            "did": repo.did,
            "didDoc": dict(document),
            "collections": await repo.list_collections(),
            "handleIsCorrect": handle is not None,
        }

    @get("/xrpc/com.atproto.repo.getRecord")
    async def get_record(request: Request[Any, Any, Any]) -> dict[str, Any]:
        repo = check_repo(_req(request, "repo"))
        collection, rkey = _nsid(request, "collection"), _rkey(request, "rkey")
        want = _str(request, "cid", required=False)
        found = await repo.get_record(collection, rkey)
        if found is None or (want is not None and found[0] != want):
            raise RecordNotFound(f"Could not locate record: {uri(repo, collection, rkey)}")
        cid, value = found
        return {"uri": uri(repo, collection, rkey), "cid": cid, "value": value}

    @get("/xrpc/com.atproto.repo.listRecords")
    async def list_records(request: Request[Any, Any, Any]) -> dict[str, Any]:
        repo = check_repo(_req(request, "repo"))
        collection = _nsid(request, "collection")
        limit = _int(request, "limit", 50, 1, 100)
        cursor = _str(request, "cursor", required=False)
        page = await repo.list_records(collection, limit=limit, cursor=cursor, reverse=_bool(request, "reverse"))
        body: dict[str, Any] = {
            "records": [{"uri": uri(repo, r.collection, r.rkey), "cid": r.cid, "value": r.value} for r in page.records]
        }
        if page.cursor is not None:
            body["cursor"] = page.cursor
        return body

    @get("/xrpc/com.atproto.sync.getLatestCommit", sync_to_thread=False)
    def get_latest_commit(request: Request[Any, Any, Any]) -> dict[str, str]:
        head = check_did(_req(request, "did")).latest_commit()
        return {"cid": head.cid, "rev": head.rev}

    @get("/xrpc/com.atproto.sync.getRepoStatus", sync_to_thread=False)
    def get_repo_status(request: Request[Any, Any, Any]) -> dict[str, Any]:
        repo = check_did(_req(request, "did"))
        return {"did": repo.did, "active": True, "rev": repo.latest_commit().rev}

    @get("/xrpc/com.atproto.sync.listRepos", sync_to_thread=False)
    def list_repos(request: Request[Any, Any, Any]) -> dict[str, Any]:
        _int(request, "limit", 500, 1, 1000)
        if _str(request, "cursor", required=False) is not None:
            return {"repos": []}  # one repo, no cursor ever handed out: any cursor is past the end
        repo = current()
        head = repo.latest_commit()
        return {"repos": [{"did": repo.did, "head": head.cid, "rev": head.rev, "active": True}]}

    @get("/xrpc/com.atproto.sync.getRepo")
    async def get_repo(request: Request[Any, Any, Any]) -> Response[bytes]:
        repo = check_did(_req(request, "did"))
        since = _str(request, "since", required=False)
        if since is not None and not is_tid(since):
            raise InvalidRequest("since must be a TID (a repo rev)")
        return Response(await repo.export_car(since=since), media_type=CAR_MEDIA_TYPE)

    @get("/xrpc/com.atproto.sync.getRecord")
    async def sync_get_record(request: Request[Any, Any, Any]) -> Response[bytes]:
        repo = check_did(_req(request, "did"))
        collection, rkey = _nsid(request, "collection"), _rkey(request, "rkey")
        return Response(await repo.get_record_proof_car(collection, rkey), media_type=CAR_MEDIA_TYPE)

    @websocket("/xrpc/com.atproto.sync.subscribeRepos")
    async def subscribe_repos(socket: WebSocket[Any, Any, Any]) -> None:
        await socket.accept()
        raw = socket.query_params.get("cursor")
        cursor: int | None = None
        if raw is not None:
            try:
                cursor = int(raw)
                if cursor < 0:
                    raise ValueError
            except ValueError:
                await socket.send_bytes(error_frame("InvalidRequest", "cursor must be a non-negative integer"))
                await socket.close(code=1008)
                return
        await _stream(socket, current(), cursor)

    handlers: list[BaseRouteHandler] = [
        health,
        describe_server,
        describe_repo,
        get_record,
        list_records,
        get_latest_commit,
        get_repo_status,
        list_repos,
        get_repo,
        sync_get_record,
        subscribe_repos,
    ]
    return Router(
        path="/",
        route_handlers=handlers,
        exception_handlers=exception_handlers(),
    )


async def _stream(socket: WebSocket[Any, Any, Any], repo: Repo, cursor: int | None) -> None:
    """Send frames until the stream ends or the client goes away, whichever is first."""

    async def pump() -> None:
        async for frame in subscribe_frames(repo, cursor):
            await socket.send_bytes(frame)

    async def until_disconnect() -> None:
        # Consumers send nothing; this only notices the connection closing while we wait.
        while (await socket.receive())["type"] != "websocket.disconnect":
            pass

    sender = asyncio.create_task(pump())
    watcher = asyncio.create_task(until_disconnect())
    try:
        done, _ = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await cancel_and_wait(sender, watcher)
    if sender in done and watcher not in done:
        exc = sender.exception()
        if exc is not None:
            log.warning("firehose stream ended with %s", type(exc).__name__)
        with contextlib.suppress(Exception):
            await socket.close(code=1000 if exc is None else 1011)


__all__ = ["CAR_MEDIA_TYPE", "RepoProvider", "default_did_document", "repo_routes"]
