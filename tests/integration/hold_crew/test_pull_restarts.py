"""1,000 concurrent pull notifications from several processes give pullCount exactly 1,000,
also when the hold (a real `atcr hold` process) is stopped mid-way with SIGTERM or killed with
SIGKILL and started again. Read back through `com.atproto.repo.getRecord`, as anyone would."""

from __future__ import annotations

import multiprocessing
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import valkey

from atcr.identity import did_web_for_url
from atcr.readmodel.keys import stats_rkey
from tests.integration.hold_crew.pullers import Signer, send_pulls
from tests.support.didweb import serving_did_web
from tests.support.stack import Service, free_port, start_service

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OWNER = "did:plc:ownerownerownerowner0000"
REPOSITORY = "team/busy-image"
SENDERS, PER_SENDER = 4, 250


def hold_env(workdir: Path, port: int, valkey_url: str, appview: str) -> dict[str, str]:
    return {
        "HOLD_TRUSTED_APPVIEWS": appview,  # the senders sign as this AppView
        "VALKEY_URL": valkey_url,
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        "ATCR_LOG_LEVEL": "info",
        "HOLD_HTTP_ADDR": f"127.0.0.1:{port}",
        "HOLD_PUBLIC_URL": f"http://localhost:{port}",
        "HOLD_PUBLIC": "true",
        "HOLD_OWNER": OWNER,
        "HOLD_DATA_DIR": str(workdir / "hold"),
        "STORAGE_DRIVER": "filesystem",
        "STORAGE_ROOT_DIR": str(workdir / "hold" / "blobs"),
        "HOLD_STATS_FLUSH_INTERVAL": "0.5",
    }


def pull_count(url: str, did: str) -> int | None:
    r = httpx.get(
        f"{url}/xrpc/com.atproto.repo.getRecord",
        params={"repo": did, "collection": "io.atcr.hold.stats", "rkey": stats_rkey(OWNER, REPOSITORY)},
        timeout=5,
    )
    if r.status_code == 400 and r.json()["error"] == "RecordNotFound":
        return None
    r.raise_for_status()
    value = r.json()["value"]
    assert value["ownerDid"] == OWNER and value["repository"] == REPOSITORY
    return int(value["pullCount"])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_with_restart(tmp_path: Path, valkey_url: str, sig: signal.Signals) -> tuple[int, Service]:
    with serving_did_web() as (appview, key):
        return _run_with_restart(tmp_path, valkey_url, sig, Signer.of(key, appview, ""), appview)


def _run_with_restart(
    tmp_path: Path, valkey_url: str, sig: signal.Signals, signer: Signer, appview: str
) -> tuple[int, Service]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = hold_env(tmp_path, port, valkey_url, appview)
    hold = start_service("hold", "hold", env, tmp_path, url)
    signer.aud = did_web_for_url(f"http://localhost:{port}")
    ctx = multiprocessing.get_context("spawn")
    done = ctx.Value("i", 0)
    senders = [
        ctx.Process(target=send_pulls, args=(url, OWNER, REPOSITORY, PER_SENDER, 5, 0.02, done, signer))
        for _ in range(SENDERS)
    ]
    try:
        for p in senders:
            p.start()
        wait_for(lambda: done.value >= 300, 60, "the first 300 notifications")
        t0 = time.monotonic()
        hold.proc.send_signal(sig)  # mid-way: most notifications are still to come
        hold.proc.wait(timeout=30)
        killed_at = done.value
        print(f"{sig.name} after {killed_at} acknowledged notifications; stopped in {time.monotonic() - t0:.2f}s")
        did = did_web_for_url(f"http://localhost:{port}")
        if sig == signal.SIGTERM:
            # A graceful stop flushes what it counted: nothing is left waiting in Valkey.
            client = valkey.Valkey.from_url(valkey_url)
            try:
                assert client.exists(f"hold:stats:{{{did}}}:pending", f"hold:stats:{{{did}}}:inflight") == 0
            finally:
                client.close()
        assert killed_at < SENDERS * PER_SENDER, "the hold was stopped too late to test anything"
        hold = start_service("hold", "hold", env, tmp_path, url)
        for p in senders:
            p.join(timeout=120)
            assert p.exitcode == 0
        assert done.value == SENDERS * PER_SENDER
        wait_for(lambda: pull_count(url, did) == SENDERS * PER_SENDER, 30, "the flush")
        time.sleep(1.5)  # a few more flush rounds: nothing is applied twice
        return int(pull_count(url, did) or 0), hold
    finally:
        for p in senders:
            if p.is_alive():
                p.kill()
        hold.stop()


def test_sigterm_mid_way(tmp_path: Path, valkey_url: str) -> None:
    count, hold = run_with_restart(tmp_path, valkey_url, signal.SIGTERM)
    assert count == SENDERS * PER_SENDER
    assert "at shutdown" in hold.logs()


def test_sigkill_mid_way(tmp_path: Path, valkey_url: str) -> None:
    count, _ = run_with_restart(tmp_path, valkey_url, signal.SIGKILL)
    assert count == SENDERS * PER_SENDER
