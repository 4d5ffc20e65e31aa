"""The hold's embedded PDS: its own ATProto repository (MST, signed commits, firehose).

See docs/hold-repo.md for the storage layout and the choices behind it.
"""

from hold.repo.bootstrap import Bootstrap, crew_rkey, ensure_bootstrapped
from hold.repo.errors import RepoError
from hold.repo.repo import (
    CommitInfo,
    CommitRef,
    Create,
    Delete,
    Put,
    RecordEntry,
    RecordPage,
    Repo,
    Update,
    Write,
    WriteOp,
)
from hold.repo.signing import EcKeySigner, RepoSigner

__all__ = [
    "Bootstrap",
    "CommitInfo",
    "CommitRef",
    "Create",
    "Delete",
    "EcKeySigner",
    "Put",
    "RecordEntry",
    "RecordPage",
    "Repo",
    "RepoError",
    "RepoSigner",
    "Update",
    "Write",
    "WriteOp",
    "crew_rkey",
    "ensure_bootstrapped",
]
