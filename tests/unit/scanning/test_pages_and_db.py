"""What pages make of scan documents and signature artifacts, and the scanner's database reloads."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from appview.web.scanview import Badge, badge_of, findings_of, packages_of, sort_findings
from appview.web.signatures import COSIGN_SIMPLESIGNING, DSSE, JWS, SignatureInfo, read_layer
from atcr.settings import load
from scanner.analysis import VulnDBError
from scanner.settings import ScannerSettings
from scanner.vulndb import CurrentDB
from tests.support.scanimage import write_osv_db

pytestmark = pytest.mark.unit


def test_badges_from_records_and_states() -> None:
    record = {"critical": 1, "high": 0, "medium": 2, "low": 0, "total": 3}
    assert badge_of(record, {"state": "scanning"}) == Badge("done", 1, 0, 2, 0, 3)
    assert badge_of(record, None).worst == "critical"
    assert badge_of({"critical": -1, "total": "x"}, None) == Badge("done")
    assert badge_of(None, {"state": "queued"}).state == "scanning"
    assert badge_of(None, {"state": "failed"}).state == "failed"
    assert badge_of(None, None).state == "none"
    assert Badge("done").worst == "clean"


def test_findings_from_our_report_and_from_grype() -> None:
    ours = {"vulnerabilities": [
        {"id": "B", "severity": "low", "url": "https://x/B", "fixedIn": None, "summary": "s",
         "package": {"name": "zlib", "version": "1"}},
        {"id": "A", "severity": "CRITICAL", "url": None, "fixedIn": "2", "package": {"name": "openssl", "version": "1"}},
        {"id": "C", "severity": "bogus", "package": {"name": "Acme", "version": "1"}},
    ]}
    grype = {"matches": [{"vulnerability": {"id": "CVE-1", "severity": "High", "dataSource": "https://nvd/CVE-1",
                                            "fix": {"versions": ["1.2", "1.3"]}},
                          "artifact": {"name": "curl", "version": "1.0"}}, "junk", {"vulnerability": []}]}
    found = findings_of(ours) + findings_of(grype)
    assert [(f.id, f.severity) for f in sort_findings(found, "severity")] == [
        ("A", "critical"), ("CVE-1", "high"), ("B", "low"), ("C", "unknown")]
    assert [f.package for f in sort_findings(found, "package")] == ["Acme", "curl", "openssl", "zlib"]
    assert [f.id for f in sort_findings(found, "id")] == ["A", "B", "C", "CVE-1"]
    grype_finding = next(f for f in found if f.id == "CVE-1")
    assert grype_finding.fixed_in == "1.2, 1.3" and grype_finding.url == "https://nvd/CVE-1"
    assert findings_of("not a report") == [] and findings_of({"vulnerabilities": [1, {"package": 2}]}) == []


def test_sbom_packages() -> None:
    sbom = {"packages": [
        {"SPDXID": "SPDXRef-DOCUMENT", "name": "image"},
        {"name": "zlib", "versionInfo": "1.3", "externalRefs": [{"referenceType": "purl", "referenceLocator": "pkg:deb/z"}]},
        {"name": "Abc", "versionInfo": "2"}, "junk",
    ]}
    assert [(p.name, p.version, p.purl) for p in packages_of(sbom)] == [("Abc", "2", ""), ("zlib", "1.3", "pkg:deb/z")]
    assert packages_of(None) == []


def test_signature_layers() -> None:
    cosign = SignatureInfo("sha256:1", "signature")
    payload = {"critical": {"identity": {"docker-reference": "reg/app"}}, "optional": {"run": 7}}
    read_layer(cosign, COSIGN_SIMPLESIGNING, {}, json.dumps(payload).encode())
    assert (cosign.scheme, cosign.signer) == ("cosign", "a key (no certificate attached)")
    assert ("image", "reg/app") in cosign.claims and ("run", "7") in cosign.claims

    notation = SignatureInfo("sha256:2", "notation")
    read_layer(notation, JWS, {}, json.dumps({"protected": "!!", "header": {"x5c": ["not base64 DER"]}}).encode())
    assert notation.signer is None  # unreadable parts are left out, not guessed

    statement = {"predicateType": "https://slsa.dev/provenance/v1", "subject": [{"name": "reg/app"}]}
    dsse = SignatureInfo("sha256:3", "in-toto")
    envelope = {"payload": base64.b64encode(json.dumps(statement).encode()).decode(), "signatures": [{"keyid": "k1"}]}
    read_layer(dsse, DSSE, {"predicateType": "https://slsa.dev/provenance/v1"}, json.dumps(envelope).encode())
    assert dsse.signer == "key k1"
    assert dsse.claims == [("predicate", "https://slsa.dev/provenance/v1"), ("subject", "reg/app")]

    nothing = SignatureInfo("sha256:4", "signature")
    read_layer(nothing, COSIGN_SIMPLESIGNING, {"dev.sigstore.cosign/certificate": "not a PEM"}, b"not json")
    assert nothing.signer is None and nothing.claims == []


async def test_the_database_reloads_and_announces_only_a_changed_version(tmp_path: Path) -> None:
    osv = write_osv_db(tmp_path / "osv")
    db = CurrentDB(load(ScannerSettings, {"SCANNER_VULN_DB": str(osv)}))
    heard: list[str] = []
    db.listeners.append(heard.append)
    assert await db.reload() and db.version is not None
    first = db.version
    assert not await db.reload() and heard == [first]
    (osv / "EXTRA-1.json").write_text(json.dumps({
        "id": "EXTRA-1", "modified": "2024-01-01T00:00:00Z",
        "affected": [{"package": {"ecosystem": "npm", "name": "left-pad"},
                      "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"}, {"fixed": "1.3.0"}]}]}],
    }))
    assert await db.reload() and db.version != first and heard == [first, db.version]
    kept = db.version
    shutil.rmtree(osv)  # the source is gone: the reload fails, the loaded database stays
    with pytest.raises(VulnDBError):
        await db.reload()
    assert db.version == kept and heard[-1] == kept


def test_referrer_artifacts_are_stable_and_only_for_raw_sha256_blobs() -> None:
    from appview.scans.service import REPORT_TYPE, SBOM_TYPE, artifact, blob_digest
    from atcr.dagcbor import Cid
    from hold.scan.blobs import cid_of, cid_to_digest, digest_to_cid

    data = b'{"spdxVersion":"SPDX-2.3"}'
    cid = cid_of(data)
    digest = cid_to_digest(cid)
    assert digest is not None and digest_to_cid(digest) == cid
    assert blob_digest({"ref": {"$link": cid}, "size": len(data)}) == (digest, len(data))
    assert blob_digest({"ref": {"$link": str(Cid.for_block(data))}, "size": 1}) is None  # dag-cbor, not raw
    assert blob_digest({"ref": {"$link": "nonsense"}, "size": 1}) is None and blob_digest(None) is None
    assert cid_to_digest("nonsense") is None

    record = {"scannedAt": "2026-12-06T00:00:00.000Z", "scannerVersion": "atcr-scanner/0.1",
              "sbomBlob": {"$type": "blob", "ref": {"$link": cid}, "mimeType": SBOM_TYPE, "size": len(data)}}
    subject = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "0" * 64, "size": 9}
    one = artifact(subject, record, "sbomBlob", SBOM_TYPE, "sbom.spdx.json", "did:web:hold")
    assert one is not None and one == artifact(dict(subject), dict(record), "sbomBlob", SBOM_TYPE, "sbom.spdx.json",
                                               "did:web:hold")
    doc = json.loads(one)
    assert doc["artifactType"] == SBOM_TYPE and doc["subject"] == subject
    assert doc["layers"][0]["digest"] == digest and doc["layers"][0]["size"] == len(data)
    assert artifact(subject, record, "vulnReportBlob", REPORT_TYPE, "v.json", "did:web:hold") is None
