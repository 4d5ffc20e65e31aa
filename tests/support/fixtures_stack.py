"""Session fixture: the real hold (on moto S3) and AppView processes against the test PDS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from atcr.identity import did_web_for_url
from tests.support.pdsnet import Account, TestNetwork, create_account, create_app_password
from tests.support.services import S3Endpoint
from tests.support.stack import Service, appview_env, free_port, hold_env, network_env, start_service


@dataclass
class RegistryStack:
    appview: Service
    hold: Service
    hold_did: str
    network: TestNetwork
    bucket: str

    @property
    def url(self) -> str:
        return self.appview.url

    @property
    def host(self) -> str:
        return self.appview.url.removeprefix("http://")


@dataclass
class Pusher:
    account: Account
    app_password: str

    @property
    def handle(self) -> str:
        return self.account.handle

    @property
    def did(self) -> str:
        return self.account.did


@pytest.fixture(scope="session")
def registry_stack(
    tmp_path_factory: pytest.TempPathFactory, valkey_url: str, pds_network: TestNetwork, s3_endpoint: S3Endpoint
) -> Iterator[RegistryStack]:
    work: Path = tmp_path_factory.mktemp("stack")
    bucket = f"hold-{uuid.uuid4().hex[:10]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    net = network_env(valkey_url, pds_network.plc_url, pds_network.pds_url)
    hold_port, app_port = free_port(), free_port()
    s3 = s3_endpoint.hold_env(bucket)
    hold = start_service("hold", "hold", {**net, **hold_env(work, hold_port, s3=s3)}, work, f"http://127.0.0.1:{hold_port}")
    hold_did = did_web_for_url(f"http://localhost:{hold_port}")
    try:
        appview = start_service(
            "appview", "appview", {**net, **appview_env(work, app_port, hold_did)}, work, f"http://127.0.0.1:{app_port}"
        )
    except BaseException:
        hold.stop()
        raise
    try:
        yield RegistryStack(appview=appview, hold=hold, hold_did=hold_did, network=pds_network, bucket=bucket)
    finally:
        appview.stop()
        hold.stop()


@pytest.fixture(scope="session")
def direct_stack(tmp_path_factory: pytest.TempPathFactory, registry_stack: RegistryStack, valkey_url: str) -> Iterator[RegistryStack]:
    """A second AppView on `registry_stack`'s hold, with direct uploads on: layer bytes go from
    the client to the hold on a capability URL (docs/direct-uploads.md)."""
    work: Path = tmp_path_factory.mktemp("direct")
    net = registry_stack.network
    port = free_port()
    env = {
        **network_env(valkey_url, net.plc_url, net.pds_url),
        **appview_env(work, port, registry_stack.hold_did),
        "ATCR_DIRECT_UPLOADS": "auto",
    }
    appview = start_service("appview-direct", "appview", env, work, f"http://127.0.0.1:{port}")
    try:
        yield RegistryStack(
            appview=appview, hold=registry_stack.hold, hold_did=registry_stack.hold_did, network=net,
            bucket=registry_stack.bucket,
        )
    finally:
        appview.stop()


@pytest.fixture
def pusher(pds_network: TestNetwork) -> Pusher:
    account = create_account(pds_network.pds_url, "sailor")
    return Pusher(account=account, app_password=create_app_password(account, "docker"))


def token_for(stack: RegistryStack, pusher: Pusher | None, scope: str) -> str:
    auth = (pusher.handle, pusher.app_password) if pusher else None
    r = httpx.get(f"{stack.url}/auth/token", params={"service": stack.host, "scope": scope}, auth=auth, timeout=30)
    r.raise_for_status()
    return str(r.json()["token"])
