"""Walk an image's layers in order and keep only the files the inventory reads.

Layers are streamed member by member (tar, tar+gzip or tar+zstd, told apart by their magic bytes),
so memory holds at most one small captured file at a time plus the index of what was captured.
Whiteouts follow the OCI image spec: `.wh.<name>` deletes `<name>` from the layers below and
`.wh..wh..opq` hides everything the layers below put in its directory; both apply only to lower
layers, so entries of the same layer are added after the layer's whiteouts are applied.

Two kinds of file are parsed while they stream instead of being kept: Go binaries (any ELF file;
the build info is found by scanning for its magic, the decompression of the layer costs far more
than the scan) and Java archives (spilled to a temporary file because a zip needs random access).
The RPM database is spilled to disk too, since sqlite3 reads files, not streams.
"""

from __future__ import annotations

import gzip
import posixpath
import shutil
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Literal, cast

import zstandard

from scanner.analysis import gobuild, java
from scanner.analysis.errors import AnalysisError, LayerError
from scanner.analysis.model import Package

Kind = Literal["os-release", "dpkg", "apk", "rpmdb", "python", "python-egg-file", "npm", "go", "jar"]

_CHUNK = 1 << 20
# Bounds on what is kept in memory from one file: a dpkg status of a large image is a few MiB.
_MAX_DB_BYTES = 64 << 20
_MAX_SMALL_BYTES = 4 << 20
_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"


@dataclass
class Captured:
    """One file of the final filesystem the inventory needs: its bytes, its spilled copy, or what it held."""

    kind: Kind
    data: bytes = b""
    spill: Path | None = None
    packages: tuple[Package, ...] = ()


def classify(path: str) -> Kind | None:
    """The inventory kind of an image path (no leading slash), or None when it is not needed."""
    if path in ("etc/os-release", "usr/lib/os-release"):
        return "os-release"
    if path == "var/lib/dpkg/status":
        return "dpkg"
    head, base = posixpath.split(path)
    if head == "var/lib/dpkg/status.d" and base and not base.endswith(".md5sums"):
        return "dpkg"
    if path == "lib/apk/db/installed":
        return "apk"
    if path in ("var/lib/rpm/rpmdb.sqlite", "usr/lib/sysimage/rpm/rpmdb.sqlite"):
        return "rpmdb"
    if (base == "METADATA" and head.endswith(".dist-info")) or (base == "PKG-INFO" and head.endswith(".egg-info")):
        return "python"
    if base.endswith(".egg-info") and "-packages/" in path:
        return "python-egg-file"  # distutils' single-file egg-info, same headers as PKG-INFO
    if base == "package.json" and _is_node_module_dir(head):
        return "npm"
    if base.endswith((".jar", ".war", ".ear")):
        return "jar"
    return None


def _is_node_module_dir(head: str) -> bool:
    parts = head.split("/")
    if len(parts) >= 2 and parts[-2] == "node_modules":
        return True
    return len(parts) >= 3 and parts[-3] == "node_modules" and parts[-2].startswith("@")


def normalize(name: str) -> str | None:
    """A tar member name as an image path without leading slash; None for names escaping the root."""
    path = posixpath.normpath("/" + name).lstrip("/")
    if not path or path == "." or path.startswith(".."):
        return None
    return path


def _at_or_under(root: str, path: str) -> bool:
    return path == root or path.startswith(root + "/")


def _under(directory: str, path: str) -> bool:
    return not directory or path.startswith(directory + "/")


@contextmanager
def _open_layer(path: Path) -> Iterator[IO[bytes]]:
    """The decompressed stream of a layer file, by magic bytes."""
    with path.open("rb") as raw:
        magic = raw.read(4)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
                yield cast(IO[bytes], gz)
        elif magic == b"\x28\xb5\x2f\xfd":
            with zstandard.ZstdDecompressor().stream_reader(raw, read_size=_CHUNK, read_across_frames=True) as zst:
                yield cast(IO[bytes], zst)
        else:
            yield raw


def _read_bounded(stream: IO[bytes], limit: int) -> bytes | None:
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


class LayerIndex:
    """The captured files of the image after all layers, with whiteouts applied."""

    def __init__(self, workdir: Path) -> None:
        self.files: dict[str, Captured] = {}
        self._workdir = workdir
        self._spills = 0

    def add_layers(self, layers: Sequence[Path]) -> None:
        for number, layer in enumerate(layers):
            try:
                self._add_layer(layer)
            except AnalysisError:
                raise
            except (tarfile.TarError, OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
                raise LayerError(f"layer {number} ({layer.name}): not a readable tar stream: {exc}") from None

    def _add_layer(self, layer: Path) -> None:
        deleted: list[str] = []
        opaque: list[str] = []
        replaced: set[str] = set()
        added: dict[str, Captured] = {}
        with _open_layer(layer) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                path = normalize(member.name)
                if path is None:
                    continue
                head, base = posixpath.split(path)
                if base == _OPAQUE:
                    opaque.append(head)
                    continue
                if base.startswith(_WHITEOUT):
                    deleted.append(posixpath.join(head, base[len(_WHITEOUT) :]))
                    continue
                if path in self.files:
                    replaced.add(path)  # only paths already captured: the set stays small
                previous = added.pop(path, None)
                if previous is not None and previous.spill is not None:
                    previous.spill.unlink(missing_ok=True)
                captured = self._capture(tar, member, path)
                if captured is not None:
                    added[path] = captured
        for path in deleted:
            self._drop(partial(_at_or_under, path))
        for directory in opaque:
            self._drop(partial(_under, directory))
        self._drop(replaced.__contains__)
        self.files.update(added)

    def _drop(self, match: Callable[[str], bool]) -> None:
        for path in [p for p in self.files if match(p)]:
            captured = self.files.pop(path)
            if captured.spill is not None:
                captured.spill.unlink(missing_ok=True)

    def _capture(self, tar: tarfile.TarFile, member: tarfile.TarInfo, path: str) -> Captured | None:
        if not member.isfile():
            return None
        kind = classify(path)
        is_exec = bool(member.mode & 0o111)
        if kind is None and not (is_exec and member.size > 1024):
            return None
        stream = tar.extractfile(member)
        if stream is None:
            return None
        with stream:
            if kind is None:
                found = gobuild.scan_stream(stream, "/" + path)
                return Captured("go", packages=found) if found else None
            if kind == "rpmdb":
                return Captured(kind, spill=self._spill(stream))
            if kind == "jar":
                spill = self._spill(stream)
                try:
                    return Captured(kind, packages=java.scan_archive(spill, "/" + path))
                finally:
                    spill.unlink(missing_ok=True)
            limit = _MAX_DB_BYTES if kind in ("dpkg", "apk") else _MAX_SMALL_BYTES
            data = _read_bounded(stream, limit)
            return None if data is None else Captured(kind, data=data)

    def _spill(self, stream: IO[bytes]) -> Path:
        self._spills += 1
        target = self._workdir / f"spill-{self._spills}"
        with target.open("wb") as out:
            shutil.copyfileobj(stream, out, _CHUNK)
        return target
