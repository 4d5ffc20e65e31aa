"""Fixtures for checking the hold repository against the outside world.

* `oracle`: the reference implementation (`@atproto/repo` from the test network's npm install)
  behind `repo_oracle.mjs`, one Node 22 process per session.
* `hold`: a repository served over real HTTP/WebSocket by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from litestar import Litestar

from hold.repo import EcKeySigner, Repo
from hold.repo.routes import repo_routes
from hold.settings import HoldSettings
from tests.support.pdsnet import ensure_installed, node_bin
from tests.unit.hold_repo.support import HOLD_DID, make_signer

ORACLE_SCRIPT = Path(__file__).with_name("repo_oracle.mjs")


class Oracle:
    """Line-delimited JSON requests to the Node reference implementation."""

    def __init__(self, install_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
        env["ATCR_NODE_MODULES_PARENT"] = str(install_dir)
        self._proc = subprocess.Popen(
            [str(node_bin()), str(ORACLE_SCRIPT)],
            cwd=install_dir,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lock = threading.Lock()
        self._stderr: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr.append(line)

    def call(self, op: str, **request: Any) -> Any:
        """The handler's result; AssertionError with the Node error if it failed."""
        answer = self.try_call(op, **request)
        assert answer["ok"], f"oracle {op} failed: {answer['error']}"
        return answer["result"]

    def try_call(self, op: str, **request: Any) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(json.dumps({"op": op, **request}) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("repo oracle exited:\n" + "".join(self._stderr[-40:]))
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def acall(self, op: str, **request: Any) -> Any:
        return await asyncio.to_thread(self.call, op, **request)

    def close(self) -> None:
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture(scope="session")
def oracle() -> Iterator[Oracle]:
    o = Oracle(ensure_installed())
    try:
        yield o
    finally:
        o.close()


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the test runner owns signals."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return

    def capture_signals(self) -> Any:  # uvicorn >= 0.29
        return contextlib.nullcontext()


@dataclass
class Hold:
    repo: Repo
    signer: EcKeySigner
    url: str  # http://127.0.0.1:<port>
    http: httpx.AsyncClient

    @property
    def ws_base(self) -> str:
        return self.url.replace("http://", "ws://") + "/xrpc"

    async def xrpc(self, method: str, **params: Any) -> httpx.Response:
        return await self.http.get(f"/xrpc/{method}", params=params)


@contextlib.asynccontextmanager
async def serve_app(app_for_port: Any, *, lifespan: bool = False, port: int = 0) -> AsyncIterator[str]:
    """Serve the ASGI app `app_for_port(port)` on 127.0.0.1; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app_for_port(port),
        log_level="warning",
        lifespan="on" if lifespan else "off",
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        sock.close()


@contextlib.asynccontextmanager
async def serving(repo: Repo, signer: EcKeySigner) -> AsyncIterator[Hold]:
    """The repository's routes alone, served; the repository is closed on the way out."""

    def app(port: int) -> Litestar:
        return Litestar(
            route_handlers=[repo_routes(repo, HoldSettings(public_url=f"http://127.0.0.1:{port}"))], logging_config=None
        )

    try:
        async with serve_app(app) as url, httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as http:
            try:
                yield Hold(repo, signer, url, http)
            finally:
                await repo.close()  # ends live firehose streams before the server stops
    finally:
        await repo.close()


@pytest.fixture(params=["k256", "p256"])
async def hold(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Hold]:
    signer = make_signer(request.param)
    repo = await Repo.open(tmp_path / "hold-repo.sqlite", HOLD_DID, signer)
    async with serving(repo, signer) as h:
        yield h
