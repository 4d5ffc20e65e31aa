"""RPM headers from the sqlite rpmdb (`rpmdb.sqlite`, RHEL 9, Fedora 33+, Rocky, Alma).

The `Packages` table holds one header blob per package: a big-endian index count and data
length, that many 16-byte index entries (tag, type, offset, count), then the data store. Only
six tags are needed. The Python bindings of librpm (`rpm`) are not on PyPI and need the C
library; the pure-Python RPM readers on PyPI parse `.rpm` files (lead + signature header), not
database blobs, and are unmaintained, hence this parser of the documented header format.
The older Berkeley DB and ndb databases are not read.
"""

from __future__ import annotations

import sqlite3
import struct
from dataclasses import dataclass
from pathlib import Path

_NAME, _VERSION, _RELEASE, _EPOCH, _ARCH, _SOURCERPM = 1000, 1001, 1002, 1003, 1022, 1044
_INT32, _STRING, _I18NSTRING = 4, 6, 9
_ENTRY = struct.Struct(">iiii")
_MAX_INDEX = 0xFFFF


@dataclass(frozen=True)
class Header:
    name: str | None
    version: str | None
    release: str | None
    epoch: int | None
    arch: str | None
    sourcerpm: str | None

    @property
    def source_name(self) -> str | None:
        """The source package name from `SOURCERPM` (`bash-5.1.8-6.el9.src.rpm` -> `bash`)."""
        if not self.sourcerpm:
            return None
        stem = self.sourcerpm.removesuffix(".rpm").removesuffix(".src").removesuffix(".nosrc")
        parts = stem.rsplit("-", 2)
        return parts[0] if len(parts) == 3 else None


def parse_header(blob: bytes) -> Header:
    """Decode the tags the inventory needs from one header blob; raises ValueError if malformed."""
    if len(blob) < 8:
        raise ValueError("header too short")
    count, data_len = struct.unpack_from(">ii", blob, 0)
    store = 8 + count * _ENTRY.size
    if not 0 < count <= _MAX_INDEX or data_len < 0 or store + data_len > len(blob):
        raise ValueError("header index out of bounds")
    data = blob[store : store + data_len]
    values: dict[int, str | int] = {}
    for i in range(count):
        tag, kind, offset, n = _ENTRY.unpack_from(blob, 8 + i * _ENTRY.size)
        if tag not in (_NAME, _VERSION, _RELEASE, _EPOCH, _ARCH, _SOURCERPM) or not 0 <= offset < data_len:
            continue
        if kind in (_STRING, _I18NSTRING):
            end = data.find(b"\0", offset)
            if end < 0:
                raise ValueError("unterminated string")
            values[tag] = data[offset:end].decode("utf-8", "replace")
        elif kind == _INT32 and n >= 1 and offset + 4 <= data_len:
            values[tag] = struct.unpack_from(">i", data, offset)[0]

    def text(tag: int) -> str | None:
        value = values.get(tag)
        return value if isinstance(value, str) else None

    epoch = values.get(_EPOCH)
    return Header(
        name=text(_NAME),
        version=text(_VERSION),
        release=text(_RELEASE),
        epoch=epoch if isinstance(epoch, int) else None,
        arch=text(_ARCH),
        sourcerpm=text(_SOURCERPM),
    )


def read_database(path: Path) -> list[Header]:
    """Every parseable header of an rpmdb.sqlite file (opened read-only; malformed blobs skipped)."""
    headers: list[Header] = []
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    except sqlite3.Error:
        return headers
    try:
        for (blob,) in conn.execute("SELECT blob FROM Packages ORDER BY hnum"):
            if isinstance(blob, bytes):
                try:
                    headers.append(parse_header(blob))
                except (ValueError, struct.error):
                    continue
    except sqlite3.Error:
        return headers
    finally:
        conn.close()
    return headers
