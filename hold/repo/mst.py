"""The Merkle Search Tree of a repository (atproto.com/specs/repository#mst-structure).

The tree is a persistent value: `put` and `delete` return a new `MST` that shares every
untouched subtree with the old one, so a failed commit simply drops the new value and the
previous head stays valid. New nodes get their CIDs in `finalize`, bottom-up, which is when
they become blocks.

The shape depends only on the set of keys (a key's layer comes from its hash), so the same
records always give the same root CID whatever the order of writes. That is what lets a
relay or the reference implementation check our tree byte for byte.

Shape rules, as the reference implementation (`@atproto/repo`) builds them:
* a node's children are exactly one layer below it; a child that would have no entries but
  still holds a deeper subtree stays as a node with only `l` set;
* the root is the node of the highest layer that has entries (an `l`-only root is trimmed);
* the empty tree is one node `{l: null, e: []}`.
"""

from __future__ import annotations

import bisect
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from atcr.dagcbor import Cid, DagCborError, decode, encode
from atcr.mst import MAX_KEY_LEN, is_valid_key, key_layer
from hold.repo.errors import CorruptRepo, InvalidKey, MissingBlock

__all__ = [
    "MAX_KEY_LEN", "MST", "BlockGetter", "Entry", "Node", "NodeCache", "NodeStore", "Ref", "decode_node", "dump",
    "encode_node", "ensure_valid_key", "is_valid_key", "key_layer",
]  # fmt: skip


def ensure_valid_key(key: str) -> None:
    if not is_valid_key(key):
        raise InvalidKey(f"not a valid repository path: {key!r}")


# --- nodes -----------------------------------------------------------------------------------------


class Ref:
    """A pointer to a subtree: its CID once known, the node itself while it is new."""

    __slots__ = ("cid", "node")

    def __init__(self, cid: Cid | None, node: Node | None) -> None:
        self.cid = cid
        self.node = node

    @classmethod
    def new(cls, node: Node) -> Ref:
        return cls(None, node)


class Entry:
    __slots__ = ("key", "right", "value")

    def __init__(self, key: str, value: Cid, right: Ref | None) -> None:
        self.key = key
        self.value = value
        self.right = right

    def with_right(self, right: Ref | None) -> Entry:
        return Entry(self.key, self.value, right)


class Node:
    __slots__ = ("entries", "keys", "left")

    def __init__(self, left: Ref | None, entries: tuple[Entry, ...]) -> None:
        self.left = left
        self.entries = entries
        self.keys = tuple(e.key for e in entries)

    def search(self, key: str) -> tuple[int, bool]:
        """Index of the first entry >= key, and whether that entry is `key`."""
        i = bisect.bisect_left(self.keys, key)
        return i, i < len(self.keys) and self.keys[i] == key

    def gap(self, i: int) -> Ref | None:
        """The subtree between entry i-1 and entry i."""
        return self.entries[i - 1].right if i > 0 else self.left

    def with_gap(self, i: int, sub: Ref | None) -> Node:
        if i == 0:
            return Node(sub, self.entries)
        entries = list(self.entries)
        entries[i - 1] = entries[i - 1].with_right(sub)
        return Node(self.left, tuple(entries))

    @property
    def is_empty(self) -> bool:
        return not self.entries and self.left is None


def _prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def encode_node(node: Node) -> bytes:
    """The node's block: `{l, e: [{p, k, v, t}]}` with keys prefix-compressed."""
    entries = []
    last = ""
    for e in node.entries:
        if e.right is not None and e.right.cid is None:
            raise ValueError("finalize children before their parent")
        p = _prefix_len(last, e.key)
        entries.append({"p": p, "k": e.key[p:].encode("ascii"), "v": e.value, "t": e.right.cid if e.right else None})
        last = e.key
    if node.left is not None and node.left.cid is None:
        raise ValueError("finalize children before their parent")
    return encode({"l": node.left.cid if node.left else None, "e": entries})


