"""Reading a repository's `io.atcr.repo.policy` record at its owner's PDS.

Read when a rule could apply (a push moves a tag, a tag is deleted, retention runs), never
cached: adding or removing a rule takes effect on the next request.
"""

from __future__ import annotations

from appview.errors import Unavailable
from appview.policy.rules import POLICY_COLLECTION, RepoPolicy, policy_rkey
from atcr.errors import NetworkError, RecordNotFound, XrpcError
from atcr.xrpc import XrpcClient


async def read_policy(client: XrpcClient, did: str, repository: str) -> RepoPolicy:
    """The repository's rules; none when there is no record. Unavailable (503) when the PDS
    cannot say: a rule that may exist is not skipped."""
    try:
        out = await client.get_record(did, POLICY_COLLECTION, policy_rkey(repository))
    except RecordNotFound:
        return RepoPolicy(repository=repository)
    except (XrpcError, NetworkError) as exc:
        raise Unavailable(
            f"cannot read the repository's tag policy at your PDS: {exc}", headers={"Retry-After": "5"}
        ) from None
    return RepoPolicy.from_record(out.get("value"))
