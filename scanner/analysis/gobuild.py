"""Go modules from the build info the Go linker embeds in every binary (Go 1.18 and later).

The `.go.buildinfo` section starts with a 32-byte header (`\\xff Go buildinf:`, pointer size,
flags); with flag bit 2 set (every Go since 1.18) the Go version and the module info follow
inline as two uvarint-length-prefixed strings, so the blob can be read from a forward-only
stream without parsing ELF section headers. The module info is the text `go version -m` prints
(`path`, `mod`, `dep`, `=>` lines between two 16-byte sentinels). Binaries built by older Go
store pointers instead of the strings and are skipped; `debug/buildinfo` is Go-only, and no
maintained Python library reads this format, hence this small parser.
"""

from __future__ import annotations

from typing import IO

from packageurl import PackageURL

from scanner.analysis.model import Package

MAGIC = b"\xff Go buildinf:"
_HEADER = 32
_FLAG_INLINE = 0x2
_CHUNK = 1 << 20
_MAX_BLOB = 1 << 20  # module info of a large binary is tens of KiB


def scan_stream(stream: IO[bytes], location: str) -> tuple[Package, ...]:
    """The modules of the Go binary in `stream` (read forward only); empty when it is not one."""
    head = stream.read(_CHUNK)
    if not head.startswith(b"\x7fELF"):
        return ()
    window = head
    while True:
        at = _find_header(window)
        if at >= 0:
            blob = window[at:]
            while len(blob) < _HEADER + _MAX_BLOB:
                more = stream.read(_CHUNK)
                if not more:
                    break
                blob += more
                if _complete(blob):
                    break
            return parse_blob(blob, location)
        more = stream.read(_CHUNK)
        if not more:
            return ()
        window = window[-(len(MAGIC) - 1) :] + more


def _find_header(window: bytes) -> int:
    """Offset of the first plausible header; one too near the end to check is returned unchecked."""
    start = 0
    while (at := window.find(MAGIC, start)) >= 0:
        if len(window) - at < 16:
            return at
        if window[at + 14] in (4, 8) and window[at + 15] & _FLAG_INLINE:
            return at
        start = at + 1
    return -1


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated uvarint")


def _strings(blob: bytes) -> tuple[str, str]:
    pos = _HEADER
    out: list[str] = []
    for _ in range(2):
        size, pos = _uvarint(blob, pos)
        if pos + size > len(blob):
            raise ValueError("truncated string")
        out.append(blob[pos : pos + size].decode("utf-8", "replace"))
        pos += size
    return out[0], out[1]


def _complete(blob: bytes) -> bool:
    try:
        _strings(blob)
    except ValueError:
        return False
    return True


def parse_blob(blob: bytes, location: str) -> tuple[Package, ...]:
    """Packages of a build info blob starting at its magic: the stdlib, the main module, its deps."""
    if not blob.startswith(MAGIC) or len(blob) < _HEADER or not blob[15] & _FLAG_INLINE:
        return ()
    try:
        go_version, modinfo = _strings(blob)
    except ValueError:
        return ()
    if len(modinfo) >= 33 and modinfo[-17] == "\n":
        modinfo = modinfo[16:-16]  # the linker wraps it in two 16-byte sentinels
    found: list[Package] = []
    if go_version.startswith("go"):
        found.append(_package("stdlib", go_version, location))
    current: list[str] | None = None
    modules: list[list[str]] = []
    for line in modinfo.splitlines():
        fields = line.split("\t")
        if fields[0] in ("mod", "dep") and len(fields) >= 3:
            current = [fields[1], fields[2]]
            modules.append(current)
        elif fields[0] == "=>" and current is not None and len(fields) >= 3:
            # a replace directive names the code that was built; a directory has no version
            local = fields[1].startswith((".", "/"))
            current[0], current[1] = (current[0], "(devel)") if local else (fields[1], fields[2])
    for path, version in modules:
        found.append(_package(path, version, location))
    return tuple(found)


def _package(path: str, version: str, location: str) -> Package:
    namespace, _, name = path.rpartition("/")
    purl = PackageURL(type="golang", namespace=namespace or None, name=name, version=version).to_string()
    return Package(name=path, version=version, ecosystem="Go", purl=purl, source=None, location=location)
