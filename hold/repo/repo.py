"""The hold's own ATProto repository: signed commits over an MST, stored in SQLite.

Writes are serialized twice over: an asyncio lock orders callers (so the in-memory head is
never raced), and a single writer thread owns the SQLite write connection. A commit's blocks,
the new root, the record index rows and the firehose event land in one SQLite transaction,
so after a crash the repository is at the old head or the new one, and the event log agrees.

Records go in and come out in the JSON form of the data model (`{"$link"}`, `{"$bytes"}`,
blob objects), the form XRPC bodies and `atcr.lexicon` use.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from atcr.dagcbor import Cid, DagCborError, decode, encode, from_json, to_json, write_car
from atcr.errors import RecordValidationError
from atcr.lexicon import known_record_nsids, validate_record
from atcr.syntax import is_did, is_nsid, is_record_key
from hold.repo.errors import (
    CorruptRepo,
    InvalidCursor,
    InvalidKey,
    InvalidParams,
    InvalidRecord,
    InvalidSwap,
    MissingBlock,
    RecordAlreadyExists,
    RecordNotFound,
    RepoClosed,
    RepoError,
    RepoMismatch,
)
from hold.repo.firehose import REPLAY_BATCH, message_frame
from hold.repo.mst import MST, NodeCache, NodeStore, is_valid_key
from hold.repo.signing import RepoSigner
from hold.repo.storage import Store
from hold.repo.tid import TidClock

MAX_WRITES_PER_COMMIT = 200  # the firehose lexicon's limit on ops per #commit
DEFAULT_EVENT_RETENTION = 10_000
_TAIL = 512  # recent frames kept in memory so live subscribers rarely touch the database

Action = Literal["create", "update", "delete"]


# --- writes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Create:
    """A new record; fails if the key exists. `rkey=None` picks a fresh TID."""

    collection: str
    rkey: str | None
    record: Mapping[str, Any]


@dataclass(frozen=True)
class Update:
    """Replace an existing record; `swap_record` (a CID) makes it a compare-and-swap."""

    collection: str
    rkey: str
    record: Mapping[str, Any]
    swap_record: str | None = None


@dataclass(frozen=True)
class Put:
    """Create or replace (the `putRecord` semantics deterministic keys such as stats need)."""

    collection: str
    rkey: str
    record: Mapping[str, Any]
    swap_record: str | None = None


@dataclass(frozen=True)
class Delete:
    collection: str
    rkey: str
    swap_record: str | None = None


Write = Create | Update | Put | Delete


@dataclass(frozen=True)
class _Prepared:
    kind: Literal["create", "update", "put", "delete"]
    collection: str
    rkey: str
    cid: Cid | None = None
    data: bytes | None = None
    swap: Cid | None = None

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteOp:
    """One applied write, as the firehose reports it."""

    action: Action
    collection: str
    rkey: str
    cid: str | None  # the new record CID; None for deletes
    prev: str | None  # the record CID it replaced; None for creates

    @property
    def path(self) -> str:
        return f"{self.collection}/{self.rkey}"


@dataclass(frozen=True)
class CommitInfo:
    cid: str  # the commit block
    rev: str
    since: str | None  # the previous commit's rev
    data: str  # the MST root
    prev_data: str | None  # the previous MST root
    seq: int  # the firehose event that announced it
    ops: tuple[WriteOp, ...]


@dataclass(frozen=True)
class CommitRef:
    cid: str
    rev: str


@dataclass(frozen=True)
class RecordEntry:
    collection: str
    rkey: str
    cid: str
    value: dict[str, Any]


@dataclass(frozen=True)
class RecordPage:
    records: list[RecordEntry]
    cursor: str | None  # pass back to get the next page; None when this was the last


@dataclass(frozen=True)
class _Head:
    commit: Cid
    data: Cid
    rev: str


@dataclass
class _TxnResult:
    head: _Head
    info: CommitInfo
    frames: list[tuple[int, bytes]] = field(default_factory=list)
    first_seq: int = 1


def _now_iso(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _block_getter(conn: sqlite3.Connection) -> Callable[[Cid], bytes | None]:
    def get(cid: Cid) -> bytes | None:
        row = conn.execute("SELECT data FROM blocks WHERE cid = ?", (cid.raw,)).fetchone()
        return None if row is None else bytes(row[0])

    return get


_LIST_BASE = "SELECT r.rkey, r.cid, b.data FROM records r LEFT JOIN blocks b ON b.cid = r.cid WHERE r.collection = ?"
_LIST_SQL = {
    (False, False): _LIST_BASE + " ORDER BY r.rkey DESC LIMIT ?",
    (False, True): _LIST_BASE + " AND r.rkey < ? ORDER BY r.rkey DESC LIMIT ?",
    (True, False): _LIST_BASE + " ORDER BY r.rkey ASC LIMIT ?",
    (True, True): _LIST_BASE + " AND r.rkey > ? ORDER BY r.rkey ASC LIMIT ?",
}


def _parse_cid(value: str | None, what: str) -> Cid | None:
    if value is None:
        return None
    try:
        return Cid.parse(value)
    except ValueError:
        raise InvalidParams(f"{what}: not a CID: {value!r}") from None


# --- the repository ------------------------------------------------------------------------------


class Repo:
    """One DID's repository. Create with `await Repo.open(...)`; `await close()` at shutdown."""

    def __init__(
        self,
        store: Store,
        did: str,
        signer: RepoSigner,
        *,
        clock: TidClock,
        now: Callable[[], datetime],
        event_retention: int,
    ) -> None:
        self._store = store
        self.did = did
        self._signer = signer
        self._clock = clock
        self._now = now
        self._retention = event_retention
        self._cache = NodeCache()
        self._lock = asyncio.Lock()
        self._cond = asyncio.Condition()
        self._tail: deque[tuple[int, bytes]] = deque(maxlen=_TAIL)
        self._head: _Head | None = None
        self._last_seq = 0
        self._first_seq = 1
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        path: str | Path,
        did: str,
        signer: RepoSigner,
        *,
        event_retention: int = DEFAULT_EVENT_RETENTION,
        now: Callable[[], datetime] | None = None,
        clock: TidClock | None = None,
        readers: int = 4,
    ) -> Repo:
        """Open the repository at `path`, creating it (first commit, first events) if new.

        Raises RepoMismatch if the file holds another DID's repository: starting a hold with a
        different identity over old data must fail loudly, not fork the history.
        """
        if not is_did(did):
            raise RepoError(f"not a DID: {did!r}")
        if event_retention < 1:
            raise RepoError("event_retention must be at least 1")
        store = await Store.open(Path(path), readers)
        repo = cls(
            store,
            did,
            signer,
            clock=clock or TidClock(),
            now=now or (lambda: datetime.now(UTC)),
            event_retention=event_retention,
        )
        try:
            await repo._load_or_create()
        except BaseException:
            await store.close()
            raise
        return repo

    async def _load_or_create(self) -> None:
        def load(conn: sqlite3.Connection) -> tuple[_Head, int, int] | None:
            row = conn.execute("SELECT did, commit_cid, data_cid, rev FROM repo_root WHERE id = 1").fetchone()
            if row is None:
                return None
            if row[0] != self.did:
                raise RepoMismatch(
                    f"{self._store.path}: this repository belongs to {row[0]}, not {self.did} "
                    "(did the hold's public URL change? restore it, or start with a new data directory)"
                )
            first, last = conn.execute("SELECT MIN(seq), MAX(seq) FROM events").fetchone()
            last = last or 0
            return _Head(Cid(row[1]), Cid(row[2]), row[3]), first or last + 1, last

        loaded = await self._store.write(load)
        if loaded is not None:
            self._head, self._first_seq, self._last_seq = loaded
            self._clock.observe(self._head.rev)
            return
        rev = self._clock.next()
        now = _now_iso(self._now())
        result = await self._store.write(lambda conn: self._create_txn(conn, rev, now))
        self._apply_result(result)

    async def close(self) -> None:
        """Stop accepting work, end live subscriptions, close the database."""
        if self._closed:
            return
        self._closed = True
        async with self._cond:
            self._cond.notify_all()
        async with self._lock:
            await self._store.close()

    @property
    def store(self) -> Store:
        return self._store

    @property
    def signing_key(self) -> str:
        """The `did:key` commits are signed with."""
        return self._signer.did_key

    # --- writes ------------------------------------------------------------------------------

    def next_tid(self) -> str:
        """A fresh TID from the repository's clock (record keys for `tid`-keyed collections)."""
        return self._clock.next()

    def _prepare(self, write: Write) -> _Prepared:
        collection = write.collection
        rkey = write.rkey if write.rkey is not None else self._clock.next()
        if not is_nsid(collection):
            raise InvalidKey(f"invalid collection NSID: {collection!r}")
        if not is_record_key(rkey) or not is_valid_key(f"{collection}/{rkey}"):
            raise InvalidKey(f"invalid record key: {rkey!r}")
        swap = _parse_cid(getattr(write, "swap_record", None), "swap_record")
        if isinstance(write, Delete):
            return _Prepared("delete", collection, rkey, swap=swap)
        record = dict(write.record)
        rtype = record.setdefault("$type", collection)
        if rtype != collection:
            raise InvalidRecord(f"record $type {rtype!r} does not match collection {collection!r}")
        if collection in known_record_nsids():
            try:
                validate_record(collection, record)
            except RecordValidationError as exc:
                raise InvalidRecord(str(exc)) from None
        try:
            data = encode(from_json(record))
        except DagCborError as exc:
            raise InvalidRecord(str(exc)) from None
        kind: Literal["create", "update", "put"]
        kind = "create" if isinstance(write, Create) else "update" if isinstance(write, Update) else "put"
        return _Prepared(kind, collection, rkey, Cid.for_block(data), data, swap)

    async def apply_writes(self, writes: Sequence[Write], *, swap_commit: str | None = None) -> CommitInfo:
        """Apply `writes` as one signed commit, atomically; announce it on the firehose.

        `swap_commit` (a commit CID) refuses the commit unless the head is still that commit.
        Raises RecordAlreadyExists / RecordNotFound / InvalidSwap / InvalidRecord / InvalidKey
        without changing anything.
        """
        if not writes:
            raise InvalidParams("no writes")
        if len(writes) > MAX_WRITES_PER_COMMIT:
            raise InvalidParams(f"at most {MAX_WRITES_PER_COMMIT} writes per commit")
        prepared = [self._prepare(w) for w in writes]
        paths = [p.path for p in prepared]
        if len(set(paths)) != len(paths):
            raise InvalidKey("a record may be written only once per commit")
        swap = _parse_cid(swap_commit, "swap_commit")
        async with self._lock:
            if self._closed:
                raise RepoClosed()
            head = self._require_head()
            if swap is not None and swap != head.commit:
                raise InvalidSwap(f"commit is at {head.commit}, not {swap}")
            rev = self._clock.next()
            now = _now_iso(self._now())
            seq = self._last_seq + 1
            result = await self._committed(
                self._store.write(lambda conn: self._write_txn(conn, head, prepared, rev=rev, seq=seq, now=now))
            )
        async with self._cond:
            self._cond.notify_all()
        return result.info

    async def _committed(self, write: Coroutine[Any, Any, _TxnResult]) -> _TxnResult:
        """Run a commit and take its result into memory, even if the caller is cancelled.

        The transaction runs in the writer thread and commits whatever happens to the awaiting
        task; if a cancellation skipped `_apply_result`, the in-memory head would fall behind the
        database and every later write would fail. So a cancelled caller still waits (holding
        the repo lock) for the commit, applies it, and only then sees its CancelledError.
        """
        task = asyncio.ensure_future(write)
        cancelled = False
        while not task.done():
            try:
                await asyncio.wait({task})  # a cancelled caller raises here; the write goes on
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            if not task.cancelled() and task.exception() is None:
                self._apply_result(task.result())
            raise asyncio.CancelledError()
        result = task.result()  # the write's own error, if any
        self._apply_result(result)
        return result

    def _apply_result(self, result: _TxnResult) -> None:
        self._head = result.head
        for seq, frame in result.frames:
            self._tail.append((seq, frame))
            self._last_seq = seq
        self._first_seq = result.first_seq
        while self._tail and self._tail[0][0] < self._first_seq:
            self._tail.popleft()

    def _require_head(self) -> _Head:
        if self._head is None:
            raise RepoClosed()
        return self._head

    # --- transactions (writer thread) --------------------------------------------------------

    def _sign_commit(self, data: Cid, rev: str) -> tuple[Cid, bytes]:
        unsigned: dict[str, Any] = {"did": self.did, "version": 3, "data": data, "rev": rev, "prev": None}
        sig = self._signer.sign(encode(unsigned))
        if len(sig) != 64:
            raise RepoError("the signer must return a 64-byte compact signature")
        block = encode({**unsigned, "sig": sig})
        return Cid.for_block(block), block

    def _insert_event(self, conn: sqlite3.Connection, seq: int, kind: str, now: str, body: dict[str, Any]) -> bytes:
        body = {**body, "seq": seq, "time": now}
        frame = message_frame(kind, body)
        conn.execute("INSERT INTO events (seq, kind, time, frame) VALUES (?, ?, ?, ?)", (seq, kind, now, frame))
        return frame

    def _prune_events(self, conn: sqlite3.Connection, last_seq: int) -> int:
        cutoff = last_seq - self._retention
        if cutoff > 0:
            conn.execute("DELETE FROM events WHERE seq <= ?", (cutoff,))
        first = conn.execute("SELECT MIN(seq) FROM events").fetchone()[0]
        return int(first) if first is not None else last_seq + 1

    def _create_txn(self, conn: sqlite3.Connection, rev: str, now: str) -> _TxnResult:
        """The first commit of an empty repository, plus #identity and #account events."""
        nodes = NodeStore(_block_getter(conn), self._cache)
        data, node_blocks = MST.empty(nodes).finalize()
        commit_cid, commit_block = self._sign_commit(data, rev)
        blocks = {**node_blocks, commit_cid: commit_block}
        conn.executemany(
            "INSERT OR IGNORE INTO blocks (cid, data, rev) VALUES (?, ?, ?)",
            [(c.raw, b, rev) for c, b in blocks.items()],
        )
        conn.execute(
            "INSERT INTO repo_root (id, did, commit_cid, data_cid, rev, updated_at) VALUES (1, ?, ?, ?, ?, ?)",
            (self.did, commit_cid.raw, data.raw, rev, now),
        )
        frames = [
            (1, self._insert_event(conn, 1, "#identity", now, {"did": self.did})),
            (2, self._insert_event(conn, 2, "#account", now, {"did": self.did, "active": True})),
        ]
        car = write_car(commit_cid, [(commit_cid, commit_block), *node_blocks.items()])
        body = self._commit_body(commit_cid, rev, since=None, prev_data=None, car=car, ops=[])
        frames.append((3, self._insert_event(conn, 3, "#commit", now, body)))
        head = _Head(commit_cid, data, rev)
        info = CommitInfo(str(commit_cid), rev, None, str(data), None, 3, ())
        return _TxnResult(head, info, frames, 1)

    def _commit_body(
        self,
        commit: Cid,
        rev: str,
        *,
        since: str | None,
        prev_data: Cid | None,
        car: bytes,
        ops: list[dict[str, Any]],
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "repo": self.did,
            "commit": commit,
            "rev": rev,
            "since": since,
            "blocks": car,
            "ops": ops,
            "blobs": [],
            "rebase": False,
            "tooBig": False,
        }
        if prev_data is not None:
            body["prevData"] = prev_data
        return body

    def _write_txn(
        self, conn: sqlite3.Connection, head: _Head, writes: list[_Prepared], *, rev: str, seq: int, now: str
    ) -> _TxnResult:
        stored = conn.execute("SELECT commit_cid FROM repo_root WHERE id = 1").fetchone()
        if stored is None or Cid(stored[0]) != head.commit:
            raise CorruptRepo("the stored head is not the one this process wrote: refusing to fork the repo")
        nodes = NodeStore(_block_getter(conn), self._cache)
        mst = MST.load(nodes, head.data)
        ops: list[tuple[Action, _Prepared, Cid | None]] = []
        record_blocks: dict[Cid, bytes] = {}
        for w in writes:
            current = mst.get(w.path)
            if w.swap is not None and current != w.swap:
                raise InvalidSwap(f"{w.path} is at {current}, not {w.swap}")
            if w.kind == "delete":
                if current is None:
                    raise RecordNotFound(f"no record at {w.path}")
                mst = mst.delete(w.path)
                ops.append(("delete", w, current))
                continue
            if w.kind == "create" and current is not None:
                raise RecordAlreadyExists(f"a record already exists at {w.path}")
            if w.kind == "update" and current is None:
                raise RecordNotFound(f"no record at {w.path}")
            assert w.cid is not None and w.data is not None
            mst = mst.put(w.path, w.cid)
            record_blocks[w.cid] = w.data
            ops.append(("create" if current is None else "update", w, current))

        data, node_blocks = mst.finalize()
        commit_cid, commit_block = self._sign_commit(data, rev)
        new_blocks = {**node_blocks, **record_blocks, commit_cid: commit_block}
        conn.executemany(
            "INSERT OR IGNORE INTO blocks (cid, data, rev) VALUES (?, ?, ?)",
            [(c.raw, b, rev) for c, b in new_blocks.items()],
        )
        for action, w, _prev in ops:
            if action == "delete":
                conn.execute("DELETE FROM records WHERE collection = ? AND rkey = ?", (w.collection, w.rkey))
            else:
                assert w.cid is not None
                conn.execute(
                    "INSERT OR REPLACE INTO records (collection, rkey, cid, rev) VALUES (?, ?, ?, ?)",
                    (w.collection, w.rkey, w.cid.raw, rev),
                )

        # Blocks no longer reachable: replaced tree nodes, the old commit, and record blocks
        # no other record shares (identical records share one block).
        garbage = {c for c in mst.dropped if c not in node_blocks}
        if head.commit != commit_cid:
            garbage.add(head.commit)
        for _action, _w, prev in ops:
            if prev is not None and prev not in record_blocks:
                shared = conn.execute("SELECT 1 FROM records WHERE cid = ? LIMIT 1", (prev.raw,)).fetchone()
                if shared is None:
                    garbage.add(prev)
        conn.executemany("DELETE FROM blocks WHERE cid = ?", [(c.raw,) for c in garbage])
        conn.execute(
            "UPDATE repo_root SET commit_cid = ?, data_cid = ?, rev = ?, updated_at = ? WHERE id = 1",
            (commit_cid.raw, data.raw, rev, now),
        )

        # The event carries the new blocks plus every node a consumer needs to check the
        # commit by inverting its ops (sync v1.1 "covering proofs").
        proof: set[Cid] = set(node_blocks)
        for _action, w, _prev in ops:
            proof |= mst.covering_cids(w.path)
        car_blocks = [(commit_cid, commit_block)]
        car_blocks += [(c, node_blocks[c] if c in node_blocks else nodes.block(c)) for c in sorted(proof)]
        car_blocks += list(record_blocks.items())
        wire_ops: list[dict[str, Any]] = []
        for action, w, prev in ops:
            op: dict[str, Any] = {"action": action, "path": w.path, "cid": None if action == "delete" else w.cid}
            if action != "create":
                op["prev"] = prev
            wire_ops.append(op)
        car = write_car(commit_cid, car_blocks)
        body = self._commit_body(commit_cid, rev, since=head.rev, prev_data=head.data, car=car, ops=wire_ops)
        frame = self._insert_event(conn, seq, "#commit", now, body)
        first_seq = self._prune_events(conn, seq)

        info = CommitInfo(
            cid=str(commit_cid),
            rev=rev,
            since=head.rev,
            data=str(data),
            prev_data=str(head.data),
            seq=seq,
            ops=tuple(
                WriteOp(
                    action,
                    w.collection,
                    w.rkey,
                    None if action == "delete" or w.cid is None else str(w.cid),
                    None if prev is None else str(prev),
                )
                for action, w, prev in ops
            ),
        )
        return _TxnResult(_Head(commit_cid, data, rev), info, [(seq, frame)], first_seq)

    # --- reads -------------------------------------------------------------------------------

    def latest_commit(self) -> CommitRef:
        head = self._require_head()
        return CommitRef(str(head.commit), head.rev)

    async def get_record(self, collection: str, rkey: str) -> tuple[str, dict[str, Any]] | None:
        """(cid, value) of the record, or None."""

        def q(conn: sqlite3.Connection) -> tuple[str, dict[str, Any]] | None:
            row = conn.execute(
                "SELECT r.cid, b.data FROM records r LEFT JOIN blocks b ON b.cid = r.cid "
                "WHERE r.collection = ? AND r.rkey = ?",
                (collection, rkey),
            ).fetchone()
            if row is None:
                return None
            cid = Cid(row[0])
            if row[1] is None:
                raise MissingBlock(str(cid))
            value = to_json(decode(row[1]))
            assert isinstance(value, dict)
            return str(cid), value

        return await self._store.read(q)

    async def list_records(
        self, collection: str, limit: int = 50, cursor: str | None = None, reverse: bool = False
    ) -> RecordPage:
        """A page of one collection: newest record keys first, or oldest first with `reverse`.

        The order is the reference PDS's (rkey descending by default); `cursor` is the last
        rkey of the previous page.
        """
        if not 1 <= limit <= 1000:
            raise InvalidParams("limit must be between 1 and 1000")
        if cursor is not None and not is_record_key(cursor):
            raise InvalidCursor(f"invalid cursor {cursor!r}")
        sql = _LIST_SQL[(reverse, cursor is not None)]
        args: tuple[Any, ...] = (collection, cursor, limit + 1) if cursor is not None else (collection, limit + 1)

        def q(conn: sqlite3.Connection) -> RecordPage:
            rows = conn.execute(sql, args).fetchall()
            out = []
            for rkey, cid_raw, data in rows[:limit]:
                cid = Cid(cid_raw)
                if data is None:
                    raise MissingBlock(str(cid))
                value = to_json(decode(data))
                out.append(RecordEntry(collection, rkey, str(cid), value))
            more = len(rows) > limit
            return RecordPage(out, out[-1].rkey if more and out else None)

        return await self._store.read(q)

    async def list_collections(self) -> list[str]:
        def q(conn: sqlite3.Connection) -> list[str]:
            return [r[0] for r in conn.execute("SELECT DISTINCT collection FROM records ORDER BY collection")]

        return await self._store.read(q)

    async def export_car(self, since: str | None = None) -> bytes:
        """The repository as a CAR file whose root is the current commit.

        Without `since`: every block of the current state (commit, all tree nodes, all
        records), found by walking the tree, so the file is exactly the repo. With `since` (a
        rev): the commit plus the blocks written after that rev, as `sync.getRepo` does.
        """

        def q(conn: sqlite3.Connection) -> bytes:
            commit_raw, data_raw = conn.execute("SELECT commit_cid, data_cid FROM repo_root WHERE id = 1").fetchone()
            commit = Cid(commit_raw)
            nodes = NodeStore(_block_getter(conn), self._cache)
            blocks: list[tuple[Cid, bytes]] = [(commit, nodes.block(commit))]
            if since is not None:
                for cid_raw, data in conn.execute(
                    "SELECT cid, data FROM blocks WHERE rev > ? ORDER BY rev, cid", (since,)
                ):
                    cid = Cid(cid_raw)
                    if cid != commit:
                        blocks.append((cid, bytes(data)))
                return write_car(commit, blocks)
            mst = MST.load(nodes, Cid(data_raw))
            blocks.extend((cid, nodes.block(cid)) for cid in mst.node_cids())
            seen: set[Cid] = set()
            for _key, value in mst.items():
                if value not in seen:
                    seen.add(value)
                    blocks.append((value, nodes.block(value)))
            return write_car(commit, blocks)

        return await self._store.read(q)

    async def get_record_proof_car(self, collection: str, rkey: str) -> bytes:
        """A CAR proving the record's presence (or absence) under the signed commit.

        Root = the commit; blocks = the commit, the tree nodes on the key's path, and the
        record if it exists: what `com.atproto.sync.getRecord` serves.
        """
        key = f"{collection}/{rkey}"

        def q(conn: sqlite3.Connection) -> bytes:
            commit_raw, data_raw = conn.execute("SELECT commit_cid, data_cid FROM repo_root WHERE id = 1").fetchone()
            commit = Cid(commit_raw)
            nodes = NodeStore(_block_getter(conn), self._cache)
            mst = MST.load(nodes, Cid(data_raw))
            blocks = [(commit, nodes.block(commit))]
            blocks.extend((cid, nodes.block(cid)) for cid in mst.path_cids(key))
            value = mst.get(key) if is_valid_key(key) else None
            if value is not None:
                blocks.append((value, nodes.block(value)))
            return write_car(commit, blocks)

        return await self._store.read(q)

    # --- the event log -----------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def first_seq(self) -> int:
        """The oldest event still in the log (older ones were pruned)."""
        return self._first_seq

    async def events_after(self, after: int, limit: int = REPLAY_BATCH) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, frame) pairs with seq > `after`, oldest first."""
        if self._tail and self._tail[0][0] <= after + 1:
            out = []
            for seq, frame in self._tail:
                if seq > after:
                    out.append((seq, frame))
                    if len(out) >= limit:
                        break
            return out

        def q(conn: sqlite3.Connection) -> list[tuple[int, bytes]]:
            rows = conn.execute(
                "SELECT seq, frame FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
            return [(int(s), bytes(f)) for s, f in rows]

        return await self._store.read(q)

    async def wait_for_events(self, after: int) -> bool:
        """Wait until an event newer than `after` exists; False if the repository closed."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._closed or self._last_seq > after)
        return not self._closed
