"""Decide which OSV records affect which installed packages.

Range evaluation follows the OSV schema's reference algorithm: events sorted by version,
`introduced` opens, `fixed` (exclusive) and `last_affected` (inclusive) close, and `limit`
bounds the whole range from above. A version listed in `versions` is affected regardless.
Each range is parsed and sorted once, on first use, and kept on the database's range object.
Debian, Ubuntu and Alpine records name source packages, so those are looked up by the
package's source name and compared with the source's version when dpkg records one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cmp_to_key
from urllib.parse import parse_qs

from scanner.analysis import versions
from scanner.analysis.model import Finding, Package
from scanner.analysis.vulndb import Affected, Range, VulnDB

_SOURCE_KEYED = ("Debian", "Ubuntu", "Alpine")
_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 2}

Step = tuple[str, versions.Comparable | None, str]  # (event kind, version key or None for "0", version)


@dataclass(frozen=True)
class CompiledRange:
    """A range's events sorted by version with their keys parsed, ready to evaluate many times."""

    steps: tuple[Step, ...]
    limits: tuple[versions.Comparable, ...]


_UNORDERED = object()  # marks a range whose versions do not parse: it never matches


def _order_scheme(kind: str, scheme: str) -> str:
    return "SEMVER" if kind == "SEMVER" and scheme != "Go" else scheme


def _step_order(a: Step, b: Step) -> int:
    if a[1] is None or b[1] is None:
        return (b[1] is None) - (a[1] is None)
    if a[1] < b[1]:
        return -1
    if b[1] < a[1]:
        return 1
    return _ORDER[a[0]] - _ORDER[b[0]]


def compile_range(kind: str, events: tuple[tuple[str, str], ...], scheme: str) -> CompiledRange:
    """Parse and sort a range's events; raises versions.UnorderedVersion if one does not parse."""
    order = _order_scheme(kind, scheme)
    if len(events) == 2 and events[0] == ("introduced", "0") and events[1][0] in ("fixed", "last_affected"):
        # most records: affected from the start until one fix; nothing to sort
        return CompiledRange(
            (("introduced", None, "0"), (events[1][0], versions.key(order, events[1][1]), events[1][1])), ()
        )
    limits = tuple(versions.key(order, v) for k, v in events if k == "limit" and v != "*")
    steps: list[Step] = []
    for event, value in events:
        if event in _ORDER:
            is_zero = event == "introduced" and value == "0"
            steps.append((event, None if is_zero else versions.key(order, value), value))
    steps.sort(key=cmp_to_key(_step_order))
    return CompiledRange(tuple(steps), limits)


def evaluate(compiled: CompiledRange, installed: versions.Comparable) -> tuple[bool, str | None]:
    """Whether an installed version key falls in the range, and the fix that ends its span.

    Events above the installed version cannot change the answer; the first of them is the end
    of the span the version is in, which is its fix when it is a `fixed` event.
    """
    if compiled.limits and not any(installed < limit for limit in compiled.limits):
        return False, None
    affected = False
    for event, key, value in compiled.steps:
        if key is not None and installed < key:
            return affected, (value if affected and event == "fixed" else None)
        if event == "introduced":
            affected = True
        elif event == "fixed" or (event == "last_affected" and key is not None and key < installed):
            affected = False
    return affected, None


def match_version(version: str, kind: str, events: tuple[tuple[str, str], ...], scheme: str) -> tuple[bool, str | None]:
    """Whether `version` falls in one OSV range, and the fix that ends the span it falls in.

    Raises versions.UnorderedVersion when a version of the range (or `version`) does not parse.
    """
    return evaluate(compile_range(kind, events, scheme), versions.key(_order_scheme(kind, scheme), version))


def _range_hit(rng: Range, version: str, scheme: str) -> tuple[bool, str | None]:
    if rng.compiled is None:
        try:
            rng.compiled = compile_range(rng.kind, rng.events, scheme)
        except versions.UnorderedVersion:
            rng.compiled = _UNORDERED
    if not isinstance(rng.compiled, CompiledRange):
        return False, None
    try:
        installed = versions.key(_order_scheme(rng.kind, scheme), version)
    except versions.UnorderedVersion:
        return False, None
    return evaluate(rng.compiled, installed)


def _affects(entry: Affected, version: str, scheme: str) -> tuple[bool, str | None]:
    for rng in entry.ranges:
        hit, fixed_in = _range_hit(rng, version, scheme)
        if hit:
            return True, fixed_in
    return version in entry.versions, None


def lookup_identity(package: Package) -> tuple[str, str]:
    """The (name, version) records are keyed and compared by: the source package for distros keyed by it."""
    scheme = versions.ecosystem_base(package.ecosystem)
    if scheme in _SOURCE_KEYED and package.source:
        return package.source, _source_version(package) or package.version
    return package.name, package.version


def _source_version(package: Package) -> str | None:
    """The source version dpkg recorded (`Source: name (version)`), carried in the purl's `upstream`."""
    _, _, query = package.purl.partition("?")
    upstream = parse_qs(query.partition("#")[0]).get("upstream")
    if upstream and "@" in upstream[0]:
        return upstream[0].split("@", 1)[1]
    return None


def findings_for(package: Package, db: VulnDB) -> list[Finding]:
    """Findings for one package, one per record; a record aliased by one already reported is skipped."""
    name, version = lookup_identity(package)
    scheme = versions.ecosystem_base(package.ecosystem)
    hits: dict[str, tuple[Affected, str | None]] = {}
    for entry in db.lookup(package.ecosystem, name):
        if entry.vuln.id in hits:
            continue
        hit, fixed_in = _affects(entry, version, scheme)
        if hit:
            hits[entry.vuln.id] = (entry, fixed_in)
    out: list[Finding] = []
    seen: set[str] = set()
    for vuln_id in sorted(hits):
        if vuln_id in seen:
            continue
        entry, fixed_in = hits[vuln_id]
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
