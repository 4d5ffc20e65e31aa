"""DAG-CBOR, CIDs and CAR files, exactly as the repository format needs them.

Why not `libipld.encode_dag_cbor` (the SDK's encoder)? It has no link type: it writes any
byte string that *parses* as a CID as a tag-42 link. A random 64-byte signature that starts
with 0x01 parses that way about one time in four, so roughly one commit in 1,100 would carry a
link where its signature belongs and fail verification everywhere. Records with `bytes`
fields have the same problem. So encoding is done here, with an explicit `Cid` type; the SDK
(libipld, Rust) still does the multibase/CID string work. Decoding is done here too because
libipld decodes links and byte strings to the same Python type, and a record read back must
come out as it went in (`{"$link"}` vs `{"$bytes"}`).

The ATProto data model forbids floats, so neither direction supports them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

import libipld

from atcr.errors import AtcrError


class DagCborError(AtcrError):
    """Bytes or values outside the ATProto data model."""


class InvalidRecord(DagCborError):
    """A value cannot be encoded (floats, non-string keys, bad `$link`/`$bytes`)."""


class CorruptRepo(DagCborError):
    """Bytes are not valid DAG-CBOR / CAR."""

DAG_CBOR: Final = 0x71
RAW: Final = 0x55
SHA2_256: Final = 0x12

_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


class Cid:
    """A CIDv1 in binary form; compares and hashes by its bytes."""

    __slots__ = ("_str", "raw")

    raw: bytes
    _str: str | None

    def __init__(self, raw: bytes) -> None:
        object.__setattr__(self, "raw", bytes(raw))
        object.__setattr__(self, "_str", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Cid is immutable")

    @classmethod
    def for_block(cls, data: bytes, codec: int = DAG_CBOR) -> Cid:
        """The CID of `data` (sha2-256); codec dag-cbor unless told otherwise."""
        return cls(bytes((1, codec, SHA2_256, 32)) + hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, value: str) -> Cid:
        """Parse the string form (base32 multibase, `bafy...`); raise ValueError if it is not one."""
        if not isinstance(value, str) or not value.startswith("b"):
            raise ValueError(f"not a CIDv1 string: {value!r}")
        try:
            info = libipld.decode_cid(value)
            _, raw = libipld.decode_multibase(value)
        except ValueError as exc:
            raise ValueError(f"not a CID: {value!r}") from exc
        if info["version"] != 1:
            raise ValueError(f"not a CIDv1: {value!r}")
        cid = cls(raw)
        object.__setattr__(cid, "_str", value)
        return cid

    @classmethod
    def from_raw(cls, raw: bytes) -> Cid:
        """Wrap binary CID bytes after checking them (they came from outside this process)."""
        try:
            info = libipld.decode_cid(bytes(raw))
        except ValueError as exc:
            raise ValueError("not a binary CID") from exc
        if info["version"] != 1:
            raise ValueError("not a CIDv1")
        return cls(raw)

    @property
    def codec(self) -> int:
        return self.raw[1]

    def matches(self, data: bytes) -> bool:
        """True if `data` hashes to this CID (sha2-256 only, the one hash the repo format uses)."""
        return self.raw[2:4] == bytes((SHA2_256, 32)) and self.raw[4:] == hashlib.sha256(data).digest()

    def __str__(self) -> str:
        s = self._str
        if s is None:
            s = libipld.encode_cid(self.raw)
            object.__setattr__(self, "_str", s)
        return s

    def __repr__(self) -> str:
        return f"Cid({self})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cid) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __lt__(self, other: Cid) -> bool:
        return self.raw < other.raw


# --- encoding ------------------------------------------------------------------------------------


def _head(major: int, n: int, out: bytearray) -> None:
    if n < 24:
        out.append(major << 5 | n)
    elif n < 0x100:
        out += bytes((major << 5 | 24, n))
    elif n < 0x10000:
        out.append(major << 5 | 25)
        out += n.to_bytes(2, "big")
    elif n < 0x100000000:
        out.append(major << 5 | 26)
        out += n.to_bytes(4, "big")
    else:
        out.append(major << 5 | 27)
        out += n.to_bytes(8, "big")


def _map_key(item: tuple[bytes, Any]) -> tuple[int, bytes]:
    return (len(item[0]), item[0])


def _encode(value: Any, out: bytearray) -> None:
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidRecord(f"integer out of range: {value}")
        if value >= 0:
            _head(0, value, out)
        else:
            _head(1, -1 - value, out)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _head(3, len(data), out)
        out += data
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        _head(2, len(data), out)
        out += data
    elif isinstance(value, Cid):
        out += b"\xd8\x2a"  # tag 42
        _head(2, len(value.raw) + 1, out)
        out.append(0)  # the multibase "identity" prefix DAG-CBOR requires
        out += value.raw
    elif isinstance(value, list | tuple):
        _head(4, len(value), out)
        for item in value:
            _encode(item, out)
    elif isinstance(value, Mapping):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidRecord(f"map keys must be strings, got {type(k).__name__}")
            items.append((k.encode("utf-8"), v))
        items.sort(key=_map_key)
        _head(5, len(items), out)
        for kb, v in items:
            _head(3, len(kb), out)
            out += kb
            _encode(v, out)
    elif isinstance(value, float):
        raise InvalidRecord("floats are not allowed in the ATProto data model")
    else:
        raise InvalidRecord(f"cannot encode {type(value).__name__} as DAG-CBOR")


def encode(value: Any) -> bytes:
    """Canonical DAG-CBOR of `value` (dict/list/str/int/bool/None/bytes/Cid)."""
    out = bytearray()
    _encode(value, out)
    return bytes(out)


# --- decoding ------------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, why: str) -> CorruptRepo:
        return CorruptRepo(f"invalid DAG-CBOR at byte {self.pos}: {why}")

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise self.fail("truncated")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def head(self) -> tuple[int, int]:
        if self.pos >= len(self.data):
            raise self.fail("truncated")
        b = self.data[self.pos]
        self.pos += 1
        major, info = b >> 5, b & 0x1F
        if info < 24:
            return major, info
        if info == 24:
            return major, self.take(1)[0]
        if info == 25:
            return major, int.from_bytes(self.take(2), "big")
        if info == 26:
            return major, int.from_bytes(self.take(4), "big")
        if info == 27:
            return major, int.from_bytes(self.take(8), "big")
        raise self.fail("indefinite lengths are not DAG-CBOR")

    def value(self, depth: int = 0) -> Any:
        if depth > 128:
            raise self.fail("nested too deeply")
        major, n = self.head()
        if major == 0:
            return n
        if major == 1:
            return -1 - n
        if major == 2:
            return self.take(n)
        if major == 3:
            try:
                return self.take(n).decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("invalid UTF-8") from None
        if major == 4:
            return [self.value(depth + 1) for _ in range(n)]
        if major == 5:
            out: dict[str, Any] = {}
            for _ in range(n):
                kmajor, klen = self.head()
                if kmajor != 3:
                    raise self.fail("map keys must be strings")
                try:
                    key = self.take(klen).decode("utf-8", "strict")
                except UnicodeDecodeError:
                    raise self.fail("invalid UTF-8 in a map key") from None
                if key in out:
                    raise self.fail(f"duplicate map key {key!r}")
                out[key] = self.value(depth + 1)
            return out
        if major == 6:
            if n != 42:
                raise self.fail(f"unsupported tag {n}")
            bmajor, blen = self.head()
            raw = self.take(blen)
            if bmajor != 2 or not raw or raw[0] != 0:
                raise self.fail("malformed CID link")
            try:
                return Cid.from_raw(raw[1:])
            except ValueError:
                raise self.fail("malformed CID link") from None
        # major 7
        if n == 20:
            return False
        if n == 21:
            return True
        if n == 22:
            return None
        raise self.fail("floats and other simple values are not allowed")


def decode(data: bytes) -> Any:
    """Decode one DAG-CBOR value; links come back as `Cid`, byte strings as `bytes`."""
    reader = _Reader(bytes(data))
    value = reader.value()
    if reader.pos != len(reader.data):
        raise reader.fail("trailing bytes")
    return value


# --- the JSON form of the data model ------------------------------------------------------------


def _b64decode(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRecord("$bytes must be base64") from None


def from_json(value: Any) -> Any:
    """JSON data model (`{"$link"}`, `{"$bytes"}`) to the form `encode` takes."""
    if isinstance(value, Mapping):
        if len(value) == 1:
            if "$link" in value:
                link = value["$link"]
                try:
                    return Cid.parse(link)
                except ValueError:
                    raise InvalidRecord(f"invalid $link {link!r}") from None
            if "$bytes" in value:
                raw = value["$bytes"]
                if not isinstance(raw, str):
                    raise InvalidRecord("$bytes must be a base64 string")
                return _b64decode(raw)
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidRecord("object keys must be strings")
            out[k] = from_json(v)
        return out
    if isinstance(value, list | tuple):
        return [from_json(v) for v in value]
    if isinstance(value, float):
        raise InvalidRecord("floats are not allowed in the ATProto data model")
    if value is None or isinstance(value, str | int | bool):
        return value
    raise InvalidRecord(f"not a JSON data model value: {type(value).__name__}")


def to_json(value: Any) -> Any:
    """The inverse of `from_json`: what XRPC responses carry."""
    if isinstance(value, Cid):
        return {"$link": str(value)}
    if isinstance(value, bytes):
        return {"$bytes": base64.b64encode(value).decode("ascii").rstrip("=")}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


# --- CAR v1 ----------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    n = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise CorruptRepo("truncated varint in CAR")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, pos
        shift += 7


def car_header(root: Cid) -> bytes:
    header = encode({"version": 1, "roots": [root]})
    return varint(len(header)) + header


def car_block(cid: Cid, data: bytes) -> bytes:
    return varint(len(cid.raw) + len(data)) + cid.raw + data


def write_car(root: Cid, blocks: Iterable[tuple[Cid, bytes]]) -> bytes:
    """A CARv1 file: header with one root, then the blocks in the order given."""
    parts = [car_header(root)]
    parts.extend(car_block(cid, data) for cid, data in blocks)
    return b"".join(parts)


def read_car(data: bytes) -> tuple[list[Cid], dict[Cid, bytes]]:
    """Parse a CARv1 file and check that every block hashes to its CID."""
    hlen, pos = read_varint(data, 0)
    header = decode(data[pos : pos + hlen])
    pos += hlen
    if not isinstance(header, dict) or header.get("version") != 1 or not isinstance(header.get("roots"), list):
        raise CorruptRepo("bad CAR header")
    roots = [r for r in header["roots"] if isinstance(r, Cid)]
    blocks: dict[Cid, bytes] = {}
    while pos < len(data):
        blen, pos = read_varint(data, pos)
        end = pos + blen
        if end > len(data):
            raise CorruptRepo("truncated CAR block")
        section = data[pos:end]
        pos = end
        # CIDv1 prefix: version, codec, hash code, digest length (all one-byte varints here).
        if len(section) < 4 or section[0] != 1:
            raise CorruptRepo("CAR block without a CIDv1")
        cid_len = 4 + section[3]
        cid = Cid(section[:cid_len])
        body = section[cid_len:]
        if not cid.matches(body):
            raise CorruptRepo(f"CAR block {cid} does not match its hash")
        blocks[cid] = body
    return roots, blocks
