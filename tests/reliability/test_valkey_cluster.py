"""Pulls through a Valkey Cluster while it changes under them: a primary fails over to its
replica, a slot range migrates to another primary (ASK, then MOVED), and that primary is
then killed outright.

Two `atcr appview` processes and a hold, all on ``VALKEY_URL=valkey+cluster://...`` (3
primaries + 3 replicas from valkey-server binaries). Pull load runs across both AppViews the
whole time; the failover hits the primary holding the hold's pull counters (the busiest
counter), the migration moves the slots of the pulled user's read model (every pull reads
them), and the kill takes down the primary those slots moved to (never the counters' one: a
killed primary may lose writes it had not replicated yet, docs/reliability.md). Every pull must
answer 200 with the pushed bytes, and the hold's pullCount must end exactly at the number of
pulls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from valkey.cluster import key_slot

from atcr.identity import did_web_for_url
from atcr.readmodel.keys import stats_rkey
from tests.reliability.stack import OCI_MANIFEST, User, push_image, token
from tests.support import loadgen
from tests.support.faultproxy import FaultProxy
from tests.support.pdsnet import TestNetwork, create_account, create_app_password
from tests.support.services import S3Endpoint, free_port
from tests.support.stack import Service, start_service
from tests.support.valkey_cluster import LocalCluster, running_valkey_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MIN_PULLS = 1000


@dataclass
class ClusterStack:
    cluster: LocalCluster
    network: TestNetwork
    appviews: list[Service]
    hold: Service
    hold_did: str
    lb: FaultProxy

    @property
    def service(self) -> str:
        return self.lb.url.removeprefix("http://")


@pytest.fixture(scope="module")
def cluster_stack(
    tmp_path_factory: pytest.TempPathFactory, pds_network: TestNetwork, s3_endpoint: S3Endpoint
) -> Iterator[ClusterStack]:
    work = tmp_path_factory.mktemp("valkey-cluster")
    bucket = f"vc-{uuid.uuid4().hex[:10]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    services: list[Service] = []
    with running_valkey_cluster() as cluster:
        hold_port, a_port, b_port = free_port(), free_port(), free_port()
        lb = FaultProxy([f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"])
        hold_did = did_web_for_url(f"http://localhost:{hold_port}")
        common = {"VALKEY_URL": cluster.url, "ATCR_ALLOW_PRIVATE_NETWORKS": "true", "ATCR_LOG_LEVEL": "info",
                  "ATCR_PLC_URL": pds_network.plc_url, "ATCR_HANDLE_RESOLVER_URL": pds_network.pds_url}
        try:
            hold_starting = concurrent.futures.ThreadPoolExecutor(1).submit(start_service, "hold", "hold", {
                **common, **s3_endpoint.hold_env(bucket),
                "HOLD_HTTP_ADDR": f"127.0.0.1:{hold_port}", "HOLD_PUBLIC_URL": f"http://localhost:{hold_port}",
                "HOLD_PUBLIC": "true", "HOLD_ALLOW_ALL_CREW": "true", "HOLD_DATA_DIR": str(work / "hold"),
                "HOLD_STATS_FLUSH_INTERVAL": "0.3", "STORAGE_DRIVER": "s3",
                # Production settings: only the AppView's signed notifications count.
                "HOLD_TRUST_PULL_NOTIFICATIONS": "false", "HOLD_TRUSTED_APPVIEWS": did_web_for_url(lb.url),
            }, work, f"http://127.0.0.1:{hold_port}")
            shared = work / "shared-keys"
            shared.mkdir()
            # The first AppView creates the shared keys; the second starts after it, the hold meanwhile.
            for name, port in (("appview-a", a_port), ("appview-b", b_port)):
                services.append(start_service(name, "appview", {
                    **common, "ATCR_HTTP_ADDR": f"127.0.0.1:{port}", "ATCR_BASE_URL": lb.url,
                    "ATCR_DEFAULT_HOLD_DID": hold_did, "ATCR_DATA_DIR": str(work / name),
                    "ATCR_AUTH_KEY_PATH": str(shared / "token-signing.pem"),
                    "ATCR_SECRET_KEY_PATH": str(shared / "session-secret.key"),
                    "ATCR_OAUTH_KEY_PATH": str(shared / "oauth-client.pem"),
                    "ATCR_RATE_LIMIT_ADDRESS": "0", "ATCR_BCRYPT_ROUNDS": "4",
                }, work / name, f"http://127.0.0.1:{port}", timeout=60))
            hold = hold_starting.result(timeout=60)
            services.append(hold)
            lb.start()
            yield ClusterStack(cluster, pds_network, services[:2], hold, hold_did, lb)
        finally:
            with concurrent.futures.ThreadPoolExecutor(3) as pool:  # each waits for its own exit
                list(pool.map(lambda svc: svc.stop(), services))
            lb.stop()


def pull_count(stack: ClusterStack, owner: str, repository: str) -> int:
    r = httpx.get(
        f"{stack.hold.url}/xrpc/com.atproto.repo.getRecord",
        params={"repo": stack.hold_did, "collection": "io.atcr.hold.stats", "rkey": stats_rkey(owner, repository)},
        timeout=10,
    )
    return int(r.json()["value"].get("pullCount", 0)) if r.status_code == 200 else 0


def wait_for(what: str, check: object, timeout: float) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"{what} not reached within {timeout:.0f}s"
        time.sleep(0.1)
    return time.monotonic() - started


def test_pulls_survive_a_failover_a_slot_migration_and_a_killed_primary(cluster_stack: ClusterStack) -> None:
    stack, cluster = cluster_stack, cluster_stack.cluster
    account = create_account(stack.network.pds_url, "cluster")
    user = User(account, create_app_password(account, "docker"))
    a, b = stack.appviews
    digest, raw, _ = push_image(a.url, stack.service, user, "busy", "latest")
    name = f"{user.handle}/busy"
    tok = token(b.url, stack.service, None, f"repository:{name}:pull")
    auth = (("Authorization", f"Bearer {tok}"), ("Accept", OCI_MANIFEST))
    # Warm both replicas (identity, tag, manifest loaded into the cluster); these pulls count too.
    with httpx.Client(timeout=30) as client:
        for svc in (a, b):
            r = client.get(f"{svc.url}/v2/{name}/manifests/latest", headers=dict(auth))
            assert r.status_code == 200 and r.content == raw, r.text
    warm = 2

    counters_slot = key_slot(f"hold:stats:{{{stack.hold_did}}}:pending".encode())
    model_slot = key_slot(f"av:{{{user.did}}}:sync".encode())
    owner_of = {slot: node for node in cluster.primaries() for lo, hi in cluster.slots_of(node)
                for slot in (counters_slot, model_slot) if lo <= slot <= hi}
    faults: dict[str, float] = {}
    windows: dict[str, tuple[float, float]] = {}
    failure: list[BaseException] = []
    done = threading.Event()

    def break_things() -> None:
        try:
            time.sleep(0.5)  # the load is running
            t = time.monotonic()
            cluster.failover(owner_of[counters_slot])
            windows["failover"] = (t, time.monotonic())
            faults["failover_s"] = time.monotonic() - t
            source = next(n for n in cluster.primaries() if any(lo <= model_slot <= hi for lo, hi in cluster.slots_of(n)))
            counters = next(n for n in cluster.primaries() if any(lo <= counters_slot <= hi for lo, hi in cluster.slots_of(n)))
            # Not the counters' primary: it is killed below, and a kill may lose unreplicated writes.
            target = next(n for n in cluster.primaries() if n.port not in (source.port, counters.port))
            first = max(model_slot - 20, min(lo for lo, hi in cluster.slots_of(source) if lo <= model_slot <= hi))
            t = time.monotonic()
            faults["keys_moved"] = cluster.migrate(source, target, first, model_slot + 0)
            faults["slots_moved"] = model_slot - first + 1
            faults["migrate_s"] = time.monotonic() - t
            windows["migration"] = (t, time.monotonic())
            # (3) The primary now serving the user's model dies (no handover): until its replica
            # is elected those slots have no primary, and reads fall back to the PDS.
            t = time.monotonic()
            cluster.kill(target)
            faults["kill_s"] = time.monotonic() - t
            windows["kill"] = (t, time.monotonic())
        except BaseException as exc:  # reported by the test thread
            failure.append(exc)
        finally:
            done.set()

    jobs = [loadgen.Job(f"{stack.appviews[i % 2].url}/v2/{name}/manifests/{'latest' if i % 3 else digest}", auth)
            for i in range(100)]
    total = loadgen.Result()

    async def load() -> None:
        while not done.is_set() or total.total < MIN_PULLS:
            part = await loadgen.run(jobs, concurrency=20, timeout=30)
            total.statuses.update(part.statuses)
            total.errors.update(part.errors)
            total.latencies += part.latencies
            total.seconds += part.seconds
            total.timeline += part.timeline

    breaker = threading.Thread(target=break_things)
    breaker.start()
    asyncio.run(load())
    breaker.join()
    if failure:
        raise failure[0]
    assert total.statuses == {200: total.total} and not total.errors, (total.statuses, total.errors)
    assert cluster.roles()[owner_of[counters_slot].port] == "slave"  # the failover did happen
    during = {k: sum(1 for t0, t1, _, _ in total.timeline if t1 >= lo and t0 <= hi) for k, (lo, hi) in windows.items()}
    assert all(during[k] > 0 for k in ("failover", "migration", "kill")), during  # all under load
    # Served by the cluster client itself, not by the loader's "Valkey is down" fallback to the PDS.
    fallbacks = sum(svc.logs().count("valkey unavailable") for svc in stack.appviews)
    pulls = total.total + warm
    waited = wait_for("the hold's pullCount", lambda: pull_count(stack, user.did, "busy") >= pulls, 30)
    time.sleep(1.5)  # a late duplicate would land within a few more flush intervals
    assert pull_count(stack, user.did, "busy") == pulls
    print(f"\n[figure] Valkey Cluster 3+3: {pulls} pulls over 2 AppViews (p99 {total.percentile(99) * 1000:.0f} ms) "
          f"while the counters' primary failed over ({faults['failover_s']:.1f}s to a healthy cluster, "
          f"{during['failover']} pulls during it) and {faults['slots_moved']:.0f} slots of the pulled user's model "
          f"migrated ({faults['keys_moved']:.0f} keys, {faults['migrate_s']:.1f}s, {during['migration']} pulls during "
          f"it), then that primary was SIGKILLed ({faults['kill_s']:.1f}s until its replica served, "
          f"{during['kill']} pulls during it): 0 failed, pullCount exactly {pulls} ({waited:.1f}s after the last "
          f"pull); {fallbacks} fallback(s) to reading PDSes")
