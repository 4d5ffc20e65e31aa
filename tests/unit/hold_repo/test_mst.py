"""The Merkle Search Tree: interop vectors, canonical shape, determinism, deletes, proofs."""

from __future__ import annotations

import random
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atcr.dagcbor import Cid
from hold.repo.errors import InvalidKey, MissingBlock
from hold.repo.mst import MST, NodeCache, NodeStore, Ref, dump, is_valid_key, key_layer

# --- vectors from the spec / atproto-interop-tests (also checked against @atproto/repo) -----------

EMPTY_ROOT = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
LEAF = Cid.parse("bafyreie5cvv4h45feadgeuwhbcutmh6t2ceseocckahdoe6uat64zmz454")


@pytest.mark.parametrize(
    ("key", "layer"),
    [
        ("2653ae71", 0),
        ("blue", 1),
        ("app.bsky.feed.post/454397e440ec", 4),
        ("app.bsky.feed.post/9adeb165882c", 8),
        ("com.example.record/3jqfcqzm3fo2j", 0),
        ("com.example.record/3jqfcqzm3fs2j", 1),
        ("com.example.record/3jqfcqzm3fx2j", 2),
    ],
)
def test_key_layers(key: str, layer: int) -> None:
    assert key_layer(key) == layer


def _store(blocks: dict[Cid, bytes] | None = None) -> NodeStore:
    return NodeStore((blocks if blocks is not None else {}).get, NodeCache())


def _build(keys: Iterable[str], store: NodeStore | None = None) -> MST:
    mst = MST.empty(store or _store())
    for key in keys:
        mst = mst.put(key, Cid.for_block(key.encode()))
    return mst


@pytest.mark.parametrize(
    ("keys", "root"),
    [
        ([], EMPTY_ROOT),
        (["com.example.record/3jqfcqzm3fo2j"], "bafyreibj4lsc3aqnrvphp5xmrnfoorvru4wynt6lwidqbm2623a6tatzdu"),
        (["com.example.record/3jqfcqzm3fx2j"], "bafyreih7wfei65pxzhauoibu3ls7jgmkju4bspy4t2ha2qdjnzqvoy33ai"),
        (
            [f"com.example.record/{k}" for k in ("3jqfcqzm3fp2j", "3jqfcqzm3fr2j", "3jqfcqzm3fs2j", "3jqfcqzm3ft2j")]
            + ["com.example.record/3jqfcqzm4fc2j"],
            "bafyreicmahysq4n6wfuxo522m6dpiy7z7qzym3dzs756t5n7nfdgccwq7m",
        ),
    ],
    ids=["empty", "trivial", "singlelayer2", "simple"],
)
def test_known_roots(keys: list[str], root: str) -> None:
    mst = MST.empty(_store())
    for key in keys:
        mst = mst.put(key, LEAF)
    assert str(mst.finalize()[0]) == root


def test_simple_tree_shape() -> None:
    keys = [f"com.example.record/{k}" for k in ("3jqfcqzm3fp2j", "3jqfcqzm3fr2j", "3jqfcqzm3fs2j", "3jqfcqzm3ft2j")]
    mst = _build([*keys, "com.example.record/3jqfcqzm4fc2j"])
    assert dump(mst) == [
        ["com.example.record/3jqfcqzm3fp2j", "com.example.record/3jqfcqzm3fr2j"],
        "com.example.record/3jqfcqzm3fs2j",
        ["com.example.record/3jqfcqzm3ft2j", "com.example.record/3jqfcqzm4fc2j"],
    ]


# --- a pool of keys with a spread of layers -------------------------------------------------------


def _key_pool() -> list[str]:
    rng = random.Random(1234)
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    by_layer: dict[int, list[str]] = {}
    while sum(len(v) for v in by_layer.values()) < 400 or len(by_layer.get(3, [])) < 3:
        coll = rng.choice(["io.atcr.hold.layer", "io.atcr.hold.crew", "io.atcr.hold.stats", "app.bsky.feed.post"])
        key = f"{coll}/{''.join(rng.choice(alphabet) for _ in range(13))}"
        layer = min(key_layer(key), 3)
        if layer == 0 and len(by_layer.get(0, [])) >= 250:
            continue
        by_layer.setdefault(layer, []).append(key)
    return sorted({k for keys in by_layer.values() for k in keys})


POOL = _key_pool()
key_sets = st.lists(st.sampled_from(POOL), unique=True, max_size=80)


def _check_shape(mst: MST) -> None:
    """Canonical form: children one layer down, no empty nodes, root not l-only, keys sorted."""

    def walk(ref: Ref, layer: int | None, is_root: bool) -> int:
        node = mst._node(ref)
        if not is_root:
            assert node.entries or node.left is not None, "empty non-root node"
        else:
            assert node.entries or node.left is None, "l-only root"
        if node.entries:
            layers = {key_layer(e.key) for e in node.entries}
            assert len(layers) == 1
            mine = layers.pop()
            assert layer is None or mine == layer
        else:
            assert layer is not None or node.left is None
            mine = layer if layer is not None else 0
        assert list(node.keys) == sorted(node.keys)
        children = [node.left] + [e.right for e in node.entries]
        for child in children:
            if child is not None:
                walk(child, mine - 1, False)
        return mine

    walk(mst._root, None, True)


@settings(max_examples=60, deadline=None)
@given(key_sets, st.randoms(use_true_random=False))
def test_same_keys_any_order_same_root(keys: list[str], rng: random.Random) -> None:
    shuffled = list(keys)
    rng.shuffle(shuffled)
    a, b = _build(keys), _build(shuffled)
    assert a.finalize()[0] == b.finalize()[0]
    assert a.finalize()[0] == _build(sorted(keys)).finalize()[0]
    _check_shape(b)
    assert [k for k, _ in b.items()] == sorted(keys)


