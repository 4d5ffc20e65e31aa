"""The repository: commits, reads, errors, durability, atomicity, garbage, the event log."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from atproto_crypto.verify import verify_signature
from atproto_firehose import parse_subscribe_repos_message
from atproto_subscription.frames import Frame

from atcr.dagcbor import Cid, decode, encode, read_car
from atcr.syntax import is_tid
from hold.repo import Create, Delete, EcKeySigner, Put, Repo, Update
from hold.repo.errors import (
    InvalidKey,
    InvalidParams,
    InvalidRecord,
    InvalidSwap,
    RecordAlreadyExists,
    RecordNotFound,
    RepoLocked,
    RepoMismatch,
)
from hold.repo.tid import decode_tid
from tests.unit.hold_repo.support import CREW, HOLD_DID, LAYER, layer_record, make_signer

EMPTY_ROOT = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
REPO_ROOT = Path(__file__).resolve().parents[3]


def _commit_of(car: bytes) -> tuple[Cid, dict[str, Any], dict[Cid, bytes]]:
    roots, blocks = read_car(car)
    commit = decode(blocks[roots[0]])
    return roots[0], commit, blocks


def _verify_commit(commit: dict[str, Any], did_key: str) -> bool:
    unsigned = {k: v for k, v in commit.items() if k != "sig"}
    return bool(verify_signature(did_key, encode(unsigned), commit["sig"]))


def _db_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# --- a new repository ------------------------------------------------------------------------------


@pytest.mark.parametrize("curve", ["k256", "p256"])
async def test_new_repo_is_an_empty_signed_v3_commit(tmp_path: Path, curve: str) -> None:
    signer = make_signer(curve)
    repo = await Repo.open(tmp_path / "r.db", HOLD_DID, signer)
    try:
        head = repo.latest_commit()
        assert is_tid(head.rev)
        root, commit, blocks = _commit_of(await repo.export_car())
        assert str(root) == head.cid
        assert set(commit) == {"did", "version", "data", "rev", "prev", "sig"}
        assert commit["did"] == HOLD_DID and commit["version"] == 3 and commit["prev"] is None
        assert str(commit["data"]) == EMPTY_ROOT
        assert len(commit["sig"]) == 64
        assert _verify_commit(commit, signer.did_key)
        assert not _verify_commit(commit, make_signer(curve).did_key)
        assert len(blocks) == 2  # the commit and the empty root node
    finally:
        await repo.close()


async def test_creation_events_are_identity_account_commit(repo: Repo) -> None:
    events = await repo.events_after(0)
    assert [seq for seq, _ in events] == [1, 2, 3]
    kinds = [Frame.from_bytes(frame).header.t for _, frame in events]
    assert kinds == ["#identity", "#account", "#commit"]
    for _, frame in events:
        parsed = parse_subscribe_repos_message(Frame.from_bytes(frame))
        assert getattr(parsed, "did", None) == HOLD_DID or getattr(parsed, "repo", None) == HOLD_DID
    commit = parse_subscribe_repos_message(Frame.from_bytes(events[2][1]))
    assert commit.ops == [] and commit.since is None


# --- writes and reads ------------------------------------------------------------------------------


async def test_create_update_delete_and_read_back(repo: Repo) -> None:
    first = repo.latest_commit()
    info = await repo.apply_writes([Create(LAYER, None, layer_record(1)), Put(CREW, "alice", _crew("alice"))])
    assert info.since == first.rev and decode_tid(info.rev) > decode_tid(first.rev)
    assert info.prev_data == EMPTY_ROOT and info.seq == 4
    layer_op, crew_op = info.ops
    assert layer_op.action == "create" and is_tid(layer_op.rkey) and layer_op.prev is None
    assert crew_op.action == "create" and crew_op.path == f"{CREW}/alice"
    got = await repo.get_record(LAYER, layer_op.rkey)
    assert got is not None and got[0] == layer_op.cid
    assert got[1] == layer_record(1)

    updated = await repo.apply_writes([Update(CREW, "alice", _crew("alice", tier="bosun"))])
    (op,) = updated.ops
    assert op.action == "update" and op.prev == crew_op.cid and op.cid != crew_op.cid
    got = await repo.get_record(CREW, "alice")
    assert got is not None and got[1]["tier"] == "bosun"

    put = await repo.apply_writes([Put(CREW, "alice", _crew("alice", tier="deckhand"))])
    assert put.ops[0].action == "update"

    deleted = await repo.apply_writes([Delete(CREW, "alice")])
    assert deleted.ops[0].action == "delete" and deleted.ops[0].cid is None and deleted.ops[0].prev == put.ops[0].cid
    assert await repo.get_record(CREW, "alice") is None
    assert repo.latest_commit().cid == deleted.cid


def _crew(member: str, **extra: Any) -> dict[str, Any]:
    return {
        "$type": CREW,
        "member": f"did:plc:{member:a<24}",
        "role": "write",
        "permissions": ["blob:read", "blob:write"],
        "addedAt": "2025-01-01T00:00:00.000Z",
        **extra,
    }


async def test_unknown_collections_are_stored_as_given_and_type_is_added(repo: Repo) -> None:
    record = {"displayName": "hold", "links": [{"$link": EMPTY_ROOT}], "raw": {"$bytes": "AAEC"}}
    await repo.apply_writes([Create("app.bsky.actor.profile", "self", record)])
    got = await repo.get_record("app.bsky.actor.profile", "self")
    assert got is not None
    assert got[1] == {"$type": "app.bsky.actor.profile", **record}


@pytest.mark.parametrize(
    ("write", "error"),
    [
        (Create(LAYER, "x", {**layer_record(1), "size": -1}), InvalidRecord),
        (Create(LAYER, "x", {k: v for k, v in layer_record(1).items() if k != "digest"}), InvalidRecord),
        (Create(LAYER, "x", {**layer_record(1), "$type": CREW}), InvalidRecord),
        (Create("app.bsky.feed.post", "x", {"score": 0.5}), InvalidRecord),
        (Create("not an nsid", "x", {}), InvalidKey),
        (Create(LAYER, "bad/key", layer_record(1)), InvalidKey),
        (Create(LAYER, "..", layer_record(1)), InvalidKey),
        (Update(CREW, "nobody", _crew("nobody")), RecordNotFound),
        (Delete(CREW, "nobody"), RecordNotFound),
        (Put(CREW, "nobody", _crew("nobody"), swap_record=EMPTY_ROOT), InvalidSwap),
        (Put(CREW, "nobody", _crew("nobody"), swap_record="not-a-cid"), InvalidParams),
    ],
)
async def test_bad_writes_change_nothing(repo: Repo, write: Any, error: type[Exception]) -> None:
    head, seq = repo.latest_commit(), repo.last_seq
    with pytest.raises(error):
        await repo.apply_writes([write])
    assert repo.latest_commit() == head and repo.last_seq == seq


async def test_conflicts_and_swaps(repo: Repo) -> None:
    info = await repo.apply_writes([Create(CREW, "bob", _crew("bob"))])
    cid = info.ops[0].cid
    with pytest.raises(RecordAlreadyExists):
        await repo.apply_writes([Create(CREW, "bob", _crew("bob"))])
    with pytest.raises(InvalidSwap):
        await repo.apply_writes([Update(CREW, "bob", _crew("bob", tier="x"), swap_record=EMPTY_ROOT)])
    ok = await repo.apply_writes([Update(CREW, "bob", _crew("bob", tier="x"), swap_record=cid)])
    with pytest.raises(InvalidSwap):
        await repo.apply_writes([Delete(CREW, "bob")], swap_commit=info.cid)
    await repo.apply_writes([Delete(CREW, "bob", swap_record=ok.ops[0].cid)], swap_commit=ok.cid)
    # A failing write in a batch takes the whole batch down.
    with pytest.raises(RecordNotFound):
        await repo.apply_writes([Create(CREW, "carol", _crew("carol")), Delete(CREW, "bob")])
    assert await repo.get_record(CREW, "carol") is None
    with pytest.raises(InvalidKey):
        await repo.apply_writes([Create(CREW, "dup", _crew("d")), Put(CREW, "dup", _crew("d"))])
    with pytest.raises(InvalidParams):
        await repo.apply_writes([Create(LAYER, None, layer_record(i)) for i in range(201)])
    with pytest.raises(InvalidParams):
        await repo.apply_writes([])


async def test_list_records_pages_in_both_orders(repo: Repo) -> None:
    rkeys = [f"k{i:03d}" for i in range(25)]
    await repo.apply_writes([Create(LAYER, k, layer_record(i)) for i, k in enumerate(rkeys)])
    await repo.apply_writes([Create(CREW, "zed", _crew("zed"))])

    async def collect(reverse: bool) -> list[str]:
        out: list[str] = []
        cursor = None
        while True:
            page = await repo.list_records(LAYER, limit=10, cursor=cursor, reverse=reverse)
            assert len(page.records) <= 10
            out += [r.rkey for r in page.records]
            if page.cursor is None:
                return out
            cursor = page.cursor

    assert await collect(False) == sorted(rkeys, reverse=True)  # newest (highest) first, as the PDS
    assert await collect(True) == rkeys
    page = await repo.list_records(LAYER, limit=25)
    assert page.cursor is None and len(page.records) == 25
    first = page.records[-1]
    got = await repo.get_record(LAYER, first.rkey)
    assert got == (first.cid, first.value)
    assert await repo.list_collections() == [CREW, LAYER]
    assert (await repo.list_records("io.atcr.hold.stats")).records == []
    with pytest.raises(InvalidParams):
        await repo.list_records(LAYER, limit=0)


async def test_concurrent_writers_are_serialized(repo: Repo) -> None:
    infos = await asyncio.gather(*(repo.apply_writes([Create(LAYER, None, layer_record(i))]) for i in range(30)))
    infos = sorted(infos, key=lambda i: i.seq)
    assert [i.seq for i in infos] == list(range(4, 34))
    revs = [i.rev for i in infos]
    assert revs == sorted(revs) and len(set(revs)) == 30
    for before, after in zip(infos, infos[1:], strict=False):
        assert after.since == before.rev and after.prev_data == before.data
    assert len((await repo.list_records(LAYER, limit=100)).records) == 30


async def test_writers_cancelled_mid_commit_leave_memory_and_disk_in_step(
    repo: Repo, repo_path: Path, signer: EcKeySigner
) -> None:
    """A caller that gives up (client gone, timeout) must not leave the head behind the database."""

    async def write(i: int) -> None:
        await repo.apply_writes([Create(LAYER, None, layer_record(i))])

    tasks = [asyncio.ensure_future(write(i)) for i in range(60)]
    for n, task in enumerate(tasks):  # cancel while commits are under way, at staggered moments
        await asyncio.sleep(0.0005 * (n % 4))
        task.cancel()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert any(isinstance(o, asyncio.CancelledError) for o in outcomes)

    after = await repo.apply_writes([Create(LAYER, None, layer_record(999))])  # still writable
    listed = (await repo.list_records(LAYER, limit=100)).records
    assert after.seq == 3 + len(listed)  # one commit event per surviving write, none lost or doubled
    head = repo.latest_commit()
    await repo.close()
    reopened = await Repo.open(repo_path, HOLD_DID, signer)
    try:
        assert reopened.latest_commit() == head
    finally:
        await reopened.close()


# --- durability and atomicity ----------------------------------------------------------------------


async def test_records_head_and_log_survive_a_restart(repo_path: Path, signer: EcKeySigner) -> None:
    repo = await Repo.open(repo_path, HOLD_DID, signer)
    info = await repo.apply_writes([Create(LAYER, "a", layer_record(1)), Create(LAYER, "b", layer_record(2))])
    car = await repo.export_car()
    await repo.close()

    again = await Repo.open(repo_path, HOLD_DID, signer)
    try:
        assert again.latest_commit().cid == info.cid and again.latest_commit().rev == info.rev
        assert again.last_seq == info.seq and again.first_seq == 1
        assert (await again.get_record(LAYER, "a")) == (info.ops[0].cid, layer_record(1))
        assert await again.export_car() == car
        replay = await again.events_after(0)
        assert [s for s, _ in replay] == [1, 2, 3, 4]
        nxt = await again.apply_writes([Delete(LAYER, "a")])
        assert nxt.since == info.rev and nxt.seq == info.seq + 1
    finally:
        await again.close()


async def test_reopening_with_another_did_is_refused(repo_path: Path, signer: EcKeySigner) -> None:
    repo = await Repo.open(repo_path, HOLD_DID, signer)
    await repo.close()
    with pytest.raises(RepoMismatch):
        await Repo.open(repo_path, "did:web:other.example.com", signer)


async def test_one_process_per_repository(repo: Repo, repo_path: Path, signer: EcKeySigner) -> None:
    """A second opener (another process, or by mistake this one) is refused, not forked."""
    with pytest.raises(RepoLocked):
        await Repo.open(repo_path, HOLD_DID, signer)
    await repo.apply_writes([Create(LAYER, "a", layer_record(1))])  # the first one is unaffected
    await repo.close()
    again = await Repo.open(repo_path, HOLD_DID, signer)
    await again.close()


async def test_a_failure_inside_the_transaction_keeps_the_previous_head(repo_path: Path, signer: EcKeySigner) -> None:
    repo = await Repo.open(repo_path, HOLD_DID, signer)
    good = await repo.apply_writes([Create(LAYER, "a", layer_record(1))])
    blocks_before = _db_rows(repo_path, "SELECT cid FROM blocks ORDER BY cid")

    def boom() -> None:
        raise RuntimeError("disk on fire")

    repo.store.before_commit = boom
    with pytest.raises(RuntimeError, match="disk on fire"):
        await repo.apply_writes([Create(LAYER, "b", layer_record(2)), Delete(LAYER, "a")])
    repo.store.before_commit = None
    assert repo.latest_commit().cid == good.cid and repo.last_seq == good.seq
    assert await repo.get_record(LAYER, "b") is None and await repo.get_record(LAYER, "a") is not None
    assert _db_rows(repo_path, "SELECT cid FROM blocks ORDER BY cid") == blocks_before
    assert [s for s, _ in await repo.events_after(0)] == [1, 2, 3, 4]
    after = await repo.apply_writes([Create(LAYER, "b", layer_record(2))])
    assert after.since == good.rev and after.seq == good.seq + 1
    await repo.close()

    again = await Repo.open(repo_path, HOLD_DID, signer)
    try:
        assert again.latest_commit().cid == after.cid
    finally:
        await again.close()


def test_a_process_killed_mid_commit_leaves_the_previous_head(tmp_path: Path) -> None:
    """A real crash: the child process dies (os._exit) between writing and COMMIT."""
    db = tmp_path / "crash.db"
    key = tmp_path / "key.pem"
    child = textwrap.dedent(
        f"""
        import asyncio, os, sys
        from pathlib import Path
        from cryptography.hazmat.primitives.asymmetric import ec
        from atcr.keys import load_or_create_ec_key
        from hold.repo import Create, EcKeySigner, Repo
        from tests.unit.hold_repo.support import HOLD_DID, LAYER, layer_record

        async def main():
            signer = EcKeySigner(load_or_create_ec_key(Path({str(key)!r}), ec.SECP256K1()))
            repo = await Repo.open({str(db)!r}, HOLD_DID, signer)
            info = await repo.apply_writes([Create(LAYER, "kept", layer_record(1))])
            print(info.cid, flush=True)
            repo.store.before_commit = lambda: os._exit(3)
            await repo.apply_writes([Create(LAYER, "lost", layer_record(2))])

        asyncio.run(main())
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    kept_cid = proc.stdout.strip()

    async def check() -> None:
        from cryptography.hazmat.primitives.asymmetric import ec

        from atcr.keys import load_or_create_ec_key

        repo = await Repo.open(db, HOLD_DID, EcKeySigner(load_or_create_ec_key(key, ec.SECP256K1())))
        try:
            assert repo.latest_commit().cid == kept_cid
            assert await repo.get_record(LAYER, "kept") is not None
            assert await repo.get_record(LAYER, "lost") is None
            assert repo.last_seq == 4
            await repo.apply_writes([Create(LAYER, "after", layer_record(3))])
        finally:
            await repo.close()

    asyncio.run(check())


