"""Pull and push counts stay exact across a clean stop (SIGTERM) of either service, in any order.

`atcr dev` stopped with Ctrl-C is tested in test_dev_command.py. Here the services run as
separate processes, as deployed, and the hold goes away first: the AppView cannot send its
last pull counts at its own stop, keeps them in Valkey, and the next AppView sends them (with
their idempotency keys, so a hold that had counted one counts it once).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey

from atcr.identity import did_web_for_url
from atcr.readmodel.keys import stats_rkey
from atcr.valkey import EmbeddedValkey
from tests.support.fixtures_stack import Pusher
from tests.support.ocilayout import OCI_MANIFEST, Layout
from tests.support.pdsnet import TestNetwork
from tests.support.stack import Service, appview_env, free_port, hold_env, network_env, start_service

pytestmark = pytest.mark.e2e

DEADLINE = 60.0


def _stats(hold: str, hold_did: str, owner: str, repository: str) -> dict[str, Any] | None:
    r = httpx.get(
        f"{hold}/xrpc/com.atproto.repo.getRecord",
        params={"repo": hold_did, "collection": "io.atcr.hold.stats", "rkey": stats_rkey(owner, repository)},
        timeout=30,
    )
    if r.status_code == 400 and r.json().get("error") == "RecordNotFound":
        return None
    r.raise_for_status()
    value: dict[str, Any] = r.json()["value"]
    return value


def _wait_for_counts(hold: str, hold_did: str, owner: str, repository: str, pulls: int, pushes: int) -> None:
    """Poll until the record says (pulls, pushes); fail at the deadline, or at once past them."""
    deadline = time.monotonic() + DEADLINE
    record = None
    while time.monotonic() < deadline:
        record = _stats(hold, hold_did, owner, repository)
        have = (record or {}).get("pullCount", 0), (record or {}).get("pushCount", 0)
        assert have[0] <= pulls and have[1] <= pushes, record  # never more than happened
        if have == (pulls, pushes):
            return
        time.sleep(0.2)
    raise AssertionError(f"expected {pulls} pulls and {pushes} pushes, the record says {record}")


def test_appview_stopped_while_the_hold_is_down_keeps_its_pull_counts(
    tmp_path: Path, pds_network: TestNetwork, pusher: Pusher
) -> None:
    own = EmbeddedValkey(tmp_path / "valkey", port=free_port())
    url = own.start()
    net = network_env(url, pds_network.plc_url, pds_network.pds_url)
    hold_port, app_port = free_port(), free_port()
    hold_url, app_url = f"http://127.0.0.1:{hold_port}", f"http://127.0.0.1:{app_port}"
    hold_did = did_web_for_url(f"http://localhost:{hold_port}")
    data = tmp_path / "data"  # not the services' working directory: `appview/` there would shadow the package
    hold_cfg = {**net, **hold_env(data, hold_port), "HOLD_STATS_FLUSH_INTERVAL": "0.5"}
    app_cfg = {**net, **appview_env(data, app_port, hold_did)}
    repo = f"{pusher.handle}/kept"
    running: list[Service] = []

    def start(name: str) -> Service:
        cfg, url = (hold_cfg, hold_url) if name == "hold" else (app_cfg, app_url)
        svc = start_service(name, name, cfg, tmp_path / "run", url)
        running.append(svc)
        return svc

    def stop(svc: Service) -> None:
        svc.stop()
        assert svc.proc.returncode == 0, svc.logs()[-4000:]
        running.remove(svc)

    try:
        hold = start("hold")
        appview = start("appview")
        layout = Layout(tmp_path / "layout")
        layout.tag(layout.image(), "1")
        push = subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
             f"--dest-creds={pusher.handle}:{pusher.app_password}",
             f"oci:{layout.root}:1", f"docker://127.0.0.1:{app_port}/{repo}:1"],
            capture_output=True, text=True, timeout=300,
        )
        assert push.returncode == 0, push.stderr
        token = httpx.get(
            f"{app_url}/auth/token", params={"service": f"127.0.0.1:{app_port}", "scope": f"repository:{repo}:pull"},
            timeout=30,
        ).json()["token"]

        def pull() -> None:
            r = httpx.get(
                f"{app_url}/v2/{repo}/manifests/1",
                headers={"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST},
                timeout=30,
            )
            assert r.status_code == 200, r.text

        for _ in range(2):
            pull()
        _wait_for_counts(hold_url, hold_did, pusher.did, "kept", 2, 1)

        stop(hold)
        for _ in range(3):
            pull()  # the manifest comes from the PDS; only its count is for the (absent) hold
        stop(appview)
        assert "kept 3 pull count(s) for holds that did not answer" in appview.logs(), appview.logs()[-4000:]

        hold = start("hold")
        appview = start("appview")
        _wait_for_counts(hold_url, hold_did, pusher.did, "kept", 5, 1)
        assert "sending 3 pull count(s) kept at the last stop" in appview.logs(), appview.logs()[-4000:]
        client = valkey.Valkey.from_url(url)
        try:
            assert client.exists("av:pulls:unsent") == 0
        finally:
            client.close()
        # A clean stop of both, then a start: nothing is counted twice.
        stop(appview)
        stop(hold)
        hold = start("hold")
        record = _stats(hold_url, hold_did, pusher.did, "kept")
        assert record is not None and (record["pullCount"], record["pushCount"]) == (5, 1), record
    finally:
        for svc in reversed(running):
            svc.stop()
        own.stop()