def decode_node(cid: Cid, data: bytes) -> Node:
    """Parse and check a node block; a malformed one means a corrupt store."""
    try:
        raw = decode(data)
        if not isinstance(raw, dict) or set(raw) != {"l", "e"} or not isinstance(raw["e"], list):
            raise CorruptRepo("not an MST node")
        left = raw["l"]
        if left is not None and not isinstance(left, Cid):
            raise CorruptRepo("bad l")
        entries: list[Entry] = []
        last = ""
        for item in raw["e"]:
            if not isinstance(item, dict):
                raise CorruptRepo("bad entry")
            p, k, v, t = item.get("p"), item.get("k"), item.get("v"), item.get("t")
            if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= len(last):
                raise CorruptRepo("bad prefix length")
            if not isinstance(k, bytes) or not isinstance(v, Cid) or (t is not None and not isinstance(t, Cid)):
                raise CorruptRepo("bad entry fields")
            key = last[:p] + k.decode("ascii")
            if not is_valid_key(key) or (entries and key <= last):
                raise CorruptRepo(f"bad or unsorted key {key!r}")
            entries.append(Entry(key, v, Ref(t, None) if t is not None else None))
            last = key
    except (CorruptRepo, DagCborError, UnicodeDecodeError) as exc:
        raise CorruptRepo(f"MST node {cid}: {exc}") from None
    return Node(Ref(left, None) if left is not None else None, tuple(entries))


class NodeCache:
    """Decoded nodes by CID, shared by the writer and the readers (nodes never change)."""

    def __init__(self, size: int = 20_000) -> None:
        self._size = size
        self._items: OrderedDict[Cid, Node] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, cid: Cid) -> Node | None:
        with self._lock:
            node = self._items.get(cid)
            if node is not None:
                self._items.move_to_end(cid)
            return node

    def put(self, cid: Cid, node: Node) -> None:
        with self._lock:
            self._items[cid] = node
            self._items.move_to_end(cid)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


BlockGetter = Callable[[Cid], "bytes | None"]


class NodeStore:
    """Reads blocks through one getter (one SQLite connection, or a dict) and caches nodes."""

    def __init__(self, get: BlockGetter, cache: NodeCache | None = None) -> None:
        self._get = get
        self.cache = cache or NodeCache()

    def block(self, cid: Cid) -> bytes:
        data = self._get(cid)
        if data is None:
            raise MissingBlock(str(cid))
        return data

    def node(self, cid: Cid) -> Node:
        node = self.cache.get(cid)
        if node is None:
            node = decode_node(cid, self.block(cid))
            self.cache.put(cid, node)
        return node


# --- the tree --------------------------------------------------------------------------------------


