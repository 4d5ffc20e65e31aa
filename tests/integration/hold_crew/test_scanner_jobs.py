"""The scanner's job runner against a real (in-process) hold: what it answers when a layer is
not what the manifest says, or not an archive; the scan directory is gone afterwards either way;
`atcr scanner update-db` without a running scanner; configuration errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from atcr.errors import ConfigError
from atcr.http import SafeHttpClient, SsrfPolicy
from atcr.settings import load
from scanner.analysis import VulnDB
from scanner.cli import update_db
from scanner.jobs import run_job
from scanner.settings import ScannerSettings
from tests.integration.hold_crew.conftest import ALICE, MakeHold
from tests.support.scanimage import DPKG_STATUS, OS_RELEASE, write_osv_db

pytestmark = pytest.mark.integration

SECRET = "jobs-secret"


def targz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def layer(data: bytes, size: int | None = None) -> dict[str, Any]:
    return {"digest": "sha256:" + hashlib.sha256(data).hexdigest(), "size": len(data) if size is None else size,
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"}


def settings(tmp_path: Path, **env: str) -> ScannerSettings:
    return load(ScannerSettings, {
        "SCANNER_SECRET": SECRET, "SCANNER_VULN_DB": str(tmp_path / "osv"), "SCANNER_WORK_DIR": str(tmp_path / "work"),
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true", "SCANNER_HTTP_ADDR": "127.0.0.1:1", **env,
    })


async def test_job_results_for_good_bad_and_lying_layers(make_hold: MakeHold, tmp_path: Path) -> None:
    db = VulnDB.load(write_osv_db(tmp_path / "osv"))
    good = targz({"etc/os-release": OS_RELEASE, "var/lib/dpkg/status": DPKG_STATUS})
    garbage = os.urandom(2048)
    cfg = settings(tmp_path)
    async with make_hold(hold_allow_all_crew=True, hold_public=False, hold_scanner_secret=SECRET) as h, \
            SafeHttpClient(policy=SsrfPolicy(allow_private=True), timeout=10) as http:
        for data in (good, garbage):
            assert (await h.push_blob(data, iss=ALICE)).status_code == 200

        async def run(*layers: dict[str, Any]) -> dict[str, Any]:
            job = {"type": "scan_job", "digest": "sha256:" + "ab" * 32, "repository": "app", "userDid": ALICE,
                   "holdDid": h.did, "layers": list(layers)}
            return await run_job(job, hold_url=h.url, http=http, db=db, settings=cfg)

        ok = await run(layer(good))
        assert ok["error"] == "" and ok["summary"]["critical"] == 1 and ok["summary"]["total"] == 1
        assert ok["sbom"]["spdxVersion"] == "SPDX-2.3"
        assert {v["id"] for v in ok["vulnReport"]["vulnerabilities"]} == {"DSA-0001-1"}

        unreadable = await run(layer(good), layer(garbage))
        assert unreadable["error"] and unreadable["sbom"] is None and unreadable["summary"] == {}

        lying = await run(layer(good, size=len(good) - 1))
        assert "more than its declared" in lying["error"]
        short = await run(layer(good, size=len(good) + 1))
        assert "do not match" in short["error"]
        missing = await run(layer(b"never uploaded"))
        assert "the hold answered 404" in missing["error"]
        wrong_secret = await run_job(
            {"digest": "sha256:" + "cd" * 32, "holdDid": h.did, "layers": [layer(good)]},
            hold_url=h.url, http=http, db=db, settings=settings(tmp_path, SCANNER_SECRET="wrong"),
        )
        assert "the hold answered 401" in wrong_secret["error"]
        too_big = await run_job(
            {"digest": "sha256:" + "ef" * 32, "holdDid": h.did, "layers": [layer(good)]},
            hold_url=h.url, http=http, db=db, settings=settings(tmp_path, SCANNER_MAX_IMAGE_SIZE="10"),
        )
        assert "SCANNER_MAX_IMAGE_SIZE" in too_big["error"]
    assert list((tmp_path / "work").iterdir()) == []  # every job's directory was removed


def test_update_db_without_a_running_scanner_loads_and_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_osv_db(tmp_path / "osv")
    assert update_db(settings(tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.startswith("sha256:") and "5 records" in out and "no scanner running" in out
    assert update_db(settings(tmp_path, SCANNER_VULN_DB=str(tmp_path / "missing"))) == 1
    assert "missing: no such directory or file" in capsys.readouterr().err


def test_configuration_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SCANNER_SECRET"):
        load(ScannerSettings, {"SCANNER_HOLDS": "http://127.0.0.1:1", "SCANNER_VULN_DB": "x"})
    with pytest.raises(ConfigError, match="SCANNER_VULN_DB"):
        load(ScannerSettings, {"SCANNER_HOLDS": "http://127.0.0.1:1", "SCANNER_SECRET": "s"})
    with pytest.raises(ConfigError, match="SCANNER_CONCURRENCY"):
        load(ScannerSettings, {"SCANNER_CONCURRENCY": "0"})
