"""Build image layers and OSV records in tests, in the real formats.

Layers are real tar streams (plain, gzip or zstd) with OCI whiteouts; package databases are
written the way dpkg, apk and rpm write them; Go build info and jars follow the formats the Go
linker and Maven produce. Nothing here is a double of the analyzer: it only writes files.
"""

from __future__ import annotations

import gzip
import io
import json
import sqlite3
import struct
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import zstandard

Compression = Literal["tar", "gzip", "zstd"]


@dataclass
class Layer:
    """A layer under construction: entries are written in the order they are added."""

    entries: list[tuple[tarfile.TarInfo, bytes | None]] = field(default_factory=list)

    def file(self, path: str, data: bytes | str, mode: int = 0o644) -> Layer:
        raw = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(path)
        info.size = len(raw)
        info.mode = mode
        self.entries.append((info, raw))
        return self

    def directory(self, path: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        self.entries.append((info, None))
        return self

    def symlink(self, path: str, target: str) -> Layer:
        info = tarfile.TarInfo(path)
        info.type = tarfile.SYMTYPE
        info.linkname = target
        self.entries.append((info, None))
        return self

    def whiteout(self, path: str) -> Layer:
        head, _, base = path.rpartition("/")
        return self.file(f"{head}/.wh.{base}" if head else f".wh.{base}", b"")

    def opaque(self, directory: str) -> Layer:
        return self.file(f"{directory}/.wh..wh..opq", b"")

    def tar_bytes(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for info, data in self.entries:
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def write(self, target: Path, compression: Compression = "gzip") -> Path:
        raw = self.tar_bytes()
        if compression == "gzip":
            raw = gzip.compress(raw, mtime=0)
        elif compression == "zstd":
            raw = zstandard.ZstdCompressor().compress(raw)
        target.write_bytes(raw)
        return target


def os_release(ident: str, version_id: str, pretty: str = "") -> str:
    return f'PRETTY_NAME="{pretty or ident}"\nID={ident}\nVERSION_ID="{version_id}"\n'


def dpkg_entry(
    name: str, version: str, *, source: str | None = None, status: str = "install ok installed", arch: str = "amd64"
) -> str:
    lines = [f"Package: {name}", f"Status: {status}", "Priority: optional", f"Architecture: {arch}"]
    if source:
        lines.append(f"Source: {source}")
    lines += [f"Version: {version}", "Description: test package", " with a continuation line"]
    return "\n".join(lines) + "\n"


def dpkg_status(*entries: str) -> str:
    return "\n".join(entries)


def apk_entry(name: str, version: str, *, origin: str | None = None, arch: str = "x86_64") -> str:
    lines = ["C:Q1abcdefghijklmnopqrstuvwxyz0123=", f"P:{name}", f"V:{version}", f"A:{arch}", "S:1000", "I:2000"]
    lines += ["T:test package", "U:https://example.invalid", "L:MIT", f"o:{origin or name}", "m:Test <t@t>"]
    return "\n".join(lines) + "\n"


def apk_installed(*entries: str) -> str:
    return "\n".join(entries) + "\n"


# --- RPM: a header blob as rpm stores it in rpmdb.sqlite's Packages table ---------------------

_RPM_STRING, _RPM_INT32 = 6, 4


def rpm_header(
    name: str,
    version: str,
    release: str,
    *,
    epoch: int | None = None,
    arch: str = "x86_64",
    sourcerpm: str | None = None,
) -> bytes:
    """An RPM header blob (index count, data length, 16-byte entries, data store), big-endian."""
    tags: list[tuple[int, int, bytes]] = []
    if epoch is not None:
        tags.append((1003, _RPM_INT32, struct.pack(">i", epoch)))
    tags += [
        (1000, _RPM_STRING, name.encode() + b"\0"),
        (1001, _RPM_STRING, version.encode() + b"\0"),
        (1002, _RPM_STRING, release.encode() + b"\0"),
        (1004, _RPM_STRING, b"summary\0"),  # a tag the reader must skip
        (1022, _RPM_STRING, arch.encode() + b"\0"),
    ]
    if sourcerpm:
        tags.append((1044, _RPM_STRING, sourcerpm.encode() + b"\0"))
    store = b""
    index = b""
    for tag, kind, data in sorted(tags):
        if kind == _RPM_INT32:
            store += b"\0" * (-len(store) % 4)  # int32 data is 4-aligned in the store
        index += struct.pack(">iiii", tag, kind, len(store), 1)
        store += data
    return struct.pack(">ii", len(tags), len(store)) + index + store


def rpmdb_sqlite(target: Path, headers: list[bytes]) -> bytes:
    """An rpmdb.sqlite with rpm's schema for the Packages table; returns the file's bytes."""
    conn = sqlite3.connect(target)
    conn.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)")
    conn.execute("CREATE TABLE Name (key TEXT NOT NULL, hnum INTEGER NOT NULL, idx INTEGER NOT NULL)")
    conn.executemany("INSERT INTO Packages (blob) VALUES (?)", [(h,) for h in headers])
    conn.commit()
    conn.close()
    return target.read_bytes()


# --- Python and npm ---------------------------------------------------------------------------


def dist_info_metadata(name: str, version: str) -> str:
    return (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: test\n\nLong description\nName: not-this\n"
    )


def package_json(name: str, version: str) -> str:
    return json.dumps({"name": name, "version": version, "license": "MIT", "dependencies": {}})


# --- Go build info (Go 1.18+ inline format) and Maven jars -------------------------------------

GO_MAGIC = b"\xff Go buildinf:"
_GO_SENTINEL_START = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")
_GO_SENTINEL_END = bytes.fromhex("f932433186182072008242104116d8f2")


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def go_binary(
    go_version: str,
    main: tuple[str, str],
    deps: list[tuple[str, str]],
    replace: dict[str, tuple[str, str]] | None = None,
) -> bytes:
    """An ELF file whose data holds a `.go.buildinfo` blob as the Go 1.18+ linker writes it."""
    lines = [f"path\t{main[0]}", f"mod\t{main[0]}\t{main[1]}\t"]
    for path, version in deps:
        lines.append(f"dep\t{path}\t{version}\th1:AAAA=")
        if replace and path in replace:
            lines.append(f"=>\t{replace[path][0]}\t{replace[path][1]}\th1:BBBB=")
    lines.append("build\t-compiler=gc")
    modinfo = _GO_SENTINEL_START + ("\n".join(lines) + "\n").encode() + _GO_SENTINEL_END
    header = GO_MAGIC + bytes([8, 0x2]) + b"\0" * 16
    blob = header + _uvarint(len(go_version)) + go_version.encode() + _uvarint(len(modinfo)) + modinfo
    elf = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00" + b"\0" * 44
    # text before, the buildinfo 16-aligned in the middle, more data after (as in a real binary)
    text = elf + bytes(range(256)) * 8200  # ~2 MiB: the header crosses the walker's 1 MiB chunks
    text += b"\0" * (-len(text) % 16)
    return text + blob + b"\0" * 4096


def jar(artifacts: list[tuple[str, str, str]], nested: dict[str, bytes] | None = None) -> bytes:
    """A jar with one `META-INF/maven/<g>/<a>/pom.properties` per artifact, plus nested jars."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
        for group, artifact, version in artifacts:
            archive.writestr(
                f"META-INF/maven/{group}/{artifact}/pom.properties",
                f"#Generated by Maven\n#Mon Jan 01 00:00:00 UTC 2024\ngroupId={group}\nartifactId={artifact}\nversion={version}\n",
            )
        for name, data in (nested or {}).items():
            archive.writestr(name, data)
    return buf.getvalue()


# --- OSV records --------------------------------------------------------------------------------


def osv(
    ident: str,
    ecosystem: str,
    name: str,
    events: list[dict[str, str]] | None = None,
    *,
    range_type: str = "ECOSYSTEM",
    versions: list[str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One record in the OSV schema (1.6) with one affected package."""
    affected: dict[str, Any] = {"package": {"ecosystem": ecosystem, "name": name}}
    if events is not None:
        affected["ranges"] = [{"type": range_type, "events": events}]
    if versions is not None:
        affected["versions"] = versions
    record: dict[str, Any] = {
        "schema_version": "1.6.0",
        "id": ident,
        "modified": "2024-01-01T00:00:00Z",
        "published": "2024-01-01T00:00:00Z",
        "summary": f"{ident} in {name}",
        "affected": [affected],
        "references": [{"type": "ADVISORY", "url": f"https://security.example.invalid/{ident}"}],
    }
    record.update(extra)
    return record


def write_osv_dir(target: Path, records: list[dict[str, Any]]) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for record in records:
        (target / f"{record['id']}.json").write_text(json.dumps(record, indent=1))
    return target


def write_osv_zip(target: Path, records: list[dict[str, Any]]) -> Path:
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for record in records:
            archive.writestr(f"{record['id']}.json", json.dumps(record, indent=1))
    return target
