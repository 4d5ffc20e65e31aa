"""Scanning end to end, with real processes: a hold (S3 on moto) whose tier has scanOnPush, an
AppView, and `atcr scanner` processes against a fixture OSV database.

skopeo pushes an image with known dpkg, Python and npm contents; the first scanner is killed
while it downloads a layer (the download hangs in a fault proxy in front of S3, so "mid-job"
is a state the test observes, not a moment it guesses); a second scanner completes the job.
Then: the `io.atcr.hold.scan` record has the expected counts, the referrers API lists the SBOM
and the report, they download through the registry API, oras-py pulls the SBOM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from atcr.identity import did_web_for_url
from tests.e2e.auth.conftest import chromium  # noqa: F401  (the Debian chromium fixture)
from tests.support.faultproxy import FaultProxy, Rule, wait_until
from tests.support.fixtures_stack import Pusher
from tests.support.ocilayout import Layout
from tests.support.pdsnet import TestNetwork
from tests.support.scanimage import EXPECTED_IDS, build_image, write_osv_db
from tests.support.services import S3Endpoint
from tests.support.stack import Service, appview_env, free_port, hold_env, network_env, start_service

pytestmark = [pytest.mark.e2e]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "scanning"

SECRET = "e2e-scanner-secret"
SBOM = "application/spdx+json"
REPORT = "application/vnd.atcr.vulnerabilities+json"
TIERS = "tiers:\n  scanned: {quota: 1GB, scan_on_push: true}\ndefaults:\n  new_crew_tier: scanned\n"


@dataclass
class ScanStack:
    hold: Service
    hold_did: str
    appview: Service
    s3_proxy: FaultProxy
    work: Path
    net: dict[str, str]

    def scanner(self, name: str) -> Service:
        port = free_port()
        env = {
            **self.net,
            "SCANNER_HTTP_ADDR": f"127.0.0.1:{port}",
            "SCANNER_HOLDS": self.hold.url,
            "SCANNER_SECRET": SECRET,
            "SCANNER_VULN_DB": str(self.work / "osv"),
            "SCANNER_WORK_DIR": str(self.work / name),
            "SCANNER_LAYER_TIMEOUT": "120",
        }
        return start_service(name, "scanner", env, self.work, f"http://127.0.0.1:{port}")

    def status(self, digest: str) -> dict[str, object]:
        r = httpx.get(f"{self.hold.url}/xrpc/io.atcr.hold.getScanStatus", params={"digest": digest}, timeout=10)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def scan_stack(
    tmp_path_factory: pytest.TempPathFactory, valkey_url: str, pds_network: TestNetwork, s3_endpoint: S3Endpoint
) -> Iterator[ScanStack]:
    work = tmp_path_factory.mktemp("scan")
    write_osv_db(work / "osv")
    (work / "quotas.yaml").write_text(TIERS)
    bucket = f"scan-{uuid.uuid4().hex[:10]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    proxy = FaultProxy(s3_endpoint.url).start()
    net = network_env(valkey_url, pds_network.plc_url, pds_network.pds_url)
    hold_port, app_port = free_port(), free_port()
    s3 = {**s3_endpoint.hold_env(bucket), "S3_ENDPOINT": proxy.url}
    hold_cfg = {
        **net, **hold_env(work, hold_port, s3=s3),
        "HOLD_QUOTAS_PATH": str(work / "quotas.yaml"), "HOLD_SCANNER_SECRET": SECRET,
    }
    hold = start_service("hold", "hold", hold_cfg, work, f"http://127.0.0.1:{hold_port}")
    hold_did = did_web_for_url(f"http://localhost:{hold_port}")
    try:
        appview = start_service(
            "appview", "appview", {**net, **appview_env(work, app_port, hold_did)}, work, f"http://127.0.0.1:{app_port}"
        )
    except BaseException:
        hold.stop()
        proxy.stop()
        raise
    try:
        yield ScanStack(hold, hold_did, appview, proxy, work, net)
    finally:
        appview.stop()
        hold.stop()
        proxy.stop()


def presigned_get(req: object) -> bool:
    return getattr(req, "method", "") == "GET" and "X-Amz-Signature" in getattr(req, "query", "")


async def test_a_pushed_image_is_scanned_even_when_its_scanner_dies_and_results_are_oci_referrers(
    scan_stack: ScanStack, pusher: Pusher, tmp_path: Path, chromium: Any  # noqa: F811
) -> None:
    """Async only for the browser: the rest is the synchronous steps a user would take."""
    await asyncio.to_thread(_scan_and_fetch, scan_stack, pusher, tmp_path)
    digest = (tmp_path / "digest").read_text()
    await _pages(scan_stack, pusher, digest, chromium)
    await asyncio.to_thread(_owner_rescans, scan_stack, pusher, digest)


def _owner_rescans(stack: ScanStack, pusher: Pusher, digest: str) -> None:
    """The owner, signed in through their PDS, presses "Scan again": the hold queues the manifest."""
    from tests.support.ui_stack import csrf_of, sign_in

    page = f"/r/{pusher.handle}/scanned/manifest/{digest}"
    with httpx.Client(base_url=stack.appview.url, timeout=30) as client:
        anonymous = client.get(page).text
        assert 'id="rescan-form"' not in anonymous
        sign_in(client, pusher.account, next_path=page)
        html = client.get(page).text
        assert 'id="rescan-form"' in html
        r = client.post(f"/r/{pusher.handle}/scanned/-/rescan", data={"digest": digest, "csrf_token": csrf_of(html)})
        assert r.status_code == 303 and r.headers["location"].endswith(f"{page}?done=rescan"), r.text[-3000:]
        assert "A new scan was queued" in client.get(r.headers["location"]).text
    assert stack.status(digest)["state"] == "queued"


async def _pages(stack: ScanStack, pusher: Pusher, digest: str, browser: Any) -> None:
    """The repository page's badges and the manifest page's findings, packages and SBOM download."""
    base = f"{stack.appview.url}/r/{pusher.handle}/scanned"
    async with httpx.AsyncClient(timeout=30) as client:
        repo_html = (await client.get(base)).text
        assert 'data-scan="done" data-critical="2" data-high="0" data-medium="1" data-low="0"' in repo_html
        page = await client.get(f"{base}/manifest/{digest}")
        assert page.status_code == 200
        filtered = (await client.get(f"{base}/manifest/{digest}", params={"pkg": "lod"})).text
        assert "pkg:npm/lodash@4.17.20" in filtered and "pkg:pypi/requests" not in filtered
        sbom = await client.get(f"{base}/manifest/{digest}", params={"download": "sbom"})
        assert sbom.status_code == 200 and "attachment" in sbom.headers["content-disposition"]
        assert sbom.json()["spdxVersion"] == "SPDX-2.3"

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = await context.new_page()
        await tab.goto(base)
        badge = tab.locator('#tags [data-scan="done"]')
        assert (await badge.inner_text()).split() == ["2C", "1M"]
        await tab.screenshot(path=str(ARTIFACTS / "repository.png"), full_page=True)
        await badge.click()
        await tab.wait_for_url(f"**/manifest/{digest}*")
        rows = tab.locator("#vulnerabilities tbody tr")
        assert await rows.count() == 3
        severities = [await r.get_attribute("data-severity") for r in await rows.all()]
        assert severities == ["critical", "critical", "medium"]  # sorted by severity
        ids = await tab.locator("#vulnerabilities tbody tr td:first-child a").all_inner_texts()
        assert set(ids) == EXPECTED_IDS
        await tab.locator("#vulnerabilities th >> text=Package").click()
        await tab.wait_for_url("**sort=package*")
        packages = await tab.locator("#vulnerabilities tbody td[data-label=Package]").all_inner_texts()
        assert packages == sorted(packages, key=str.lower)
        await tab.fill("#pkg-filter", "safe")
        await tab.locator("#sbom form button, #sbom button[type=submit]").first.click()
        await tab.wait_for_url("**pkg=safe*")
        assert await tab.locator("#packages tbody tr").all_inner_texts() != []
        assert "safe-tool" in await tab.locator("#packages").inner_text()
        await tab.screenshot(path=str(ARTIFACTS / "manifest.png"), full_page=True)
    finally:
        await context.close()


def _scan_and_fetch(stack: ScanStack, pusher: Pusher, tmp_path: Path) -> None:
    layout = Layout(tmp_path / "layout")
    desc = build_image(layout, "1")
    digest = str(desc["digest"])
    host = stack.appview.url.removeprefix("http://")
    repo = f"{pusher.handle}/scanned"

    # The first scanner hangs in its first layer download (S3 behind the fault proxy).
    stack.s3_proxy.add(Rule(presigned_get, hang=True))
    first = stack.scanner("scanner-a")
    second: Service | None = None
    try:
        push = subprocess.run(
            ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false",
             f"--dest-creds={pusher.handle}:{pusher.app_password}",
             f"oci:{layout.root}:1", f"docker://{host}/{repo}:1"],
            capture_output=True, text=True, timeout=120,
        )
        assert push.returncode == 0, push.stderr
        wait_until(lambda: stack.s3_proxy.count("GET") > 0 and stack.status(digest)["state"] == "scanning", 30,
                   "the first scanner downloading a layer")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
        stack.s3_proxy.clear()
        # The hold saw the connection go: the job is queued again, and a new scanner does it.
        wait_until(lambda: stack.status(digest)["state"] == "queued", 30, "the job back in the queue")
        second = stack.scanner("scanner-b")
        wait_until(lambda: stack.status(digest)["state"] == "done", 60, "the scan done by the second scanner")
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert not list((stack.work / "scanner-b").glob("job-*"))  # the job's layers are deleted after it

    scan = stack.status(digest)["scan"]
    assert isinstance(scan, dict)
    assert {k: scan[k] for k in ("critical", "high", "medium", "low", "total", "repository", "userDid")} == {
        "critical": 2, "high": 0, "medium": 1, "low": 0, "total": 3, "repository": "scanned", "userDid": pusher.did,
    }
    assert str(scan["scannerVersion"]).startswith("atcr-scanner/")
    record = httpx.get(f"{stack.hold.url}/xrpc/com.atproto.repo.getRecord",
                       params={"repo": stack.hold_did, "collection": "io.atcr.hold.scan", "rkey": digest[7:]}, timeout=10)
    assert record.status_code == 200 and record.json()["value"] == scan

    # The referrers API lists the SBOM and the report; both download through /v2.
    token = httpx.get(f"{stack.appview.url}/auth/token", params={"service": host, "scope": f"repository:{repo}:pull"},
                      timeout=30).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    v2 = f"{stack.appview.url}/v2/{repo}"
    listing = httpx.get(f"{v2}/referrers/{digest}", headers=auth, timeout=30)
    assert listing.status_code == 200, listing.text
    found = {d["artifactType"]: d for d in listing.json()["manifests"]}
    assert set(found) >= {SBOM, REPORT}, listing.json()
    again = httpx.get(f"{v2}/referrers/{digest}", headers=auth, timeout=30).json()["manifests"]
    assert {d["artifactType"]: d["digest"] for d in again if d["artifactType"] in (SBOM, REPORT)} == {
        t: found[t]["digest"] for t in (SBOM, REPORT)
    }  # stable digests
    only = httpx.get(f"{v2}/referrers/{digest}?artifactType={quote(SBOM)}", headers=auth, timeout=30)
    assert [d["artifactType"] for d in only.json()["manifests"]] == [SBOM]
    assert only.headers["OCI-Filters-Applied"] == "artifactType"

    docs = {}
    for kind in (SBOM, REPORT):
        m = httpx.get(f"{v2}/manifests/{found[kind]['digest']}", headers={**auth, "Accept": "*/*"}, timeout=30)
        assert m.status_code == 200 and m.headers["Docker-Content-Digest"] == found[kind]["digest"]
        manifest = m.json()
        assert manifest["subject"]["digest"] == digest and manifest["artifactType"] == kind
        layer = manifest["layers"][0]
        blob = httpx.get(f"{v2}/blobs/{layer['digest']}", headers=auth, timeout=30, follow_redirects=True)
        assert blob.status_code == 200 and len(blob.content) == layer["size"]
        docs[kind] = json.loads(blob.content)
    assert {v["id"] for v in docs[REPORT]["vulnerabilities"]} == EXPECTED_IDS
    assert docs[SBOM]["spdxVersion"] == "SPDX-2.3"
    assert {p["name"] for p in docs[SBOM]["packages"]} >= {"libexample1", "safe-tool", "Requests", "lodash"}

    # A real OCI client pulls the SBOM by the digest the listing gave.
    import oras.client

    client = oras.client.OrasClient(hostname=host, insecure=True)
    client.auth.set_basic_auth(pusher.handle, pusher.app_password)
    files = client.pull(target=f"{host}/{repo}@{found[SBOM]['digest']}", outdir=str(tmp_path / "pulled"))
    assert [Path(f).name for f in files] == ["sbom.spdx.json"]
    assert json.loads((tmp_path / "pulled" / "sbom.spdx.json").read_bytes()) == docs[SBOM]
    (tmp_path / "digest").write_text(digest)


def _self_signed(email: str, issuer: str) -> Any:
    """A Fulcio-shaped certificate: the signer's e-mail as SAN, the OIDC issuer as extension."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID, ObjectIdentifier

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev")])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        .add_extension(x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.57264.1.1"), issuer.encode()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def test_signatures_pushed_as_referrers_show_as_signed_with_their_signer(scan_stack: ScanStack, pusher: Pusher) -> None:
    """cosign (simplesigning + Fulcio certificate), Notation (JWS with x5c) and an in-toto DSSE
    attestation, pushed over /v2 as referrers of an image: the manifest page says who signed."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.support.ocilayout import tar_layer

    stack = scan_stack
    host = stack.appview.url.removeprefix("http://")
    repo = f"{pusher.handle}/signed"
    token = httpx.get(f"{stack.appview.url}/auth/token", auth=(pusher.handle, pusher.app_password),
                      params={"service": host, "scope": f"repository:{repo}:pull,push"}, timeout=30).json()["token"]
    client = httpx.Client(base_url=f"{stack.appview.url}/v2/{repo}", headers={"Authorization": f"Bearer {token}"},
                          timeout=30)

    def blob(data: bytes) -> dict[str, Any]:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        started = client.post("/blobs/uploads/")
        assert started.status_code == 202, started.text
        done = client.put(httpx.URL(stack.appview.url).join(started.headers["Location"]), params={"digest": digest},
                          content=data,
                          headers={"Content-Type": "application/octet-stream"})
        assert done.status_code == 201, done.text
        return {"digest": digest, "size": len(data)}

    def manifest(doc: dict[str, Any], tag: str) -> dict[str, Any]:
        raw = json.dumps(doc).encode()
        r = client.put(f"/manifests/{tag}", content=raw,
                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 201, r.text
        return {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": "sha256:" + hashlib.sha256(raw).hexdigest(), "size": len(raw)}

    empty = {"mediaType": "application/vnd.oci.empty.v1+json", **blob(b"{}")}
    config = {"mediaType": "application/vnd.oci.image.config.v1+json",
              **blob(json.dumps({"architecture": "amd64", "os": "linux"}).encode())}
    layer = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(tar_layer({"a.txt": b"a"}))}
    subject = manifest({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": config, "layers": [layer]}, "1")

    def referrer(artifact_type: str, media_type: str, payload: bytes, tag: str,
                 annotations: dict[str, str] | None = None) -> None:
        item = {"mediaType": media_type, **blob(payload)}
        if annotations:
            item["annotations"] = annotations
        manifest({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                  "artifactType": artifact_type, "config": empty, "layers": [item], "subject": subject}, tag)

    cert = _self_signed("alice@example.com", "https://accounts.example.com")
    simple = {"critical": {"identity": {"docker-reference": f"{host}/{repo}"},
                           "image": {"docker-manifest-digest": subject["digest"]},
                           "type": "cosign container image signature"}, "optional": {"ci-run": "42"}}
    referrer("application/vnd.dev.cosign.artifact.sig.v1+json", "application/vnd.dev.cosign.simplesigning.v1+json",
             json.dumps(simple).encode(), "cosign",
             {"dev.sigstore.cosign/certificate": cert.public_bytes(Encoding.PEM).decode(),
              "dev.cosignproject.cosign/signature": "MEUCIQ=="})
    notary_cert = _self_signed("release@example.org", "https://ca.example.org")
    protected = base64.urlsafe_b64encode(json.dumps(
        {"alg": "ES256", "cty": "application/vnd.cncf.notary.payload.v1+json",
         "io.cncf.notary.signingTime": "2026-12-01T00:00:00Z"}).encode()).decode().rstrip("=")
    jws = {"payload": "e30", "protected": protected, "signature": "c2ln",
           "header": {"x5c": [base64.b64encode(notary_cert.public_bytes(Encoding.DER)).decode()]}}
    referrer("application/vnd.cncf.notary.signature", "application/jose+json", json.dumps(jws).encode(), "notation")
    statement = {"_type": "https://in-toto.io/Statement/v1", "predicateType": "https://slsa.dev/provenance/v1",
                 "subject": [{"name": f"{host}/{repo}", "digest": {"sha256": subject["digest"][7:]}}], "predicate": {}}
    envelope = {"payloadType": "application/vnd.in-toto+json",
                "payload": base64.b64encode(json.dumps(statement).encode()).decode(),
                "signatures": [{"keyid": "SHA256:builder-key", "sig": "c2ln"}]}
    referrer("application/vnd.in-toto+json", "application/vnd.dsse.envelope.v1+json", json.dumps(envelope).encode(),
             "attestation")
    client.close()

    page = httpx.get(f"{stack.appview.url}/r/{repo}/manifest/{subject['digest']}", timeout=30)
    assert page.status_code == 200
    html = page.text
    assert html.count('<span class="badge ok">signed</span>') == 3, html
    assert 'data-scheme="cosign"' in html and "alice@example.com (issuer https://accounts.example.com)" in html
    assert f"{host}/{repo}" in html and "ci-run" in html
    assert 'data-scheme="notation"' in html and "release@example.org" in html and "2026-12-01T00:00:00Z" in html
    assert 'data-scheme="in-toto"' in html and "key SHA256:builder-key" in html
    assert "https://slsa.dev/provenance/v1" in html
