"""The SBOM passes the SPDX project's own 2.3 validator; the report has the documented shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from scanner.analysis import SCANNER_VERSION, Analysis, Finding, Package

pytestmark = pytest.mark.unit

LIBSSL = Package(
    name="libssl3",
    version="3.0.11-1~deb12u1",
    ecosystem="Debian:12",
    purl="pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&distro=debian-12&upstream=openssl",
    source="openssl",
    location="/var/lib/dpkg/status",
)
LODASH = Package("lodash", "4.17.20", "npm", "pkg:npm/lodash@4.17.20", None, "/app/node_modules/lodash/package.json")
ANALYSIS = Analysis(
    os_release={"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)"},
    packages=(LIBSSL, LODASH),
    findings=(
        Finding("GHSA-lodash", (), LODASH, "4.17.21", "high", "Prototype pollution", "https://g.invalid/GHSA-lodash"),
        Finding("DEBIAN-CVE-1", ("CVE-1",), LIBSSL, "3.0.11-1~deb12u2", "critical", "ssl", None),
        Finding("DEBIAN-CVE-2", ("CVE-2",), LIBSSL, None, "unknown", "", None),
    ),
)


def test_spdx_document_validates_as_spdx_2_3(tmp_path: Path) -> None:
    doc = ANALYSIS.spdx(name="alice.example.com/app@sha256:abcd", namespace="https://atcr.invalid/spdx/sha256-abcd")
    path = tmp_path / "sbom.spdx.json"
    path.write_text(json.dumps(doc))
    parsed = parse_file(str(path))
    assert validate_full_spdx_document(parsed, "SPDX-2.3") == []
    assert {p.name for p in parsed.packages} == {"libssl3", "lodash"}
    purls = {ref.locator for p in parsed.packages for ref in p.external_references}
    assert purls == {LIBSSL.purl, LODASH.purl}
    assert doc["creationInfo"]["creators"] == [f"Tool: {SCANNER_VERSION}"]


def test_counts_use_the_scan_record_fields() -> None:
    assert ANALYSIS.counts() == {"critical": 1, "high": 1, "medium": 0, "low": 0, "unknown": 1, "total": 3}


def test_vuln_report_is_sorted_by_severity_and_has_the_documented_fields() -> None:
    report = ANALYSIS.vuln_report()
    assert json.loads(json.dumps(report)) == report  # plain JSON
    assert report["schemaVersion"] == 1 and report["scanner"] == SCANNER_VERSION
    assert report["os"] == {"id": "debian", "versionId": "12", "prettyName": "Debian GNU/Linux 12 (bookworm)"}
    assert report["summary"] == ANALYSIS.counts() and report["packageCount"] == 2
    assert [v["id"] for v in report["vulnerabilities"]] == ["DEBIAN-CVE-1", "GHSA-lodash", "DEBIAN-CVE-2"]
    first = report["vulnerabilities"][0]
    assert first == {
        "id": "DEBIAN-CVE-1",
        "aliases": ["CVE-1"],
        "severity": "critical",
        "summary": "ssl",
        "url": None,
        "fixedIn": "3.0.11-1~deb12u2",
        "package": {
            "name": "libssl3",
            "version": "3.0.11-1~deb12u1",
            "ecosystem": "Debian:12",
            "purl": LIBSSL.purl,
            "source": "openssl",
            "location": "/var/lib/dpkg/status",
        },
    }


def test_empty_analysis_documents() -> None:
    empty = Analysis(os_release=None, packages=(), findings=())
    assert empty.vuln_report()["os"] is None
    assert empty.vuln_report()["vulnerabilities"] == []
    assert empty.spdx(name="x", namespace="https://atcr.invalid/x")["packages"] == []
