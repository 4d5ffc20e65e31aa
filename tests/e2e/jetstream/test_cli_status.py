"""`atcr jetstream` as an operator runs it, and `atcr jetstream --status` reading it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.jetstream_server import JetstreamServer
from tests.support.services import free_port
from tests.support.stack import start_service

pytestmark = pytest.mark.e2e

DID = "did:plc:" + "c" * 24


def status_cli(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atcr.cli", "jetstream", "--status"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_status_flag_summarizes_the_running_consumer(tmp_path: Path, valkey_url: str, valkey: object) -> None:
    port = free_port()
    with JetstreamServer() as server:
        env = {
            "VALKEY_URL": valkey_url,
            "JETSTREAM_URL": server.url,
            "ATCR_RELAY_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # unreachable: backfill retries quietly
            "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
            "ATCR_JETSTREAM_STATUS_ADDR": f"127.0.0.1:{port}",
        }
        svc = start_service("jetstream", "jetstream", env, tmp_path, f"http://127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + 30
            while not httpx.get(f"{svc.url}/status", timeout=5).json()["sources"][0]["connected"]:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            server.inject(
                {
                    "did": DID,
                    "kind": "commit",
                    "commit": {
                        "rev": "3l3qo2vutsw2b",
                        "operation": "create",
                        "collection": "io.atcr.tag",
                        "rkey": "x",
                        "cid": "bafyrei",
                        "record": {"repository": "app", "tag": "x"},
                    },
                }
            )
            while httpx.get(f"{svc.url}/status", timeout=5).json()["events_total"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            out = status_cli(env)
            assert out.returncode == 0, out.stderr
            assert f"jetstream: connected to {server.url}" in out.stdout
            assert "events: 1 applied" in out.stdout
            assert "backfill:" in out.stdout
            metrics = httpx.get(f"{svc.url}/metrics", timeout=5).text
            assert 'atcr_jetstream_events_total{kind="commit",outcome="applied",source="jetstream"} 1.0' in metrics
        finally:
            svc.stop()
        assert svc.proc.returncode == 0
        assert "Traceback" not in svc.logs()
    down = status_cli(env)
    assert down.returncode == 1
    assert "no consumer answers" in down.stderr
