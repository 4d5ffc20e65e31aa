"""Provenance in the AppView: the publisher's repo proof as an OCI referrer, and the verdict
the manifest page shows. The checks themselves live in `atcr.provenance`."""

from appview.provenance.service import ProvenanceService

__all__ = ["ProvenanceService"]
