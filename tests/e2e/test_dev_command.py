"""`atcr dev` as a user runs it: zero configuration, three services, clean Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

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


def test_atcr_dev_serves_all_three_and_stops_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ports = {"appview": free_port(), "hold": free_port(), "jetstream": free_port()}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "atcr.cli", "dev", "--data-dir", str(data),
            "--appview-port", str(ports["appview"]), "--hold-port", str(ports["hold"]),
            "--jetstream-port", str(ports["jetstream"]),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
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
        for name, port in ports.items():
            assert f"http://127.0.0.1:{port}" in output
            for path in ("/livez", "/readyz"):
                r = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)
                assert r.status_code == 200, (name, path, r.text)
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
    time.sleep(0.5)
    assert _alive(children) == []
    for port in ports.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