class _Edit:
    """One put/delete: loads nodes and remembers which stored nodes it replaced."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store
        self.dropped: set[Cid] = set()

    def load(self, ref: Ref) -> Node:
        if ref.node is not None:
            return ref.node
        assert ref.cid is not None
        return self.store.node(ref.cid)

    def drop(self, ref: Ref) -> None:
        if ref.cid is not None:
            self.dropped.add(ref.cid)

    def new(self, node: Node) -> Ref | None:
        return None if node.is_empty else Ref.new(node)

    def layer_of(self, ref: Ref) -> int | None:
        node = self.load(ref)
        if node.entries:
            return key_layer(node.entries[0].key)
        if node.left is None:
            return None
        below = self.layer_of(node.left)
        return None if below is None else below + 1

    def wrap(self, ref: Ref | None, layer: int, target: int) -> Ref | None:
        """Put `ref` (a subtree at `layer`) under l-only nodes until it sits at `target`."""
        while ref is not None and layer < target:
            ref = Ref.new(Node(ref, ()))
            layer += 1
        return ref

    def split(self, ref: Ref | None, layer: int, key: str) -> tuple[Ref | None, Ref | None]:
        """The keys of the subtree below `key` and above it, as two subtrees at `layer`."""
        if ref is None:
            return None, None
        node = self.load(ref)
        i, found = node.search(key)
        if found:
            raise CorruptRepo(f"key {key!r} found below its layer")
        gap = node.gap(i)
        lo, hi = self.split(gap, layer - 1, key)
        n = len(node.entries)
        if i == 0 and lo is None and hi is gap:
            return None, ref
        if i == n and hi is None and lo is gap:
            return ref, None
        self.drop(ref)
        left = Node(node.left, (*node.entries[: i - 1], node.entries[i - 1].with_right(lo))) if i else Node(lo, ())
        right = Node(hi, node.entries[i:])
        return self.new(left), self.new(right)

    def merge(self, a: Ref | None, b: Ref | None) -> Ref | None:
        """Join two adjacent subtrees of the same layer (all keys of `a` < all keys of `b`)."""
        if a is None:
            return b
        if b is None:
            return a
        na, nb = self.load(a), self.load(b)
        self.drop(a)
        self.drop(b)
        a_last = na.entries[-1].right if na.entries else na.left
        mid = self.merge(a_last, nb.left)
        if na.entries:
            node = Node(na.left, (*na.entries[:-1], na.entries[-1].with_right(mid), *nb.entries))
        else:
            node = Node(mid, nb.entries)
        return self.new(node)

    def insert(self, ref: Ref | None, layer: int, key: str, klayer: int, value: Cid) -> Ref:
        if ref is None:
            leaf = Ref.new(Node(None, (Entry(key, value, None),)))
            wrapped = self.wrap(leaf, klayer, layer)
            assert wrapped is not None
            return wrapped
        node = self.load(ref)
        i, found = node.search(key)
        if klayer == layer:
            self.drop(ref)
            if found:
                entries = list(node.entries)
                entries[i] = Entry(key, value, entries[i].right)
                return Ref.new(Node(node.left, tuple(entries)))
            lo, hi = self.split(node.gap(i), layer - 1, key)
            entry = Entry(key, value, hi)
            if i > 0:
                entries_t = (*node.entries[: i - 1], node.entries[i - 1].with_right(lo), entry, *node.entries[i:])
                return Ref.new(Node(node.left, entries_t))
            return Ref.new(Node(lo, (entry, *node.entries)))
        if found:
            raise CorruptRepo(f"key {key!r} found above its layer")
        sub = self.insert(node.gap(i), layer - 1, key, klayer, value)
        self.drop(ref)
        return Ref.new(node.with_gap(i, sub))

    def delete(self, ref: Ref | None, layer: int, key: str, klayer: int) -> Ref | None:
        if ref is None:
            raise KeyError(key)
        node = self.load(ref)
        i, found = node.search(key)
        if klayer == layer:
            if not found:
                raise KeyError(key)
            merged = self.merge(node.gap(i), node.entries[i].right)
            self.drop(ref)
            if i > 0:
                entries = (*node.entries[: i - 1], node.entries[i - 1].with_right(merged), *node.entries[i + 1 :])
                return self.new(Node(node.left, entries))
            return self.new(Node(merged, node.entries[1:]))
        if found:
            raise CorruptRepo(f"key {key!r} found above its layer")
        sub = self.delete(node.gap(i), layer - 1, key, klayer)
        self.drop(ref)
        return self.new(node.with_gap(i, sub))


class MST:
    """An immutable tree value; `put`/`delete` return new trees."""

    __slots__ = ("_dropped", "_root", "store")

    def __init__(self, store: NodeStore, root: Ref, dropped: frozenset[Cid] = frozenset()) -> None:
        self.store = store
        self._root = root
        self._dropped = dropped

    @classmethod
    def empty(cls, store: NodeStore) -> MST:
        return cls(store, Ref.new(Node(None, ())))

    @classmethod
    def load(cls, store: NodeStore, root: Cid) -> MST:
        return cls(store, Ref(root, None))

    @property
    def dropped(self) -> frozenset[Cid]:
        """Stored nodes that the edits since `load` replaced (candidates for deletion)."""
        return self._dropped

    def _node(self, ref: Ref) -> Node:
        if ref.node is not None:
            return ref.node
        assert ref.cid is not None
        return self.store.node(ref.cid)

    def get(self, key: str) -> Cid | None:
        ref: Ref | None = self._root
        while ref is not None:
            node = self._node(ref)
            i, found = node.search(key)
            if found:
                return node.entries[i].value
            ref = node.gap(i)
        return None

    def put(self, key: str, value: Cid) -> MST:
        """Create or replace `key`."""
        ensure_valid_key(key)
        edit = _Edit(self.store)
        klayer = key_layer(key)
        root = self._root
        rlayer = edit.layer_of(root)
        if rlayer is None:
            edit.drop(root)
            new_root = Ref.new(Node(None, (Entry(key, value, None),)))
        elif klayer > rlayer:
            lo, hi = edit.split(root, rlayer, key)
            lo = edit.wrap(lo, rlayer, klayer - 1)
            hi = edit.wrap(hi, rlayer, klayer - 1)
            new_root = Ref.new(Node(lo, (Entry(key, value, hi),)))
        else:
            new_root = edit.insert(root, rlayer, key, klayer, value)
        return MST(self.store, new_root, self._dropped | edit.dropped)

    def delete(self, key: str) -> MST:
        """Remove `key`; KeyError if it is not in the tree."""
        edit = _Edit(self.store)
        rlayer = edit.layer_of(self._root)
        klayer = key_layer(key) if is_valid_key(key) else -1
        if rlayer is None or klayer < 0 or klayer > rlayer:
            raise KeyError(key)
        root = edit.delete(self._root, rlayer, key, klayer)
        while root is not None:
            node = edit.load(root)
            if node.entries or node.left is None:
                break
            edit.drop(root)
            root = node.left
        if root is None:
            root = Ref.new(Node(None, ()))
        return MST(self.store, root, self._dropped | edit.dropped)

    def items(self) -> Iterator[tuple[str, Cid]]:
        """Every (key, record CID), in key order."""
        yield from self._items(self._root)

    def _items(self, ref: Ref) -> Iterator[tuple[str, Cid]]:
        node = self._node(ref)
        if node.left is not None:
            yield from self._items(node.left)
        for e in node.entries:
            yield e.key, e.value
            if e.right is not None:
                yield from self._items(e.right)

    def finalize(self) -> tuple[Cid, dict[Cid, bytes]]:
        """Give every new node its CID; returns the root CID and the new blocks."""
        out: dict[Cid, bytes] = {}
        root = self._finalize(self._root, out)
        return root, out

    def _finalize(self, ref: Ref, out: dict[Cid, bytes]) -> Cid:
        if ref.cid is not None:
            return ref.cid
        node = ref.node
        assert node is not None
        if node.left is not None:
            self._finalize(node.left, out)
        for e in node.entries:
            if e.right is not None:
                self._finalize(e.right, out)
        data = encode_node(node)
        cid = Cid.for_block(data)
        ref.cid = cid
        out[cid] = data
        self.store.cache.put(cid, node)
        return cid

    @property
    def root_cid(self) -> Cid:
        if self._root.cid is None:
            raise ValueError("finalize the tree first")
        return self._root.cid

    # --- blocks for export and proofs (the tree must be finalized or loaded) ----------------------

    def node_cids(self) -> Iterator[Cid]:
        """Every node CID, root first (pre-order)."""
        stack = [self._root]
        while stack:
            ref = stack.pop()
            assert ref.cid is not None
            yield ref.cid
            node = self._node(ref)
            children = [node.left] + [e.right for e in node.entries]
            stack.extend(c for c in reversed(children) if c is not None)

    def path_cids(self, key: str) -> list[Cid]:
        """The nodes a lookup of `key` visits: a proof of its presence or its absence."""
        out: list[Cid] = []
        ref: Ref | None = self._root
        while ref is not None:
            assert ref.cid is not None
            out.append(ref.cid)
            node = self._node(ref)
            i, found = node.search(key)
            if found:
                break
            ref = node.gap(i)
        return out

    def covering_cids(self, key: str) -> set[Cid]:
        """The nodes needed to undo a write of `key`: its path and its neighbours' paths.

        A firehose consumer that checks commits by inversion (sync v1.1) re-inserts deleted
        keys and removes created ones; these are the nodes such a re-shaping touches.
        """
        out: set[Cid] = set()
        ref: Ref | None = self._root
        while ref is not None:
            assert ref.cid is not None
            out.add(ref.cid)
            node = self._node(ref)
            i, found = node.search(key)
            if found:
                self._spine(node.gap(i), out, rightmost=True)
                self._spine(node.entries[i].right, out, rightmost=False)
                break
            ref = node.gap(i)
        return out

    def _spine(self, ref: Ref | None, out: set[Cid], *, rightmost: bool) -> None:
        while ref is not None:
            assert ref.cid is not None
            out.add(ref.cid)
            node = self._node(ref)
            ref = node.entries[-1].right if rightmost and node.entries else node.left


def dump(mst: MST) -> list[Any]:
    """Debug view of the tree shape: nested lists of keys (used by tests and by hand)."""

    def walk(ref: Ref) -> list[Any]:
        node = mst._node(ref)
        out: list[Any] = []
        if node.left is not None:
            out.append(walk(node.left))
        for e in node.entries:
            out.append(e.key)
            if e.right is not None:
                out.append(walk(e.right))
        return out

    return walk(mst._root)