# --- storage hygiene -------------------------------------------------------------------------------


async def test_no_orphan_blocks_after_churn(repo: Repo, repo_path: Path) -> None:
    await repo.apply_writes([Create(LAYER, f"r{i}", layer_record(i)) for i in range(60)])
    await repo.apply_writes([Update(LAYER, f"r{i}", layer_record(i + 100)) for i in range(0, 60, 3)])
    await repo.apply_writes([Delete(LAYER, f"r{i}") for i in range(1, 60, 3)])
    # Two records with identical content share one block; deleting one must keep it.
    await repo.apply_writes([Create(CREW, "twin1", _crew("twin")), Create(CREW, "twin2", _crew("twin"))])
    await repo.apply_writes([Delete(CREW, "twin1")])
    assert await repo.get_record(CREW, "twin2") is not None
    _, _, reachable = _commit_of(await repo.export_car())
    stored = {Cid(row[0]) for row in _db_rows(repo_path, "SELECT cid FROM blocks")}
    assert stored == set(reachable)


async def test_partial_export_since_a_rev(repo: Repo) -> None:
    first = await repo.apply_writes([Create(LAYER, "a", layer_record(1))])
    second = await repo.apply_writes([Create(LAYER, "b", layer_record(2))])
    root, _, blocks = _commit_of(await repo.export_car(since=first.rev))
    assert str(root) == second.cid
    assert Cid.parse(second.ops[0].cid or "") in blocks
    assert Cid.parse(first.ops[0].cid or "") not in blocks
    root, _, blocks = _commit_of(await repo.export_car(since=second.rev))
    assert list(blocks) == [root]


