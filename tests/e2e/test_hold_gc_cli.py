"""`atcr hold gc` as an operator runs it: a separate process with the running hold's own
settings asks that hold (signed URL on its HTTP address) for a run and prints the report."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.fixtures_stack import RegistryStack

pytestmark = [pytest.mark.e2e]


def test_cli_dry_run_asks_the_running_hold(registry_stack: RegistryStack) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **registry_stack.hold.env}
    proc = subprocess.run(
        [sys.executable, "-m", "atcr.cli", "hold", "gc", "--dry-run", "--grace", "86400"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "gc (dry run): 0 blob(s), 0 bytes would be reclaimed;" in proc.stdout, proc.stdout
    # The run happened in the hold process (its lock, its report), not here: the repo is the hold's.
    assert "stale layer record(s) to remove" in proc.stdout
