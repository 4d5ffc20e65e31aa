"""Scan results of an image on a PRIVATE hold, end to end: real hold (HOLD_PUBLIC=false, crew
closed, the pusher its captain), AppView, `atcr scanner`, skopeo, the real PDS.

The owner's pull token lists the SBOM and the report as referrers and both download; a
stranger (with a PDS session, so the hold itself refuses their service token) and anonymous
get no documents. On pages the owner sees the findings, the stranger and anonymous the
"private to the hold's crew" state, not "not scanned".
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from atcr.identity import did_web_for_url
from tests.support.faultproxy import wait_until
from tests.support.fixtures_stack import Pusher
from tests.support.ocilayout import Layout
from tests.support.pdsnet import Account, TestNetwork, create_account, create_app_password
from tests.support.scanimage import EXPECTED_IDS, build_image, write_osv_db
from tests.support.stack import Service, appview_env, free_port, hold_env, network_env, start_service
from tests.support.ui_stack import sign_in

pytestmark = [pytest.mark.e2e]

SECRET = "e2e-private-scanner-secret"
SBOM = "application/spdx+json"
REPORT = "application/vnd.atcr.vulnerabilities+json"
REPO = "secret"


@dataclass
class PrivateScan:
    appview: Service
    hold: Service
    owner: Pusher
    stranger: Pusher
    digest: str

    @property
    def host(self) -> str:
        return self.appview.url.removeprefix("http://")

    def token(self, who: Pusher | None) -> dict[str, str]:
        auth = (who.handle, who.app_password) if who else None
        r = httpx.get(f"{self.appview.url}/auth/token", auth=auth, timeout=30,
                      params={"service": self.host, "scope": f"repository:{self.owner.handle}/{REPO}:pull"})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}


def _pusher(network: TestNetwork, name: str) -> Pusher:
    account: Account = create_account(network.pds_url, name)
    return Pusher(account=account, app_password=create_app_password(account, "docker"))


@pytest.fixture(scope="module")
def private_scan(
    tmp_path_factory: pytest.TempPathFactory, valkey_url: str, pds_network: TestNetwork
) -> Iterator[PrivateScan]:
    work = tmp_path_factory.mktemp("privscan")
    write_osv_db(work / "osv")
    owner, stranger = _pusher(pds_network, "captain"), _pusher(pds_network, "stranger")
    net = network_env(valkey_url, pds_network.plc_url, pds_network.pds_url)
    hold_port, app_port, scanner_port = free_port(), free_port(), free_port()
    hold_cfg = {
        **net, **hold_env(work, hold_port, public=False),
        "HOLD_ALLOW_ALL_CREW": "false", "HOLD_OWNER": owner.did,
        "HOLD_SCAN_ALL_PUSHES": "true", "HOLD_SCANNER_SECRET": SECRET,
    }
    started: list[Service] = []
    try:
        hold = start_service("hold", "hold", hold_cfg, work, f"http://127.0.0.1:{hold_port}")
        started.append(hold)
        hold_did = did_web_for_url(f"http://localhost:{hold_port}")
        appview = start_service("appview", "appview", {**net, **appview_env(work, app_port, hold_did)}, work,
                                f"http://127.0.0.1:{app_port}")
        started.append(appview)
        scanner_env = {
            **net, "SCANNER_HTTP_ADDR": f"127.0.0.1:{scanner_port}", "SCANNER_HOLDS": hold.url,
            "SCANNER_SECRET": SECRET, "SCANNER_VULN_DB": str(work / "osv"), "SCANNER_WORK_DIR": str(work / "scanner"),
        }
        started.append(start_service("scanner", "scanner", scanner_env, work, f"http://127.0.0.1:{scanner_port}"))

        layout = Layout(work / f"layout-{uuid.uuid4().hex[:6]}")
        digest = str(build_image(layout, "1")["digest"])
        push = subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
             f"--dest-creds={owner.handle}:{owner.app_password}",
             f"oci:{layout.root}:1", f"docker://{appview.url.removeprefix('http://')}/{owner.handle}/{REPO}:1"],
            capture_output=True, text=True, timeout=120,
        )
        assert push.returncode == 0, push.stderr

        def done() -> bool:
            r = httpx.get(f"{hold.url}/xrpc/io.atcr.hold.getScanStatus", params={"digest": digest}, timeout=10)
            return r.status_code == 200 and r.json().get("state") == "done"

        wait_until(done, 90, "the private hold's scan of the pushed image", interval=0.2)
        yield PrivateScan(appview, hold, owner, stranger, digest)
    finally:
        for svc in reversed(started):
            svc.stop()


def _listed(stack: PrivateScan, who: Pusher | None) -> dict[str, dict[str, object]]:
    r = httpx.get(f"{stack.appview.url}/v2/{stack.owner.handle}/{REPO}/referrers/{stack.digest}",
                  headers=stack.token(who), timeout=30)
    assert r.status_code == 200, r.text
    return {str(d["artifactType"]): d for d in r.json()["manifests"] if d["artifactType"] in (SBOM, REPORT)}


def test_the_owner_gets_the_scan_documents_of_a_private_hold_and_others_get_none(private_scan: PrivateScan) -> None:
    stack = private_scan
    v2 = f"{stack.appview.url}/v2/{stack.owner.handle}/{REPO}"
    found = _listed(stack, stack.owner)
    assert set(found) == {SBOM, REPORT}
    owner = stack.token(stack.owner)
    layers = {}
    for kind in (SBOM, REPORT):
        m = httpx.get(f"{v2}/manifests/{found[kind]['digest']}", headers={**owner, "Accept": "*/*"}, timeout=30)
        assert m.status_code == 200, m.text
        layer = m.json()["layers"][0]
        blob = httpx.get(f"{v2}/blobs/{layer['digest']}", headers=owner, timeout=30, follow_redirects=True)
        assert blob.status_code == 200 and len(blob.content) == layer["size"]
        layers[kind] = (layer["digest"], blob.json())
    assert {v["id"] for v in layers[REPORT][1]["vulnerabilities"]} == EXPECTED_IDS
    assert layers[SBOM][1]["spdxVersion"] == "SPDX-2.3"

    # A stranger (the hold refuses their own service token) and anonymous: no documents, even
    # by the digests the owner was given (the AppView has them cached as the owner's).
    for who in (stack.stranger, None):
        assert _listed(stack, who) == {}
        auth = stack.token(who)
        for kind in (SBOM, REPORT):
            m = httpx.get(f"{v2}/manifests/{found[kind]['digest']}", headers={**auth, "Accept": "*/*"}, timeout=30)
            assert m.status_code == 404 and m.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN", m.text
            blob = httpx.get(f"{v2}/blobs/{layers[kind][0]}", headers=auth, timeout=30)
            # The private hold refuses them the digest before saying whether it has it (DENIED).
            assert blob.status_code in (401, 403) and "spdxVersion" not in blob.text, blob.text
            assert blob.json()["errors"][0]["code"] in ("UNAUTHORIZED", "DENIED")
    assert set(_listed(stack, stack.owner)) == {SBOM, REPORT}  # still the owner's


def test_pages_show_findings_to_the_owner_and_a_private_state_to_others(private_scan: PrivateScan) -> None:
    stack = private_scan
    base = f"/r/{stack.owner.handle}/{REPO}"
    page = f"{base}/manifest/{stack.digest}"
    with httpx.Client(base_url=stack.appview.url, timeout=30) as anonymous:
        html = anonymous.get(page).text
        assert 'data-state="private"' in html and "Scan results are private to the hold's crew" in html
        assert "GHSA-" not in html and 'data-scan="private"' in anonymous.get(base).text
        assert anonymous.get(page, params={"download": "sbom"}).status_code == 404
    with httpx.Client(base_url=stack.appview.url, timeout=30) as stranger:
        sign_in(stranger, stack.stranger.account, next_path=page)
        html = stranger.get(page).text
        assert 'data-state="private"' in html and "GHSA-" not in html
        assert stranger.get(page, params={"download": "sbom"}).status_code == 404
    with httpx.Client(base_url=stack.appview.url, timeout=30) as owner:
        sign_in(owner, stack.owner.account, next_path=page)
        html = owner.get(page).text
        assert 'data-state="done"' in html and all(i in html for i in EXPECTED_IDS)
        assert 'data-scan="done" data-critical="2"' in owner.get(base).text
        sbom = owner.get(page, params={"download": "sbom"})
        assert sbom.status_code == 200 and sbom.json()["spdxVersion"] == "SPDX-2.3"
