"""The scanner service's exception root (scanner.analysis has its own, AnalysisError)."""

from __future__ import annotations


class ScannerError(Exception):
    """Something about a job or a hold the scanner reports instead of crashing on."""


class LayerFetchError(ScannerError):
    """A layer could not be downloaded from the hold, or did not match its digest or size."""
