"""Vulnerability scanning on the hold side (ATCR-NOTES §4 `subscribeScanJobs`, §5.6).

The hold keeps a reliable job queue in Valkey (queue.py), hands jobs to scanners that
subscribe with the shared secret (routes.py), and turns their `scan_result` answers into an
`io.atcr.hold.scan` record with the SBOM and report stored as blobs of its own repo
(service.py, blobs.py). See docs/scanning-service.md.
"""
