"""The XRPC read/sync endpoints, in process (litestar's AsyncTestClient)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from atcr.dagcbor import decode, read_car
from hold.repo import Create, Repo, ensure_bootstrapped
from hold.repo.routes import repo_routes
from hold.settings import HoldSettings
from tests.unit.hold_repo.support import HOLD_DID, LAYER, OWNER_DID, layer_record

Client = AsyncTestClient[Litestar]


@pytest.fixture
async def client(repo: Repo) -> AsyncIterator[Client]:
    app = Litestar(
        route_handlers=[repo_routes(repo, HoldSettings(public_url="https://hold.example.com"))], logging_config=None
    )
    async with AsyncTestClient(app=app) as c:
        yield c


async def _xrpc(client: Client, method: str, **params: Any) -> Any:
    return await client.get(f"/xrpc/{method}", params=params)


async def test_health_and_describe_server(client: Client) -> None:
    r = await _xrpc(client, "_health")
    assert r.status_code == 200 and "version" in r.json()
    r = await _xrpc(client, "com.atproto.server.describeServer")
    assert r.json() == {"did": HOLD_DID, "availableUserDomains": [], "inviteCodeRequired": True}


async def test_describe_repo(client: Client, repo: Repo) -> None:
    await ensure_bootstrapped(repo, OWNER_DID, public=True, allow_all_crew=False)
    r = await _xrpc(client, "com.atproto.repo.describeRepo", repo=HOLD_DID)
    body = r.json()
    assert r.status_code == 200
    assert body["did"] == HOLD_DID and body["collections"] == ["io.atcr.hold.captain", "io.atcr.hold.crew"]
    assert body["didDoc"]["id"] == HOLD_DID
    assert body["didDoc"]["verificationMethod"][0]["publicKeyMultibase"] == repo.signing_key.removeprefix("did:key:")
    assert body["didDoc"]["service"][0]["serviceEndpoint"] == "https://hold.example.com"


async def test_get_and_list_records(client: Client, repo: Repo) -> None:
    info = await repo.apply_writes([Create(LAYER, f"r{i:02d}", layer_record(i)) for i in range(12)])
    r = await _xrpc(client, "com.atproto.repo.getRecord", repo=HOLD_DID, collection=LAYER, rkey="r03")
    assert r.status_code == 200
    assert r.json() == {"uri": f"at://{HOLD_DID}/{LAYER}/r03", "cid": info.ops[3].cid, "value": layer_record(3)}
    r = await _xrpc(
        client, "com.atproto.repo.getRecord", repo=HOLD_DID, collection=LAYER, rkey="r03", cid=info.ops[4].cid
    )
    assert r.status_code == 400 and r.json()["error"] == "RecordNotFound"

    r = await _xrpc(client, "com.atproto.repo.listRecords", repo=HOLD_DID, collection=LAYER, limit=5)
    body = r.json()
    assert [x["uri"].rsplit("/", 1)[1] for x in body["records"]] == ["r11", "r10", "r09", "r08", "r07"]
    assert body["cursor"] == "r07"
    r = await _xrpc(client, "com.atproto.repo.listRecords", repo=HOLD_DID, collection=LAYER, cursor="r02")
    assert [x["uri"].rsplit("/", 1)[1] for x in r.json()["records"]] == ["r01", "r00"] and "cursor" not in r.json()
    r = await _xrpc(client, "com.atproto.repo.listRecords", repo=HOLD_DID, collection=LAYER, reverse="true", limit=2)
    assert [x["value"]["size"] for x in r.json()["records"]] == [1000, 1001]


@pytest.mark.parametrize(
    ("method", "params", "status", "error"),
    [
        ("com.atproto.repo.getRecord", {"repo": HOLD_DID, "collection": LAYER, "rkey": "nope"}, 400, "RecordNotFound"),
        (
            "com.atproto.repo.getRecord",
            {"repo": "did:plc:other", "collection": LAYER, "rkey": "x"},
            400,
            "RepoNotFound",
        ),
        ("com.atproto.repo.getRecord", {"repo": HOLD_DID, "collection": LAYER}, 400, "InvalidRequest"),
        ("com.atproto.repo.getRecord", {"repo": HOLD_DID, "collection": "x", "rkey": "y"}, 400, "InvalidRequest"),
        ("com.atproto.repo.listRecords", {"repo": HOLD_DID, "collection": LAYER, "limit": 101}, 400, "InvalidRequest"),
        ("com.atproto.repo.listRecords", {"repo": HOLD_DID, "collection": LAYER, "limit": "x"}, 400, "InvalidRequest"),
        (
            "com.atproto.repo.listRecords",
            {"repo": HOLD_DID, "collection": LAYER, "cursor": "a/b"},
            400,
            "InvalidRequest",
        ),
        ("com.atproto.repo.listRecords", {"repo": HOLD_DID}, 400, "InvalidRequest"),
        ("com.atproto.repo.describeRepo", {"repo": "did:web:elsewhere.example"}, 400, "RepoNotFound"),
        ("com.atproto.sync.getRepo", {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, 400, "RepoNotFound"),
        ("com.atproto.sync.getRepo", {"did": "not-a-did"}, 400, "InvalidRequest"),
        ("com.atproto.sync.getRepo", {"did": HOLD_DID, "since": "yesterday"}, 400, "InvalidRequest"),
        ("com.atproto.sync.getLatestCommit", {}, 400, "InvalidRequest"),
        ("com.atproto.sync.getRepoStatus", {"did": "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"}, 400, "RepoNotFound"),
    ],
)
async def test_errors_are_xrpc_json(
    client: Client, method: str, params: dict[str, Any], status: int, error: str
) -> None:
    r = await _xrpc(client, method, **params)
    assert r.status_code == status
    body = r.json()
    assert body["error"] == error and isinstance(body["message"], str)


async def test_sync_endpoints(client: Client, repo: Repo) -> None:
    info = await repo.apply_writes([Create(LAYER, "a", layer_record(1))])
    r = await _xrpc(client, "com.atproto.sync.getLatestCommit", did=HOLD_DID)
    assert r.json() == {"cid": info.cid, "rev": info.rev}
    r = await _xrpc(client, "com.atproto.sync.getRepoStatus", did=HOLD_DID)
    assert r.json() == {"did": HOLD_DID, "active": True, "rev": info.rev}
    r = await _xrpc(client, "com.atproto.sync.listRepos")
    assert r.json() == {"repos": [{"did": HOLD_DID, "head": info.cid, "rev": info.rev, "active": True}]}
    assert (await _xrpc(client, "com.atproto.sync.listRepos", cursor="x")).json() == {"repos": []}

    r = await _xrpc(client, "com.atproto.sync.getRepo", did=HOLD_DID)
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.ipld.car"
    assert r.content == await repo.export_car()
    roots, _ = read_car(r.content)
    assert str(roots[0]) == info.cid

    r = await _xrpc(client, "com.atproto.sync.getRecord", did=HOLD_DID, collection=LAYER, rkey="a")
    roots, blocks = read_car(r.content)
    assert str(roots[0]) == info.cid and layer_record(1) in [decode(b) for b in blocks.values()]
    # A missing record is a proof of absence, as the reference PDS answers: 200, no record block.
    r = await _xrpc(client, "com.atproto.sync.getRecord", did=HOLD_DID, collection=LAYER, rkey="zzz")
    assert r.status_code == 200 and str(read_car(r.content)[0][0]) == info.cid
