"""What an analysis produces: packages, findings and the result documents built from them.

These are the only types the scanner service sees; they are frozen so a result can be shared
between the job that produced it and the hold record written from it without copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Severity = Literal["critical", "high", "medium", "low", "unknown"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "unknown")

# Written into `io.atcr.hold.scan.scannerVersion` and both documents; bump when the inventory or
# the matching changes what a scan of the same image finds.
SCANNER_VERSION = "atcr-scanner/0.1"


@dataclass(frozen=True)
class Package:
    """One installed package, as found in the image."""

    name: str
    version: str
    ecosystem: str  # OSV ecosystem name: "Debian:12", "Alpine:v3.19", "PyPI", "npm", "Go", "Maven", ...
    purl: str
    source: str | None  # the source package (dpkg `Source:`, apk `o:`, rpm SOURCERPM name)
    location: str  # path in the image where it was found


@dataclass(frozen=True)
class Finding:
    """One vulnerability record that applies to one installed package."""

    id: str
    aliases: tuple[str, ...]
    package: Package
    fixed_in: str | None
    severity: Severity
    summary: str
    url: str | None


@dataclass(frozen=True)
class Analysis:
    """The result of analysing one image."""

    os_release: dict[str, str] | None
    packages: tuple[Package, ...]
    findings: tuple[Finding, ...]

    def counts(self) -> dict[str, int]:
        """Severity counts with the `io.atcr.hold.scan` field names (plus `unknown`)."""
        out: dict[str, int] = dict.fromkeys(SEVERITIES, 0)
        for finding in self.findings:
            out[finding.severity] += 1
        out["total"] = len(self.findings)
        return out

    def spdx(self, *, name: str, namespace: str) -> dict[str, Any]:
        """The inventory as an SPDX 2.3 JSON document."""
        from scanner.analysis.reports import spdx_document

        return spdx_document(self, name=name, namespace=namespace)

    def vuln_report(self) -> dict[str, Any]:
        """The findings as an `application/vnd.atcr.vulnerabilities+json` document (docs/scanning.md)."""
        from scanner.analysis.reports import vuln_report

        return vuln_report(self)
