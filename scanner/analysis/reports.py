"""The two documents a scan publishes: an SPDX 2.3 SBOM and the vulnerability report.

SPDX is written directly as its JSON serialisation: the document needs a dozen fields, and
spdx-tools would add rdflib, beartype and others to the scanner for what a dict literal does;
the tests check the result against the SPDX 2.3 JSON schema's required fields instead.
"""

from __future__ import annotations

import datetime
import hashlib
from typing import TYPE_CHECKING, Any

from scanner.analysis.model import SCANNER_VERSION, SEVERITIES

if TYPE_CHECKING:
    from scanner.analysis.model import Analysis, Finding, Package

REPORT_SCHEMA_VERSION = 1
_SEVERITY_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}


def _spdx_id(package: Package) -> str:
    digest = hashlib.sha256(f"{package.purl}\0{package.location}".encode()).hexdigest()[:16]
    return f"SPDXRef-Package-{digest}"


def spdx_document(analysis: Analysis, *, name: str, namespace: str) -> dict[str, Any]:
    """An SPDX 2.3 JSON document: the image as the described package, each package it contains."""
    created = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    packages: list[dict[str, Any]] = []
    relationships: list[dict[str, str]] = []
    seen: set[str] = set()
    for package in analysis.packages:
        spdx_id = _spdx_id(package)
        if spdx_id in seen:
            continue
        seen.add(spdx_id)
        entry: dict[str, Any] = {
            "name": package.name,
            "SPDXID": spdx_id,
            "versionInfo": package.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": False,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "sourceInfo": f"found in {package.location} ({package.ecosystem})",
            "externalRefs": [
                {"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": package.purl}
            ],
        }
        if package.source:
            entry["comment"] = f"source package: {package.source}"
        packages.append(entry)
        relationships.append(
            {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": spdx_id}
        )
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": namespace,
        "creationInfo": {"created": created, "creators": [f"Tool: {SCANNER_VERSION}"]},
        "packages": packages,
        "relationships": relationships,
    }


def _package_json(package: Package) -> dict[str, Any]:
    return {
        "name": package.name,
        "version": package.version,
        "ecosystem": package.ecosystem,
        "purl": package.purl,
        "source": package.source,
        "location": package.location,
    }


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {
        "id": finding.id,
        "aliases": list(finding.aliases),
        "severity": finding.severity,
        "summary": finding.summary,
        "url": finding.url,
        "fixedIn": finding.fixed_in,
        "package": _package_json(finding.package),
    }


def vuln_report(analysis: Analysis) -> dict[str, Any]:
    """The `application/vnd.atcr.vulnerabilities+json` document (schema in docs/scanning.md)."""
    ordered = sorted(
        analysis.findings, key=lambda f: (_SEVERITY_RANK[f.severity], f.id, f.package.name, f.package.location)
    )
    os_fields = (("id", "ID"), ("versionId", "VERSION_ID"), ("prettyName", "PRETTY_NAME"))
    os_release = analysis.os_release or {}
    return {
        "schemaVersion": REPORT_SCHEMA_VERSION,
        "scanner": SCANNER_VERSION,
        "os": {k: os_release[v] for k, v in os_fields if v in os_release} if analysis.os_release else None,
        "summary": analysis.counts(),
        "packageCount": len(analysis.packages),
        "vulnerabilities": [_finding_json(f) for f in ordered],
    }
