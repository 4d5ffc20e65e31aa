"""Vulnerability data in the OSV schema, indexed by (ecosystem, package name).

Sources: a zip in the layout of osv.dev's `all.zip` exports (one `<ID>.json` per record), a
directory searched recursively for OSV JSON files and such zips (e.g. `Debian/all.zip` and
`PyPI/all.zip` side by side), or an http(s) URL of a zip, fetched through the SSRF-guarded
client. Only what matching needs is kept per record; withdrawn records are
dropped at load. `version` is a hash of every record's name and bytes, so it changes exactly
when the content changes and holds can re-queue scans on it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atcr.errors import NetworkError
from atcr.http import SafeHttpClient, SsrfPolicy
from scanner.analysis import severity
from scanner.analysis.errors import VulnDBError
from scanner.analysis.langpkgs import normalize_pypi
from scanner.analysis.model import Severity

_RANGE_TYPES = ("ECOSYSTEM", "SEMVER")  # GIT ranges name commits, which an image does not record
_MAX_RECORD = 16 << 20
DEFAULT_MAX_DOWNLOAD = 4 << 30


Vectors = tuple[tuple[str, str], ...]  # OSV `severity[]` as (type, score) pairs
Words = tuple[str, ...]  # `severity`/`urgency` words of `database_specific`/`ecosystem_specific`


@dataclass(slots=True, eq=False)
class Vuln:
    """The parts of one OSV record a finding reports (only these are kept, to bound memory)."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    url: str | None
    vectors: Vectors
    words: Words
    _rating: Severity | None = None

    def rating(self) -> Severity:
        """The record-level severity, computed once (scoring a CVSS vector is not free)."""
        if self._rating is None:
            self._rating = severity.rate(self.vectors, self.words)
        return self._rating


@dataclass(slots=True, eq=False)
class Range:
    kind: str  # ECOSYSTEM or SEMVER
    events: tuple[tuple[str, str], ...]  # (introduced|fixed|last_affected|limit, version)
    compiled: object = None  # matching's parsed form, filled on first use


@dataclass(slots=True, eq=False)
class Affected:
    """One `affected[]` entry of a record: the package's ranges and explicit versions."""

    vuln: Vuln
    ranges: tuple[Range, ...]
    versions: frozenset[str]
    vectors: Vectors
    words: Words
    _rating: Severity | None = None

    def rating(self) -> Severity:
        """This entry's own severity when it has one (OSV allows it per package), else the record's."""
        if self._rating is None:
            own = severity.rate(self.vectors, self.words) if self.vectors or self.words else "unknown"
            self._rating = own if own != "unknown" else self.vuln.rating()
        return self._rating


def ecosystem_key(ecosystem: str) -> str:
    """The part of an OSV ecosystem name that must equal the image's.

    Red Hat's records carry a product stream (`Red Hat:enterprise_linux:9::appstream`); the
    image knows only its major release, so the stream is dropped.
    """
    if ecosystem.startswith("Red Hat:"):
        return ":".join(ecosystem.split(":")[:3])
    return ecosystem


def name_key(ecosystem: str, name: str) -> str:
    return normalize_pypi(name) if ecosystem == "PyPI" else name


def _url(record: Mapping[str, Any]) -> str | None:
    refs = [r for r in record.get("references") or () if isinstance(r, Mapping) and isinstance(r.get("url"), str)]
    for kind in ("ADVISORY", "WEB"):
        for ref in refs:
            if ref.get("type") == kind:
                return str(ref["url"])
    return str(refs[0]["url"]) if refs else None


def _vectors(value: Any) -> Vectors:
    if not isinstance(value, list):
        return ()
    return tuple(
        (str(e.get("type")), e["score"]) for e in value if isinstance(e, Mapping) and isinstance(e.get("score"), str)
    )


def _words(*specifics: Any) -> Words:
    return tuple(
        s[field]
        for s in specifics
        if isinstance(s, Mapping)
        for field in ("severity", "urgency")
        if isinstance(s.get(field), str)
    )