@settings(max_examples=60, deadline=None)
@given(key_sets, key_sets, st.randoms(use_true_random=False))
def test_deletes_restore_previous_roots(base: list[str], extra: list[str], rng: random.Random) -> None:
    extra = [k for k in extra if k not in set(base)]
    before = _build(base)
    root_before = before.finalize()[0]
    after = before
    for key in extra:
        after = after.put(key, Cid.for_block(key.encode()))
    rng.shuffle(extra)
    for key in extra:
        after = after.delete(key)
        _check_shape(after)
    assert after.finalize()[0] == root_before
    everything = list(base)
    rng.shuffle(everything)
    for key in everything:
        after = after.delete(key)
    assert str(after.finalize()[0]) == EMPTY_ROOT


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "del"]), st.sampled_from(POOL[:60]), st.integers(0, 3))))
def test_random_edits_match_a_dict_model(steps: list[tuple[str, str, int]]) -> None:
    blocks: dict[Cid, bytes] = {}
    store = _store(blocks)
    mst = MST.empty(store)
    model: dict[str, Cid] = {}
    for i, (op, key, version) in enumerate(steps):
        if op == "put":
            value = Cid.for_block(f"{key}:{version}".encode())
            mst = mst.put(key, value)
            model[key] = value
        elif key in model:
            mst = mst.delete(key)
            del model[key]
        else:
            with pytest.raises(KeyError):
                mst.delete(key)
        if i % 5 == 0:  # persist now and then, so edits also run over stored (not in-memory) nodes
            _, new = mst.finalize()
            blocks.update(new)
            mst = MST.load(store, mst.root_cid)
    assert dict(mst.items()) == model
    for key in POOL[:60]:
        assert mst.get(key) == model.get(key)
    _check_shape(mst)
    fresh = MST.empty(_store())
    for key, value in sorted(model.items()):
        fresh = fresh.put(key, value)
    assert mst.finalize()[0] == fresh.finalize()[0]


def test_reload_from_blocks_and_dropped_nodes() -> None:
    blocks: dict[Cid, bytes] = {}
    store = _store(blocks)
    mst = _build(POOL[:100], store)
    root, new = mst.finalize()
    blocks.update(new)
    reloaded = MST.load(_store(blocks), root)
    assert list(reloaded.items()) == list(mst.items())
    assert set(reloaded.node_cids()) == set(new)
    # An edit replaces exactly the nodes on its path; they are reported as dropped.
    edited = reloaded.put(POOL[150], Cid.for_block(b"new"))
    _, added = edited.finalize()
    still = set(edited.node_cids())
    assert edited.dropped == set(new) - still
    assert set(added) == still - set(new)


def test_missing_block_is_reported() -> None:
    blocks: dict[Cid, bytes] = {}
    mst = _build(POOL[:50])
    root, new = mst.finalize()
    blocks.update(new)
    victim = next(c for c in new if c != root)
    del blocks[victim]
    with pytest.raises(MissingBlock):
        list(MST.load(_store(blocks), root).items())


@pytest.mark.parametrize(
    "key",
    ["nocollection", "a/b/c", "/rkey", "coll/", "coll/with space", "coll/" + "x" * 1100, "coll/ünï"],
)
def test_invalid_keys_are_refused(key: str) -> None:
    assert not is_valid_key(key)
    with pytest.raises(InvalidKey):
        MST.empty(_store()).put(key, LEAF)


@settings(max_examples=40, deadline=None)
@given(
    key_sets,
    st.lists(st.sampled_from(POOL), unique=True, min_size=1, max_size=8),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_covering_proofs_are_enough_to_invert_a_commit(base: list[str], touched: list[str], deletes: list[bool]) -> None:
    """What a sync-v1.1 consumer does: from the event's blocks alone, undo the ops and get
    back to the previous root (`prevData`)."""
    blocks: dict[Cid, bytes] = {}
    store = _store(blocks)
    before = _build(base, store)
    prev_root, new = before.finalize()
    blocks.update(new)
    tree = MST.load(store, prev_root)
    ops: list[tuple[str, str, Cid | None]] = []  # (action, key, previous value)
    for i, key in enumerate(touched):
        current = tree.get(key)
        action = ("delete" if deletes[i] else "update") if current is not None else "create"
        tree = tree.delete(key) if action == "delete" else tree.put(key, Cid.for_block(f"v2:{key}".encode()))
        ops.append((action, key, current))
    root, node_blocks = tree.finalize()
    blocks.update(node_blocks)
    proof: set[Cid] = set(node_blocks)
    for _, key, _ in ops:
        proof |= tree.covering_cids(key)
    # Only the event's blocks are visible to the consumer.
    event_blocks = {cid: blocks[cid] for cid in proof}
    inverted = MST.load(_store(event_blocks), root)
    for action, key, prev in reversed(ops):
        if action == "create":
            inverted = inverted.delete(key)
        else:
            assert prev is not None
            inverted = inverted.put(key, prev)
    assert inverted.finalize()[0] == prev_root


def test_path_proves_presence_and_absence() -> None:
    blocks: dict[Cid, bytes] = {}
    mst = _build(POOL[:120], _store(blocks))
    root, new = mst.finalize()
    blocks.update(new)
    for key in (POOL[10], POOL[200]):
        path = mst.path_cids(key)
        assert path[0] == root
        proof = MST.load(_store({c: blocks[c] for c in path}), root)
        assert proof.get(key) == mst.get(key)
