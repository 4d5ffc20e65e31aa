"""Decide which OSV records affect which installed packages.

Range evaluation follows the OSV schema's reference algorithm: events sorted by version,
`introduced` opens, `fixed` (exclusive) and `last_affected` (inclusive) close, and `limit`
bounds the whole range from above. A version listed in `versions` is affected regardless.
Debian, Ubuntu and Alpine records name source packages, so those are looked up by the
package's source name and compared with the source's version when dpkg records one.
"""

from __future__ import annotations

from collections.abc import Iterable

from packageurl import PackageURL

from scanner.analysis import versions
from scanner.analysis.model import Finding, Package
from scanner.analysis.vulndb import Affected, Range, VulnDB

_SOURCE_KEYED = ("Debian", "Ubuntu", "Alpine")
_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 2, "limit": 3}


def match_version(version: str, kind: str, events: tuple[tuple[str, str], ...], scheme: str) -> tuple[bool, str | None]:
    """Whether `version` falls in one OSV range, and the fix that ends the span it falls in.

    Raises versions.UnorderedVersion when a version of the range (or `version`) does not parse.
    """
    order_scheme = "SEMVER" if kind == "SEMVER" and scheme != "Go" else scheme
    installed = versions.key(order_scheme, version)
    limits = [v for k, v in events if k == "limit" and v != "*"]
    if limits and all(installed >= versions.key(order_scheme, v) for v in limits):
        return False, None

    def sort_key(event: tuple[str, str]) -> tuple[int, object, int]:
        kind_, value = event
        if kind_ == "introduced" and value == "0":
            return (0, 0, 0)
        return (1, _Key(versions.key(order_scheme, value)), _ORDER.get(kind_, 9))

    affected = False
    fixed_in: str | None = None
    for kind_, value in sorted((e for e in events if e[0] != "limit"), key=sort_key):
        if kind_ == "introduced":
            if value == "0" or versions.key(order_scheme, value) <= installed:
                affected = True
                fixed_in = None
        elif kind_ == "fixed":
            if versions.key(order_scheme, value) <= installed:
                affected = False
            elif affected and fixed_in is None:
                fixed_in = value
        elif kind_ == "last_affected" and installed > versions.key(order_scheme, value):
            affected = False
    return affected, (fixed_in if affected else None)


class _Key:
    """Wraps a version key so sort() can compare keys of one scheme inside a tuple."""

    __slots__ = ("value",)

    def __init__(self, value: versions.Comparable) -> None:
        self.value = value

    def __lt__(self, other: _Key) -> bool:
        return bool(self.value < other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Key) and bool(self.value == other.value)

    __hash__ = None  # type: ignore[assignment]


def _affects(entry: Affected, version: str, scheme: str) -> tuple[bool, str | None]:
    if version in entry.versions:
        return True, _first_fix(entry, version, scheme)
    for rng in entry.ranges:
        try:
            hit, fixed_in = match_version(version, rng.kind, rng.events, scheme)
        except versions.UnorderedVersion:
            continue
        if hit:
            return True, fixed_in
    return False, None


def _first_fix(entry: Affected, version: str, scheme: str) -> str | None:
    for rng in entry.ranges:
        try:
            hit, fixed_in = match_version(version, rng.kind, rng.events, scheme)
        except versions.UnorderedVersion:
            continue
        if hit and fixed_in:
            return fixed_in
    return None


def lookup_identity(package: Package) -> tuple[str, str]:
    """The (name, version) records are keyed and compared by: the source package for distros that key by it."""
    scheme = versions.ecosystem_base(package.ecosystem)
    if scheme in _SOURCE_KEYED and package.source:
        return package.source, _source_version(package) or package.version
    return package.name, package.version


def _source_version(package: Package) -> str | None:
    try:
        upstream = PackageURL.from_string(package.purl).qualifiers
    except ValueError:
        return None
    value = upstream.get("upstream") if isinstance(upstream, dict) else None
    if isinstance(value, str) and "@" in value:
        return value.split("@", 1)[1]
    return None


def findings_for(package: Package, db: VulnDB) -> list[Finding]:
    """Findings for one package, one per record; a record aliased by another already reported is skipped."""
    name, version = lookup_identity(package)
    scheme = versions.ecosystem_base(package.ecosystem)
    out: list[Finding] = []
    seen: set[str] = set()
    hits: dict[str, tuple[Affected, str | None]] = {}
    for entry in db.lookup(package.ecosystem, name):
        if entry.vuln.id in hits:
            continue
        hit, fixed_in = _affects(entry, version, scheme)
        if hit:
            hits[entry.vuln.id] = (entry, fixed_in)
    for vuln_id in sorted(hits):
        entry, fixed_in = hits[vuln_id]
        if vuln_id in seen:
            continue
        seen.add(vuln_id)
        seen.update(entry.vuln.aliases)
        out.append(
            Finding(
                id=vuln_id,
                aliases=entry.vuln.aliases,
                package=package,
                fixed_in=fixed_in,
                severity=entry.rating(),
                summary=entry.vuln.summary,
                url=entry.vuln.url,
            )
        )
    return out


def match_all(packages: Iterable[Package], db: VulnDB) -> list[Finding]:
    found: list[Finding] = []
    for package in packages:
        found.extend(findings_for(package, db))
    return found


__all__ = ["Range", "findings_for", "match_all", "match_version"]
