"""Online garbage collection of the hold's blobs (docs/hold.md, "Garbage collection").

* `guard`: the Valkey protocol that lets pushes and a sweep run at the same time without a
  push ever having its blob deleted under it (leases, condemnation, touches).
* `references`: what the users' PDSes still reference (their `io.atcr.manifest` records).
* `collector`: one run: list, decide, delete, update usage; dry runs; the lock; reports.
"""
