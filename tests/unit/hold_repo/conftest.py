"""Fixtures for the hold repository unit tests: a fresh on-disk repository per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hold.repo import EcKeySigner, Repo
from tests.unit.hold_repo.support import HOLD_DID, make_signer


@pytest.fixture
def signer() -> EcKeySigner:
    return make_signer()


@pytest.fixture
def repo_path(tmp_path: Path) -> Path:
    return tmp_path / "repo" / "repo.sqlite"


@pytest.fixture
async def repo(repo_path: Path, signer: EcKeySigner) -> AsyncIterator[Repo]:
    r = await Repo.open(repo_path, HOLD_DID, signer)
    try:
        yield r
    finally:
        await r.close()
