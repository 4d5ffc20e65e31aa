"""The real services as separate processes (`atcr hold`, `atcr appview`), like a deployment.

Each process gets its settings from the environment only, binds 127.0.0.1, logs to a file
in its scratch dir (printed when a test fails to start it), and is stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.support.services import free_port


@dataclass
class Service:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    env: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_service(name: str, command: str, env: Mapping[str, str], workdir: Path, url: str, timeout: float = 30) -> Service:
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"{name}.log"
    full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir), **env}
    with open(log, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "atcr.cli", command],
            env=full_env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            cwd=str(workdir),
        )
    svc = Service(name=name, url=url, proc=proc, log=log, env=dict(env))
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{svc.logs()[-4000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return svc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            svc.stop()
            raise RuntimeError(f"{name} not ready after {timeout}s:\n{svc.logs()[-4000:]}")
        time.sleep(0.1)


def network_env(valkey_url: str, plc_url: str, pds_url: str) -> dict[str, str]:
    return {
        "VALKEY_URL": valkey_url,
        "ATCR_PLC_URL": plc_url,
        "ATCR_HANDLE_RESOLVER_URL": pds_url,
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        "ATCR_LOG_LEVEL": "info",
    }


def hold_env(workdir: Path, port: int, *, s3: Mapping[str, str] | None = None, public: bool = True) -> dict[str, str]:
    env = {
        "HOLD_HTTP_ADDR": f"127.0.0.1:{port}",
        "HOLD_PUBLIC_URL": f"http://localhost:{port}",
        "HOLD_PUBLIC": "true" if public else "false",
        "HOLD_ALLOW_ALL_CREW": "true",
        "HOLD_DATA_DIR": str(workdir / "hold"),
        "STORAGE_DRIVER": "filesystem",
        "STORAGE_ROOT_DIR": str(workdir / "hold" / "blobs"),
    }
    if s3:
        env.update({"STORAGE_DRIVER": "s3", **s3})
    return env


def appview_env(workdir: Path, port: int, hold_did: str) -> dict[str, str]:
    return {
        "ATCR_HTTP_ADDR": f"127.0.0.1:{port}",
        "ATCR_BASE_URL": f"http://127.0.0.1:{port}",
        "ATCR_DEFAULT_HOLD_DID": hold_did,
        "ATCR_DATA_DIR": str(workdir / "appview"),
        # Every test request comes from 127.0.0.1; per-address limits are tested on their own.
        "ATCR_RATE_LIMIT_ADDRESS": "0",
        # The conformance suites expect exact referrer lists: the repo proof is listed only when
        # asked for by artifactType here (tests/e2e/test_provenance.py runs an AppView with `all`).
        "ATCR_PROVENANCE_REFERRERS": "filtered",
        # Layer bytes through the AppView (the proxied path, which fault-injection tests sit
        # on); the `direct_stack` AppView sends them straight to the hold instead.
        "ATCR_DIRECT_UPLOADS": "off",
    }


__all__ = ["Service", "appview_env", "free_port", "hold_env", "network_env", "start_service"]
