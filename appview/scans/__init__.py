"""Scan results of the holds, as OCI referrers and for the web UI (docs/scanning-service.md)."""

from appview.scans.service import REPORT_TYPE, SBOM_TYPE, ScanResults

__all__ = ["REPORT_TYPE", "SBOM_TYPE", "ScanResults"]
