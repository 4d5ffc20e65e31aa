"""Reading a repository's Merkle Search Tree (atproto.com/specs/repository#mst-structure).

The parts every reader of a repository needs: which keys are valid, a key's layer, and a
lookup of one key through hash-linked node blocks (a proof: the nodes `sync.getRecord`
returns). The hold's writable tree (hold/repo/mst.py) builds on these.

Node layout: `{l: subtree|null, e: [{p, k, v, t}]}`, each entry's key compressed against the
previous entry's (`p` bytes shared, `k` the rest), `v` the record CID, `t` the subtree to its
right.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Final

from atcr.dagcbor import Cid, CorruptRepo, DagCborError, decode

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_~-:.")
MAX_KEY_LEN: Final = 1024
MAX_DEPTH: Final = 128


def key_layer(key: str) -> int:
    """Leading zero bits of sha256(key), counted in 2-bit chunks (fanout 4)."""
    zeros = 0
    for byte in hashlib.sha256(key.encode("ascii")).digest():
        if byte < 64:
            zeros += 1
        if byte < 16:
            zeros += 1
        if byte < 4:
            zeros += 1
        if byte != 0:
            break
        zeros += 1
    return zeros


def is_valid_key(key: str) -> bool:
    """`<collection>/<rkey>`, both non-empty, from the allowed characters, at most 1024 bytes."""
    if len(key) > MAX_KEY_LEN:
        return False
    coll, sep, rkey = key.partition("/")
    if not sep or not coll or not rkey or "/" in rkey:
        return False
    return _KEY_CHARS.issuperset(coll) and _KEY_CHARS.issuperset(rkey)


class MissingNode(CorruptRepo):
    """A node on the lookup path is not among the blocks: they prove nothing either way."""


def lookup(blocks: Mapping[Cid, bytes], root: Cid, key: str) -> Cid | None:
    """The record CID the tree rooted at `root` holds for `key`, or None when it holds none.

    Every node must be among `blocks` (whose hashes the caller has checked against their
    CIDs, as `dagcbor.read_car` does): a missing node raises `MissingNode`, a malformed one
    `CorruptRepo`. Keys are checked to be sorted within each node, so an absence found here
    is an absence in the tree, not a misleading node order.
    """
    node_cid: Cid | None = root
    for _ in range(MAX_DEPTH):
        if node_cid is None:
            return None
        raw = blocks.get(node_cid)
        if raw is None:
            raise MissingNode(f"MST node {node_cid} is not in the proof")
        try:
            node = decode(raw)
        except DagCborError as exc:
            raise CorruptRepo(f"MST node {node_cid}: {exc}") from None
        if not isinstance(node, dict) or set(node) != {"l", "e"} or not isinstance(node["e"], list):
            raise CorruptRepo(f"MST node {node_cid}: not an MST node")
        left = node["l"]
        if left is not None and not isinstance(left, Cid):
            raise CorruptRepo(f"MST node {node_cid}: bad l")
        descend: Cid | None = left
        last = ""
        for entry in node["e"]:
            if not isinstance(entry, dict):
                raise CorruptRepo(f"MST node {node_cid}: bad entry")
            p, k, v, t = entry.get("p"), entry.get("k"), entry.get("v"), entry.get("t")
            if not isinstance(p, int) or isinstance(p, bool) or not 0 <= p <= len(last):
                raise CorruptRepo(f"MST node {node_cid}: bad prefix length")
            if not isinstance(k, bytes) or not isinstance(v, Cid) or (t is not None and not isinstance(t, Cid)):
                raise CorruptRepo(f"MST node {node_cid}: bad entry fields")
            try:
                full = last[:p] + k.decode("ascii")
            except UnicodeDecodeError:
                raise CorruptRepo(f"MST node {node_cid}: key is not ASCII") from None
            if last and full <= last:
                raise CorruptRepo(f"MST node {node_cid}: keys out of order")
            last = full
            if full == key:
                return v
            if full > key:
                break
            descend = t
        node_cid = descend
    raise CorruptRepo("MST deeper than any real tree")
