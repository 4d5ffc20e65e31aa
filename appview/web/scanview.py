"""What pages show of a manifest's scan: a badge, the state, findings, SBOM packages.

Everything here comes from the hold: its `io.atcr.hold.scan` record (counts), its
`getScanStatus` (queued / scanning / failed before a first record), and the record's two
documents. On a private hold the documents (and so the counts too) are shown only to a viewer
the hold lets read them (its captain and crew, proven by the signed-in viewer's service
token); everyone else sees the "private" state, not "not scanned". Reports in our schema
(docs/scanning.md) and Grype's (`matches[]`, what ATCR's scanner writes) are both read, so
records of foreign scanners show too. Waits are bounded (a hung hold costs a page a second,
then shows "not scanned").
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from appview.scans import ScanResults

T = TypeVar("T")
WAIT: Final = 1.5
SEVERITY_ORDER: Final = ("critical", "high", "medium", "low", "negligible", "unknown")
SORTS: Final = ("severity", "id", "package")
MAX_ROWS: Final = 2000


async def _bounded(call: Awaitable[T], default: T) -> T:
    try:
        return await asyncio.wait_for(call, WAIT)
    except Exception:  # a slow or failing hold: the page shows what it has
        return default


@dataclass(frozen=True)
class Badge:
    state: str  # done | scanning | failed | none | private (results exist; the hold's crew only)
    critical: int = 0
    high: int = 0
    medium: int = 0
    low: int = 0
    total: int = 0

    @property
    def worst(self) -> str:
        for name in ("critical", "high", "medium", "low"):
            if getattr(self, name):
                return name
        return "clean"


@dataclass(frozen=True)
class Finding:
    id: str
    url: str | None
    package: str
    installed: str
    fixed_in: str | None
    severity: str
    summary: str


@dataclass(frozen=True)
class SbomPackage:
    name: str
    version: str
    purl: str


@dataclass
class ScanView:
    badge: Badge
    scanned_at: str | None = None
    scanner: str | None = None
    error: str | None = None
    rescanning: bool = False
    findings: list[Finding] = field(default_factory=list)
    packages: list[SbomPackage] = field(default_factory=list)
    package_count: int = 0
    sort: str = "severity"
    package_filter: str = ""
    has_sbom: bool = False


def badge_of(record: dict[str, Any] | None, status: dict[str, Any] | None) -> Badge:
    state = str((status or {}).get("state") or "none")
    if record is not None:
        def n(name: str) -> int:
            value = record.get(name) if record is not None else None
            return value if isinstance(value, int) and value >= 0 else 0

        return Badge("done", n("critical"), n("high"), n("medium"), n("low"), n("total"))
    if state in ("queued", "scanning"):
        return Badge("scanning")
    return Badge("failed" if state == "failed" else "none")


def _severity(value: Any) -> str:
    text = str(value or "unknown").lower()
    return text if text in SEVERITY_ORDER else "unknown"


def findings_of(report: Any) -> list[Finding]:
    if not isinstance(report, dict):
        return []
    out: list[Finding] = []
    for v in report.get("vulnerabilities") or []:  # ours
        if isinstance(v, dict) and isinstance(v.get("package"), dict) and v.get("id"):
            p = v["package"]
            out.append(Finding(str(v.get("id", "")), v.get("url") if isinstance(v.get("url"), str) else None,
                               str(p.get("name", "")), str(p.get("version", "")),
                               v.get("fixedIn") if isinstance(v.get("fixedIn"), str) else None,
                               _severity(v.get("severity")), str(v.get("summary") or "")))
    for m in report.get("matches") or []:  # Grype's
        if not isinstance(m, dict):
            continue
        vuln, art = m.get("vulnerability"), m.get("artifact")
        if not isinstance(vuln, dict) or not isinstance(art, dict) or not vuln.get("id"):
            continue
        fix = vuln.get("fix") if isinstance(vuln.get("fix"), dict) else {}
        versions = fix.get("versions") if isinstance(fix, dict) else None
        url = vuln.get("dataSource")
        out.append(Finding(str(vuln.get("id", "")), url if isinstance(url, str) else None, str(art.get("name", "")),
                           str(art.get("version", "")), ", ".join(map(str, versions)) if versions else None,
                           _severity(vuln.get("severity")), str(vuln.get("description") or "")))
    return out[:MAX_ROWS]


def sort_findings(findings: Sequence[Finding], how: str) -> list[Finding]:
    rank = {s: i for i, s in enumerate(SEVERITY_ORDER)}
    if how == "id":
        return sorted(findings, key=lambda f: (f.id, f.package))
    if how == "package":
        return sorted(findings, key=lambda f: (f.package.lower(), rank[f.severity], f.id))
    return sorted(findings, key=lambda f: (rank[f.severity], f.id, f.package))


def packages_of(sbom: Any) -> list[SbomPackage]:
    if not isinstance(sbom, dict):
        return []
    out = []
    for p in sbom.get("packages") or []:
        if not isinstance(p, dict) or p.get("SPDXID") == "SPDXRef-DOCUMENT":
            continue
        purl = next((str(r.get("referenceLocator", "")) for r in p.get("externalRefs") or []
                     if isinstance(r, dict) and r.get("referenceType") == "purl"), "")
        out.append(SbomPackage(str(p.get("name", "")), str(p.get("versionInfo", "")), purl))
    return sorted(out, key=lambda p: (p.name.lower(), p.version))


async def badges(
    scans: ScanResults | None, did: str, repository: str, items: Sequence[tuple[str, str | None]],
    viewer: str | None = None,
) -> dict[str, Badge]:
    """Badges for (digest, hold DID) pairs, from the (cached) records; a missing record has none."""
    if scans is None:
        return {}
    wanted = {d: h for d, h in items if h}
    pairs = list(wanted.items())[:50]
    records = await asyncio.gather(*(_bounded(scans.record(h, did, repository, d), None) for d, h in pairs))
    # Access is per hold and viewer: asked once per hold, with any of its records.
    probes = {h: r for (_, h), r in zip(pairs, records, strict=True) if r is not None}
    holds = list(probes)
    verdicts = await asyncio.gather(*(_bounded(scans.access(did, h, probes[h], viewer), None) for h in holds))
    allowed = dict(zip(holds, verdicts, strict=True))
    out = {}
    for (digest, hold), record in zip(pairs, records, strict=True):
        if record is not None:
            out[digest] = Badge("private") if allowed.get(hold) == "private" else badge_of(record, None)
    return out


async def scan_view(
    scans: ScanResults | None, did: str, repository: str, digest: str, hold_did: str | None, *,
    sort: str = "severity", package_filter: str = "", viewer: str | None = None,
) -> ScanView | None:
    if scans is None or not hold_did:
        return None
    record, status = await asyncio.gather(
        _bounded(scans.record(hold_did, did, repository, digest), None),
        _bounded(scans.status(hold_did, digest), None),
    )
    view = ScanView(badge_of(record, status), sort=sort if sort in SORTS else "severity",
                    package_filter=package_filter[:100])
    state = (status or {}).get("state")
    view.rescanning = record is not None and state in ("queued", "scanning")
    error = (status or {}).get("error")
    if state == "failed" and isinstance(error, str):
        view.error = error
    if record is None:
        return view
    if await _bounded(scans.access(did, hold_did, record, viewer), None) == "private":
        return ScanView(Badge("private"), sort=view.sort, package_filter=view.package_filter)
    view.scanned_at = str(record.get("scannedAt") or "") or None
    view.scanner = str(record.get("scannerVersion") or "") or None
    report, sbom = await asyncio.gather(
        _bounded(scans.document(hold_did, record, "vulnReportBlob", viewer), None),
        _bounded(scans.document(hold_did, record, "sbomBlob", viewer), None),
    )
    view.findings = sort_findings(findings_of(report), view.sort)
    packages = packages_of(sbom)
    view.has_sbom = sbom is not None
    view.package_count = len(packages)
    needle = view.package_filter.lower()
    view.packages = [p for p in packages if not needle or needle in p.name.lower() or needle in p.purl.lower()]
    return view


async def sbom_document(scans: ScanResults | None, did: str, repository: str, digest: str,
                        hold_did: str | None, viewer: str | None = None) -> Any:
    if scans is None or not hold_did:
        return None
    record = await _bounded(scans.record(hold_did, did, repository, digest), None)
    if record is None:
        return None
    return await _bounded(scans.document(hold_did, record, "sbomBlob", viewer), None)
