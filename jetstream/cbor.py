"""Decoding what a firehose commit carries: DAG-CBOR records, CAR blocks, MST lookups.

Why a decoder of our own for records: libipld (the SDK's codec) decodes CID links and byte
strings to the same Python `bytes`, so a record read through it cannot be turned back into
the JSON data model (`{"$link"}` vs `{"$bytes"}`) that Jetstream delivers and the read model
stores. Records are small, so a plain Python decoder is fast enough; frames and commit
blocks, whose schema says which fields are links, still go through libipld.

Why a CAR reader of our own: `libipld.decode_car` decodes every block, losing the raw bytes
that the block-hash check and the record decoder need.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Mapping
from typing import Any, Final

import libipld

from atcr.dagcbor import DagCborError, read_varint
from jetstream.errors import MalformedEvent

MAX_DEPTH: Final = 64
SHA2_256: Final = 0x12
DAG_CBOR: Final = 0x71
RAW: Final = 0x55


def cid_str(raw: bytes) -> str:
    """The base32 string form of a binary CIDv1."""
    try:
        return str(libipld.encode_cid(raw))
    except Exception as exc:  # libipld raises its own untyped errors
        raise MalformedEvent(f"bad CID: {exc}") from None


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise MalformedEvent("DAG-CBOR: truncated")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def head(self) -> tuple[int, int]:
        if self.pos >= len(self.data):
            raise MalformedEvent("DAG-CBOR: truncated")
        first = self.data[self.pos]
        self.pos += 1
        major, info = first >> 5, first & 0x1F
        if info < 24:
            return major, info
        if info == 24:
            return major, self.take(1)[0]
        if info == 25:
            return major, int(struct.unpack(">H", self.take(2))[0])
        if info == 26:
            return major, int(struct.unpack(">I", self.take(4))[0])
        if info == 27:
            return major, int(struct.unpack(">Q", self.take(8))[0])
        raise MalformedEvent("DAG-CBOR: indefinite lengths are not allowed")

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise MalformedEvent("DAG-CBOR: nested too deeply")
        start = self.pos
        major, arg = self.head()
        if major == 0:
            return arg
        if major == 1:
            return -1 - arg
        if major == 2:
            return {"$bytes": base64.b64encode(self.take(arg)).decode("ascii").rstrip("=")}
        if major == 3:
            try:
                return self.take(arg).decode("utf-8")
            except UnicodeDecodeError:
                raise MalformedEvent("DAG-CBOR: invalid UTF-8 text") from None
        if major == 4:
            if arg > len(self.data):
                raise MalformedEvent("DAG-CBOR: array longer than the block")
            return [self.value(depth + 1) for _ in range(arg)]
        if major == 5:
            if arg > len(self.data):
                raise MalformedEvent("DAG-CBOR: map larger than the block")
            out: dict[str, Any] = {}
            for _ in range(arg):
                key = self.value(depth + 1)
                if not isinstance(key, str):
                    raise MalformedEvent("DAG-CBOR: map keys must be strings")
                out[key] = self.value(depth + 1)
            return out
        if major == 6:
            if arg != 42:
                raise MalformedEvent(f"DAG-CBOR: tag {arg} is not allowed")
            kind, length = self.head()
            raw = self.take(length)
            if kind != 2 or not raw or raw[0] != 0:
                raise MalformedEvent("DAG-CBOR: malformed CID link")
            return {"$link": cid_str(raw[1:])}
        if arg == 20:
            return False
        if arg == 21:
            return True
        if arg == 22:
            return None
        self.pos = start
        raise MalformedEvent("DAG-CBOR: floats and undefined are not in the data model")


def decode_record(block: bytes) -> dict[str, Any]:
    """One record block -> its JSON data-model form (links as `$link`, bytes as `$bytes`)."""
    reader = _Reader(block)
    value = reader.value(0)
    if reader.pos != len(block):
        raise MalformedEvent("DAG-CBOR: trailing bytes after the record")
    if not isinstance(value, dict):
        raise MalformedEvent("record is not a map")
    return value


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    try:
        return read_varint(data, pos)
    except DagCborError:
        raise MalformedEvent("CAR: bad varint") from None


def _cid_end(data: bytes, pos: int) -> int:
    """End offset of the binary CIDv1 starting at `pos` (version, codec, multihash)."""
    version, p = _varint(data, pos)
    if version != 1:
        raise MalformedEvent("CAR: only CIDv1 blocks are expected")
    _codec, p = _varint(data, p)
    _hash_code, p = _varint(data, p)
    length, p = _varint(data, p)
    return p + length


def read_car(data: bytes, *, verify: bool = True) -> tuple[bytes | None, dict[bytes, bytes]]:
    """(first root CID, {binary CID: block bytes}) of a CARv1.

    With `verify`, every sha2-256 block must hash to its CID, so a record found here is the
    record its CID names.
    """
    header_len, pos = _varint(data, 0)
    try:
        header = libipld.decode_dag_cbor(data[pos : pos + header_len])
    except Exception:  # libipld's errors are untyped
        raise MalformedEvent("CAR: unreadable header") from None
    pos += header_len
    roots = header.get("roots") if isinstance(header, dict) else None
    root = roots[0] if isinstance(roots, list) and roots and isinstance(roots[0], bytes) else None
    blocks: dict[bytes, bytes] = {}
    while pos < len(data):
        length, pos = _varint(data, pos)
        end = pos + length
        if end > len(data):
            raise MalformedEvent("CAR: truncated block")
        cid_end = _cid_end(data, pos)
        if cid_end > end:
            raise MalformedEvent("CAR: block shorter than its CID")
        cid = bytes(data[pos:cid_end])
        block = bytes(data[cid_end:end])
        if verify and len(cid) == 36 and cid[2] == SHA2_256 and hashlib.sha256(block).digest() != cid[4:]:
            raise MalformedEvent(f"CAR: block {cid_str(cid)} does not match its hash")
        blocks[cid] = block
        pos = end
    return root, blocks


_UNKNOWN: Final = object()


def mst_lookup(blocks: Mapping[bytes, bytes], root: bytes, key: str) -> bytes | object | None:
    """The CID the MST rooted at `root` holds for `key`: bytes, None (absent) or `UNKNOWN`.

    `UNKNOWN` means a node on the path is not among `blocks`, so the CAR proves nothing
    either way. Node layout (atproto repo spec): `{l: subtree|null, e: [{p, k, v, t}]}`
    with each key compressed against the previous one.
    """
    target = key.encode()
    node_cid: bytes | None = root
    for _ in range(MAX_DEPTH):
        if node_cid is None:
            return None
        raw = blocks.get(node_cid)
        if raw is None:
            return _UNKNOWN
        try:
            node = libipld.decode_dag_cbor(raw)
        except Exception:
            raise MalformedEvent("MST: unreadable node") from None
        if not isinstance(node, dict) or not isinstance(node.get("e"), list):
            raise MalformedEvent("MST: malformed node")
        left = node.get("l")
        prev = b""
        descend: bytes | None = left if isinstance(left, bytes) else None
        for entry in node["e"]:
            if not isinstance(entry, dict):
                raise MalformedEvent("MST: malformed entry")
            prefix, suffix = entry.get("p"), entry.get("k")
            if not isinstance(prefix, int) or not isinstance(suffix, bytes) or prefix > len(prev):
                raise MalformedEvent("MST: malformed entry key")
            full = prev[:prefix] + suffix
            prev = full
            if full == target:
                value = entry.get("v")
                return value if isinstance(value, bytes) else None
            if full > target:
                break
            right = entry.get("t")
            descend = right if isinstance(right, bytes) else None
        node_cid = descend
    raise MalformedEvent("MST: deeper than any real tree")


UNKNOWN: Final = _UNKNOWN