class VulnDB:
    """An in-memory index of OSV records."""

    def __init__(self) -> None:
        self._index: dict[tuple[str, str], list[Affected]] = {}
        self._hash = hashlib.sha256()
        self._version: str | None = None
        self.records = 0
        self.skipped = 0

    @property
    def version(self) -> str:
        """A content hash: equal for two loads of the same records, different after any change."""
        if self._version is None:
            self._version = "sha256:" + self._hash.hexdigest()
        return self._version

    def lookup(self, ecosystem: str, name: str) -> list[Affected]:
        return self._index.get((ecosystem_key(ecosystem), name_key(ecosystem.split(":", 1)[0], name)), [])

    @classmethod
    def load(
        cls,
        source: str | Path,
        *,
        policy: SsrfPolicy | None = None,
        timeout: float = 300.0,
        max_bytes: int = DEFAULT_MAX_DOWNLOAD,
    ) -> VulnDB:
        """Load a directory, a zip, or an http(s) URL of a zip (see the module docstring).

        `policy`, `timeout` and `max_bytes` apply to URLs only: the download is bounded in time
        and size and streamed to a temporary file, never held in memory.
        """
        text = str(source)
        if text.startswith(("http://", "https://")):
            with tempfile.TemporaryDirectory(prefix="atcr-vulndb-") as tmp:
                target = Path(tmp) / "db.zip"
                _download(text, target, policy=policy, timeout=timeout, max_bytes=max_bytes)
                return cls.load(target)
        path = Path(source)
        db = cls()
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".json", ".zip"))
            for file in files:
                relative = file.relative_to(path).as_posix()
                if file.suffix == ".zip":
                    db._add_zip(file, prefix=relative + "/")
                else:
                    db.add(relative, file.read_bytes())
        elif path.is_file():
            db._add_zip(path, prefix="")
        else:
            raise VulnDBError(f"{source}: no such directory or file")
        return db

    def _add_zip(self, path: Path, *, prefix: str) -> None:
        try:
            with zipfile.ZipFile(path) as archive:
                for name, data in _zip_records(archive):
                    self.add(prefix + name, data)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise VulnDBError(f"{path}: not a readable zip of OSV records: {exc}") from None

    def add(self, name: str, data: bytes) -> None:
        """Add one OSV record (`name` is its file name, part of the version hash)."""
        self._version = None
        self._hash.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        try:
            record = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            self.skipped += 1
            return
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            self.skipped += 1
            return
        self.records += 1
        if record.get("withdrawn"):
            return
        summary = record.get("summary") or (record.get("details") or "").strip().split("\n", 1)[0]
        vuln = Vuln(
            id=record["id"],
            aliases=tuple(a for a in record.get("aliases") or () if isinstance(a, str)),
            summary=summary if isinstance(summary, str) else "",
            url=_url(record),
            vectors=_vectors(record.get("severity")),
            words=_words(record.get("database_specific")),
        )
        for entry in record.get("affected") or ():
            self._add_affected(vuln, entry)

    def _add_affected(self, vuln: Vuln, entry: Any) -> None:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("package"), Mapping):
            return
        package = entry["package"]
        ecosystem, name = package.get("ecosystem"), package.get("name")
        if not isinstance(ecosystem, str) or not isinstance(name, str):
            return
        ranges: list[Range] = []
        for raw in entry.get("ranges") or ():
            if not isinstance(raw, Mapping) or raw.get("type") not in _RANGE_TYPES:
                continue
            events: list[tuple[str, str]] = []
            for event in raw.get("events") or ():
                if isinstance(event, Mapping):
                    events.extend((k, v) for k, v in event.items() if isinstance(v, str))
            if events:
                ranges.append(Range(str(raw["type"]), tuple(events)))
        versions = frozenset(v for v in entry.get("versions") or () if isinstance(v, str))
        if not ranges and not versions:
            return
        words = _words(entry.get("ecosystem_specific"), entry.get("database_specific"))
        affected = Affected(vuln, tuple(ranges), versions, _vectors(entry.get("severity")), words)
        base = ecosystem.split(":")[0]
        self._index.setdefault((ecosystem_key(ecosystem), name_key(base, name)), []).append(affected)


def _zip_records(archive: zipfile.ZipFile) -> Iterator[tuple[str, bytes]]:
    for info in sorted(archive.infolist(), key=lambda i: i.filename):
        if info.is_dir() or not info.filename.endswith(".json") or info.file_size > _MAX_RECORD:
            continue
        yield info.filename, archive.read(info)


def _download(url: str, target: Path, *, policy: SsrfPolicy | None, timeout: float, max_bytes: int) -> None:
    """Fetch `url` into `target` on a private event loop (callers may be inside one already)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(_fetch(url, target, policy=policy, timeout=timeout, max_bytes=max_bytes))
        except BaseException as exc:
            failure.append(exc)

    worker = threading.Thread(target=run, name="vulndb-download")
    worker.start()
    worker.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, VulnDBError):
            raise exc
        if isinstance(exc, NetworkError):
            raise VulnDBError(f"{url}: {exc}") from None
        raise exc


async def _fetch(url: str, target: Path, *, policy: SsrfPolicy | None, timeout: float, max_bytes: int) -> None:
    import httpx

    async with SafeHttpClient(policy=policy, timeout=min(timeout, 30.0)) as client:
        try:
            async with asyncio.timeout(timeout), client.raw.stream("GET", url) as resp:
                if resp.status_code != 200:
                    raise VulnDBError(f"{url}: HTTP {resp.status_code}")
                total = 0
                with target.open("wb") as out:
                    async for chunk in resp.aiter_bytes():
                        total += len(chunk)
                        if total > max_bytes:
                            raise VulnDBError(f"{url}: larger than {max_bytes} bytes")
                        out.write(chunk)
        except TimeoutError:
            raise VulnDBError(f"{url}: download timed out after {timeout:.0f} s") from None
        except httpx.HTTPError as exc:
            raise VulnDBError(f"{url}: {type(exc).__name__}") from None