async def test_record_proof_car(repo: Repo) -> None:
    info = await repo.apply_writes([Create(LAYER, f"r{i}", layer_record(i)) for i in range(40)])
    root, commit, blocks = _commit_of(await repo.get_record_proof_car(LAYER, "r7"))
    assert str(root) == info.cid and Cid.parse(info.ops[7].cid or "") in blocks
    root, _, absent = _commit_of(await repo.get_record_proof_car(LAYER, "nope"))
    assert str(root) == info.cid and commit["data"] in absent
    assert all(decode(b) != layer_record(7) for b in absent.values())


# --- the event log ---------------------------------------------------------------------------------


async def test_commit_events_carry_ops_and_blocks(repo: Repo) -> None:
    created = await repo.apply_writes([Create(CREW, "e", _crew("e")), Create(LAYER, "l", layer_record(1))])
    updated = await repo.apply_writes([Update(CREW, "e", _crew("e", tier="t")), Delete(LAYER, "l")])
    ((_, frame),) = await repo.events_after(updated.seq - 1)
    event = parse_subscribe_repos_message(Frame.from_bytes(frame))
    assert event.seq == updated.seq and event.repo == HOLD_DID
    assert event.rev == updated.rev and event.since == created.rev
    assert str(event.commit) == updated.cid and str(event.prev_data) == created.data
    ops = [(o.action, o.path, str(o.cid) if o.cid else None, str(o.prev)) for o in event.ops]
    assert ops == [
        ("update", f"{CREW}/e", updated.ops[0].cid, created.ops[0].cid),
        ("delete", f"{LAYER}/l", None, created.ops[1].cid),
    ]
    roots, blocks = read_car(event.blocks)
    assert [str(r) for r in roots] == [updated.cid]
    assert Cid.parse(updated.ops[0].cid or "") in blocks
    assert Cid.parse(updated.data) in blocks


async def test_old_events_are_pruned(repo_path: Path, signer: EcKeySigner) -> None:
    repo = await Repo.open(repo_path, HOLD_DID, signer, event_retention=5)
    try:
        for i in range(10):
            await repo.apply_writes([Create(LAYER, f"r{i}", layer_record(i))])
        assert repo.last_seq == 13 and repo.first_seq == 9
        assert [s for s, _ in await repo.events_after(0)] == [9, 10, 11, 12, 13]
    finally:
        await repo.close()
    again = await Repo.open(repo_path, HOLD_DID, signer, event_retention=5)
    try:
        assert (again.first_seq, again.last_seq) == (9, 13)
    finally:
        await again.close()
