"""The reliability stack: a production-shaped deployment on loopback, with a fault injector at
every seam.

```
  clients ──► lb (round robin) ──► appview-a ─┐            ┌─► plc proxy ──► PLC  (rewrites the
          └─► appview-a / appview-b directly  ├─ Valkey    │                 #atproto_pds of "victim"
                                  appview-b ─┘  (own,     │                 DIDs to the pds proxy)
                                                 killable) ├─► pds proxy ──► PDS  (one user's PDS)
                                                           └─► hold front ──► hold ──► s3 proxy ──► moto
```

Both replicas share the Valkey, the token-signing key, the session secret and the public
base URL (the load balancer's), exactly as docs/deployment.md asks; tests talk to either
replica directly to prove that a token, a session or an upload from one works on the other.
Each proxy is a `FaultProxy` (tests/support/faultproxy.py) the tests switch at will.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import valkey as valkey_sync

from atcr.identity import did_web_for_url
from atcr.valkey import EmbeddedValkey
from tests.support.faultproxy import FaultProxy, Req
from tests.support.pdsnet import Account, TestNetwork, create_account, create_app_password
from tests.support.services import S3Endpoint, free_port
from tests.support.stack import Service, start_service

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"


class PlcRewrite:
    """Points the `#atproto_pds` service of selected DIDs at another URL (their "own" PDS)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.victims: set[str] = set()

    def __call__(self, req: Req, status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
        did = unquote(req.path.lstrip("/"))
        if status != 200 or did not in self.victims or req.method != "GET":
            return body
        doc = json.loads(body)
        for svc in doc.get("service") or []:
            if str(svc.get("id", "")).endswith("#atproto_pds"):
                svc["serviceEndpoint"] = self.target
        return json.dumps(doc).encode()


@dataclass
class User:
    account: Account
    app_password: str

    @property
    def did(self) -> str:
        return self.account.did

    @property
    def handle(self) -> str:
        return self.account.handle


@dataclass
class RelStack:
    work: Path
    network: TestNetwork
    valkey: EmbeddedValkey
    valkey_url: str
    a: Service
    b: Service
    hold: Service
    lb: FaultProxy
    hold_front: FaultProxy
    s3: FaultProxy
    pds: FaultProxy
    plc: FaultProxy
    plc_rewrite: PlcRewrite
    hold_did: str
    bucket: str
    hold_env: dict[str, str]
    appview_envs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.lb.url

    @property
    def service(self) -> str:
        return self.lb.url.removeprefix("http://")

    @property
    def appview_did(self) -> str:
        return did_web_for_url(self.lb.url)

    @property
    def replicas(self) -> list[Service]:
        return [self.a, self.b]

    def services(self) -> list[Service]:
        return [self.a, self.b, self.hold]

    # --- accounts ---------------------------------------------------------------------------

    def user(self, prefix: str = "rel", *, victim: bool = False) -> User:
        """A new account with an app password. A victim's PDS is reached through `self.pds`."""
        account = create_account(self.network.pds_url, prefix)
        if victim:
            self.plc_rewrite.victims.add(account.did)
        return User(account, create_app_password(account, "docker"))

    # --- Valkey -----------------------------------------------------------------------------

    def valkey_client(self) -> valkey_sync.Valkey:
        return valkey_sync.Valkey.from_url(self.valkey_url, socket_timeout=5)

    def kill_valkey(self) -> None:
        self.valkey.stop()

    def start_valkey(self) -> None:
        for attempt in range(5):
            try:
                self.valkey.start()
                return
            except Exception:
                if attempt == 4:
                    raise
                time.sleep(0.3)

    # --- the hold process -------------------------------------------------------------------

    def restart_hold(self) -> None:
        self.hold.stop()
        self.hold = start_service("hold", "hold", self.hold_env, self.work, self.hold.url)

    def stop(self) -> None:
        for svc in (self.a, self.b, self.hold):
            svc.stop()
        for proxy in (self.lb, self.hold_front, self.pds, self.plc, self.s3):
            proxy.stop()
        self.valkey.stop()


def _start_parallel(specs: list[tuple[str, dict[str, str], Path, str]]) -> list[Service]:
    """Start several `atcr appview` processes at once (each waits for its own /readyz)."""
    out: list[Service | BaseException | None] = [None] * len(specs)

    def one(i: int) -> None:
        name, env, work, url = specs[i]
        try:
            out[i] = start_service(name, "appview", env, work, url, timeout=60)
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(specs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [x for x in out if isinstance(x, BaseException)]
    started = [x for x in out if isinstance(x, Service)]
    if errors:
        for svc in started:
            svc.stop()
        raise errors[0]
    return started


@contextmanager
def reliability_stack(work: Path, network: TestNetwork, s3: S3Endpoint) -> Iterator[RelStack]:
    bucket = f"rel-{uuid.uuid4().hex[:10]}"
    s3.client().create_bucket(Bucket=bucket)
    valkey = EmbeddedValkey(work / "valkey", persist=True, port=free_port())
    valkey_url = valkey.start()
    proxies: list[FaultProxy] = []
    services: list[Service] = []
    try:
        s3_proxy = FaultProxy(s3.url).start()
        proxies.append(s3_proxy)
        pds_proxy = FaultProxy(network.pds_url).start()
        proxies.append(pds_proxy)
        rewrite = PlcRewrite(pds_proxy.url)
        plc_proxy = FaultProxy(network.plc_url, rewrite=rewrite).start()
        proxies.append(plc_proxy)
        hold_port, a_port, b_port = free_port(), free_port(), free_port()
        hold_front = FaultProxy(f"http://127.0.0.1:{hold_port}").start()
        proxies.append(hold_front)
        lb = FaultProxy([f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"])
        proxies.append(lb)
        appview_did = did_web_for_url(lb.url)
        hold_did = did_web_for_url(f"http://localhost:{hold_front.port}")
        common = {
            "VALKEY_URL": valkey_url,
            "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
            "ATCR_LOG_LEVEL": "debug",  # the secrets-in-logs test reads these logs at their most verbose
            # Slow clients are cut off after 3 s (production default: 10 s headers, 60 s body stalls).
            "ATCR_SERVER_HEADER_TIMEOUT": "3",
            "ATCR_SERVER_BODY_TIMEOUT": "3",
        }
        hold_env = {
            **common,
            "ATCR_PLC_URL": network.plc_url,
            "ATCR_HANDLE_RESOLVER_URL": network.pds_url,
            "HOLD_HTTP_ADDR": f"127.0.0.1:{hold_port}",
            "HOLD_PUBLIC_URL": f"http://localhost:{hold_front.port}",
            "HOLD_PUBLIC": "true",
            "HOLD_ALLOW_ALL_CREW": "true",
            "HOLD_DATA_DIR": str(work / "hold"),
            "HOLD_STATS_FLUSH_INTERVAL": "0.3",
            # Production settings for pull counts: only the AppView's signed notifications count.
            "HOLD_TRUST_PULL_NOTIFICATIONS": "false",
            "HOLD_TRUSTED_APPVIEWS": appview_did,
            "STORAGE_DRIVER": "s3",
            "S3_BUCKET": bucket,
            "S3_ENDPOINT": s3_proxy.url,
            "AWS_REGION": s3.region,
            "S3_FORCE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": s3.access_key,
            "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "S3_MAX_ATTEMPTS": "5",
            "S3_RETRY_BASE_DELAY": "0.05",
            "S3_RETRY_MAX_DELAY": "0.4",
            "S3_READ_TIMEOUT": "2",
        }
        hold = start_service("hold", "hold", hold_env, work, f"http://127.0.0.1:{hold_port}")
        services.append(hold)
        shared = work / "shared-keys"
        shared.mkdir(parents=True, exist_ok=True)
        envs: dict[str, dict[str, str]] = {}
        specs = []
        for name, port in (("appview-a", a_port), ("appview-b", b_port)):
            env = {
                **common,
                "ATCR_PLC_URL": plc_proxy.url,
                "ATCR_HANDLE_RESOLVER_URL": network.pds_url,
                "ATCR_HTTP_ADDR": f"127.0.0.1:{port}",
                "ATCR_BASE_URL": lb.url,
                "ATCR_DEFAULT_HOLD_DID": hold_did,
                "ATCR_DATA_DIR": str(work / name),
                "ATCR_AUTH_KEY_PATH": str(shared / "token-signing.pem"),
                "ATCR_SECRET_KEY_PATH": str(shared / "session-secret.key"),
                "ATCR_OAUTH_KEY_PATH": str(shared / "oauth-client.pem"),
                "ATCR_RATE_LIMIT_ADDRESS": "0",  # every test request comes from 127.0.0.1
                # These tests put faults and replicas on the AppView's proxied upload path; the
                # direct path (bytes to the hold) has its own (tests/e2e/test_direct_uploads.py).
                "ATCR_DIRECT_UPLOADS": "off",
                "ATCR_BCRYPT_ROUNDS": "4",
                "ATCR_DEVICE_POLL_INTERVAL": "1",
                # Entries go stale after 2 s, so "served while the PDS is down" means served stale.
                "ATCR_CACHE_FRESH_TTL": "2",
                # Answers stay in a replica's memory (at most the fresh TTL) until Valkey says
                # they changed: a missed invalidation shows up as a stale read in the tests.
                "ATCR_CACHE_NEAR_TTL": "30",
            }
            envs[name] = env
            specs.append((name, env, work / name, f"http://127.0.0.1:{port}"))
        # The first start creates the shared keys; the second must not race it.
        first = _start_parallel(specs[:1])
        services.extend(first)
        second = _start_parallel(specs[1:])
        services.extend(second)
        lb.start()
        stack = RelStack(
            work=work, network=network, valkey=valkey, valkey_url=valkey_url, a=first[0], b=second[0], hold=hold,
            lb=lb, hold_front=hold_front, s3=s3_proxy, pds=pds_proxy, plc=plc_proxy, plc_rewrite=rewrite,
            hold_did=hold_did, bucket=bucket, hold_env=hold_env, appview_envs=envs,
        )
        yield stack
        stack.stop()
    finally:
        for svc in services:
            svc.stop()
        for proxy in proxies:
            proxy.stop()
        valkey.stop()


# --- registry client helpers (plain HTTP, as a Docker client speaks it) -----------------------


def token(url: str, service: str, user: User | None, scope: str) -> str:
    auth = (user.handle, user.app_password) if user else None
    r = httpx.get(f"{url}/auth/token", params={"service": service, "scope": scope}, auth=auth, timeout=60)
    assert r.status_code == 200, r.text
    return str(r.json()["token"])


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def upload_blob(client: httpx.Client, url: str, name: str, tok: str, data: bytes) -> str:
    digest = digest_of(data)
    r = client.post(
        f"{url}/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data,
        headers={**bearer(tok), "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    return digest


def image_manifest(config: tuple[str, int], layers: list[tuple[str, int]], note: str = "") -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config[0], "size": config[1]},
        "layers": [{"mediaType": LAYER, "digest": d, "size": s} for d, s in layers],
    }
    if note:
        body["annotations"] = {"org.example.note": note}
    return json.dumps(body, separators=(",", ":")).encode()


def push_image(
    url: str, service: str, user: User, repo: str, tag: str, *, layer: bytes | None = None, tok: str | None = None
) -> tuple[str, bytes, list[str]]:
    """Push a one-layer image; returns (manifest digest, manifest bytes, blob digests)."""
    name = f"{user.handle}/{repo}"
    tok = tok or token(url, service, user, f"repository:{name}:pull,push")
    layer = layer if layer is not None else os.urandom(2048)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    with httpx.Client(timeout=120) as client:
        cfg = upload_blob(client, url, name, tok, config)
        lay = upload_blob(client, url, name, tok, layer)
        raw = image_manifest((cfg, len(config)), [(lay, len(layer))])
        r = client.put(
            f"{url}/v2/{name}/manifests/{tag}", content=raw, headers={**bearer(tok), "Content-Type": OCI_MANIFEST}
        )
        assert r.status_code == 201, r.text
    return digest_of(raw), raw, [cfg, lay]


def list_records(pds_url: str, did: str, collection: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(timeout=30) as client:
        while True:
            params: dict[str, Any] = {"repo": did, "collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            body = client.get(f"{pds_url}/xrpc/com.atproto.repo.listRecords", params=params).json()
            out.extend(body.get("records") or [])
            cursor = body.get("cursor")
            if not cursor or not body.get("records"):
                return out


def jwt_claims(tok: str) -> dict[str, Any]:
    payload = tok.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


__all__ = [
    "RelStack", "User", "bearer", "digest_of", "image_manifest", "jwt_claims", "list_records", "push_image",
    "reliability_stack", "token", "upload_blob",
]
