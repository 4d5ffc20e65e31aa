"""The one exception root of the analysis package.

The service half catches `AnalysisError` and reports the job as failed with its message; the
leaves say which input was at fault (a layer the scanner could not read, or a database it could
not load) so an operator knows whether to look at the image or at `SCANNER_VULN_DB`.
"""

from __future__ import annotations


class AnalysisError(Exception):
    """Root of every error raised by `scanner.analysis`."""


class LayerError(AnalysisError):
    """A layer is not a readable tar, tar+gzip or tar+zstd stream."""


class VulnDBError(AnalysisError):
    """The vulnerability database source is missing, unreachable or not OSV JSON."""
