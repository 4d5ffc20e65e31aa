"""`atcr dev` as a user runs it: zero configuration, three services (four with SCANNER_VULN_DB), clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from atcr.identity import did_web_for_url
from atcr.readmodel.keys import stats_rkey
from tests.support.fixtures_stack import Pusher
from tests.support.ocilayout import OCI_MANIFEST, Layout
from tests.support.pdsnet import TestNetwork
from tests.support.scanimage import write_osv_db
from tests.support.services import free_port

pytestmark = pytest.mark.e2e


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pids: list[int]) -> list[int]:
    return [p for p in pids if Path(f"/proc/{p}").exists() and "zombie" not in _state(p)]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"


def test_atcr_dev_serves_all_four_and_stops_cleanly(tmp_path: Path) -> None:
    """With SCANNER_VULN_DB set, the scanner is the fourth service, subscribed to the dev hold."""
    data = tmp_path / "data"
    ports = {"appview": free_port(), "hold": free_port(), "jetstream": free_port(), "scanner": free_port()}
    osv = write_osv_db(tmp_path / "osv")
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "atcr.cli", "dev", "--data-dir", str(data),
            "--appview-port", str(ports["appview"]), "--hold-port", str(ports["hold"]),
            "--jetstream-port", str(ports["jetstream"]), "--scanner-port", str(ports["scanner"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "SCANNER_VULN_DB": str(osv)},
    )
    try:
        deadline = time.monotonic() + 30
        output = ""
        assert proc.stdout is not None
        while "Press Ctrl-C" not in output:
            assert time.monotonic() < deadline, output
            line = proc.stdout.readline()
            assert line or proc.poll() is None, output
            output += line
        assert f"scanner    http://127.0.0.1:{ports['scanner']}/status  (SCANNER_VULN_DB={osv})" in output
        for name, port in ports.items():
            assert f"http://127.0.0.1:{port}" in output
            assert httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5).status_code == 200
            # Ready: the scanner once its database is loaded and the hold accepted its subscription.
            ready = time.monotonic() + 30
            while (r := httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)).status_code != 200:
                assert time.monotonic() < ready, (name, r.text)
                time.sleep(0.1)
        status = httpx.get(f"http://127.0.0.1:{ports['scanner']}/status", timeout=5).json()
        assert status["holds"] == [{"url": f"http://127.0.0.1:{ports['hold']}", "connected": True, "jobsDone": 0,
                                    "active": []}]
        # The embedded Valkey is a child process of `atcr dev`.
        children = _children(proc.pid)
        assert children, "embedded valkey not found"
        assert "did:web:localhost%3A" + str(ports["hold"]) in output
        assert (data / "hold" / "blobs").is_dir()
    finally:
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert "Traceback" not in rest
    deadline = time.monotonic() + 30  # they are being stopped: wait for that, not for 0.5 s
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive(children) == []
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)


# --- counts across a Ctrl-C ---------------------------------------------------------------------


class Dev:
    """`atcr dev` in a session of its own, as a terminal runs it: Ctrl-C goes to its process group."""

    def __init__(self, tmp: Path, data: Path, ports: dict[str, int], env: dict[str, str], run: int) -> None:
        self.log = tmp / f"dev-{run}.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "atcr.cli", "dev", "--data-dir", str(data),
                    "--appview-port", str(ports["appview"]), "--hold-port", str(ports["hold"]),
                    "--jetstream-port", str(ports["jetstream"]),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={"PATH": "/usr/bin:/bin", "HOME": str(tmp), **env},
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while "Press Ctrl-C" not in self.output():
            assert self.proc.poll() is None, self.output()
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ctrl_c(self) -> str:
        """SIGINT to the foreground process group, what a terminal's Ctrl-C does; the whole log."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise
        return self.output()


def test_ctrl_c_right_after_pulls_keeps_every_pull_and_push(
    tmp_path: Path, pds_network: TestNetwork, pusher: Pusher
) -> None:
    """5 pulls, Ctrl-C within a second, restart on the same data dir: the hold's stats record says
    5 pulls and 2 pushes. The AppView stops first (its batched pull counts reach a hold that still
    answers), then the hold (its shutdown flush still has Valkey), then the embedded Valkey.
    The hold's periodic flush is off (an hour), so only the shutdown does the work."""
    data = tmp_path / "data"
    ports = {"appview": free_port(), "hold": free_port(), "jetstream": free_port()}
    env = {
        "ATCR_PLC_URL": pds_network.plc_url,
        "ATCR_HANDLE_RESOLVER_URL": pds_network.pds_url,
        "ATCR_JETSTREAM_ENABLED": "false",
        "ATCR_BACKFILL_ENABLED": "false",
        "ATCR_RATE_LIMIT_ADDRESS": "0",
        "HOLD_STATS_FLUSH_INTERVAL": "3600",
    }
    appview = f"http://127.0.0.1:{ports['appview']}"
    hold = f"http://127.0.0.1:{ports['hold']}"
    hold_did = did_web_for_url(f"http://localhost:{ports['hold']}")
    repo = f"{pusher.handle}/counted"

    dev = Dev(tmp_path, data, ports, env, 1)
    try:
        for tag in ("1", "2"):
            layout = Layout(tmp_path / f"layout-{tag}")
            layout.tag(layout.image(), tag)
            push = subprocess.run(
                ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
                 f"--dest-creds={pusher.handle}:{pusher.app_password}",
                 f"oci:{layout.root}:{tag}", f"docker://127.0.0.1:{ports['appview']}/{repo}:{tag}"],
                capture_output=True, text=True, timeout=300,
            )
            assert push.returncode == 0, push.stderr
        token = httpx.get(
            f"{appview}/auth/token",
            params={"service": f"127.0.0.1:{ports['appview']}", "scope": f"repository:{repo}:pull"},
            timeout=30,
        ).json()["token"]
        for _ in range(5):
            r = httpx.get(
                f"{appview}/v2/{repo}/manifests/1",
                headers={"Authorization": f"Bearer {token}", "Accept": OCI_MANIFEST},
                timeout=30,
            )
            assert r.status_code == 200, r.text
    finally:
        out = dev.ctrl_c()
    assert dev.proc.returncode == 0, out
    for bad in ("Traceback", "Error 111", "failed", "lost"):
        assert bad not in out, out
    # The order of the stop, as logged: AppView, then the hold's flush, then Valkey.
    steps = ["appview stopped", "hold: flushed 1 stats record(s) at shutdown", "hold stopped", "jetstream stopped",
             "embedded valkey stopped"]
    at = [out.find(step) for step in steps]
    assert -1 not in at and at == sorted(at), out

    dev = Dev(tmp_path, data, ports, env, 2)
    try:
        r = httpx.get(
            f"{hold}/xrpc/com.atproto.repo.getRecord",
            params={"repo": hold_did, "collection": "io.atcr.hold.stats", "rkey": stats_rkey(pusher.did, "counted")},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        record = r.json()["value"]
        assert (record["pullCount"], record["pushCount"]) == (5, 2), record
    finally:
        out = dev.ctrl_c()
    assert dev.proc.returncode == 0, out
    assert "Traceback" not in out
