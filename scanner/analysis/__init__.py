"""Image analysis for the scanner: package inventory, OSV matching, SBOM and report documents.

Pure computation over files on disk: no network (except `VulnDB.load` of an http(s) URL, through
the SSRF-guarded client), no Valkey. The scanner service imports only the names below.
"""

from __future__ import annotations

from scanner.analysis.analyze import analyze_layers
from scanner.analysis.errors import AnalysisError, LayerError, VulnDBError
from scanner.analysis.model import SCANNER_VERSION, Analysis, Finding, Package, Severity
from scanner.analysis.vulndb import VulnDB

__all__ = [
    "SCANNER_VERSION",
    "Analysis",
    "AnalysisError",
    "Finding",
    "LayerError",
    "Package",
    "Severity",
    "VulnDB",
    "VulnDBError",
    "analyze_layers",
]
