"""Pytest fixtures for a real PLC + PDS on loopback (see tests/support/pdsnet.py).

Plugin-style: import the fixtures into a test module or conftest.py
(``from tests.support.fixtures_pds import pds_network, pds_account  # noqa``),
or list the module in ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.pdsnet import Account, TestNetwork, create_account, ensure_installed


@pytest.fixture(scope="session")
def pds_network() -> Iterator[TestNetwork]:
    """One fresh PLC directory + PDS for the whole session (npm install is cached)."""
    install_dir = ensure_installed()
    with TestNetwork(install_dir=install_dir) as net:
        yield net


@pytest.fixture
def pds_account(pds_network: TestNetwork) -> Account:
    """A new account (``alice-<random>.test``) on the session PDS."""
    return create_account(pds_network.pds_url, "alice")
