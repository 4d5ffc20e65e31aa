"""A small Debian-like image with known dpkg, Python and npm contents, and OSV records that
match some of them: what the scanner e2e pushes and expects (tests/e2e/test_scanning.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.ocilayout import Layout, gzip_bytes, tar_layer

OS_RELEASE = b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
DPKG_STATUS = b"""Package: libexample1
Status: install ok installed
Architecture: amd64
Source: example
Version: 1.0-1
Description: vulnerable library

Package: safe-tool
Status: install ok installed
Architecture: amd64
Version: 2.0-1
Description: not affected

"""
PY_METADATA = b"Metadata-Version: 2.1\nName: Requests\nVersion: 2.25.0\n\n"
NPM_PACKAGE = json.dumps({"name": "lodash", "version": "4.17.20"}).encode()

# (id, ecosystem, package, introduced, fixed, CVSS v3 vector or None)
RECORDS = [
    ("DSA-0001-1", "Debian:12", "example", "0", "1.0-2", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),  # critical
    ("DSA-0002-1", "Debian:11", "example", "0", "9.0-1", None),  # another release: no finding
    ("GHSA-aaaa-bbbb-cccc", "PyPI", "requests", "0", "2.31.0", "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:H/I:N/A:N"),
    ("GHSA-dddd-eeee-ffff", "npm", "lodash", "0", "4.17.21", "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N"),
    ("GHSA-gggg-hhhh-iiii", "npm", "lodash", "0", "4.17.20", None),  # fixed in the installed version itself
]
EXPECTED_IDS = {"DSA-0001-1", "GHSA-aaaa-bbbb-cccc", "GHSA-dddd-eeee-ffff"}


def write_osv_db(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for vid, ecosystem, name, introduced, fixed, vector in RECORDS:
        record: dict[str, object] = {
            "schema_version": "1.6.0",
            "id": vid,
            "modified": "2024-01-01T00:00:00Z",
            "summary": f"test advisory for {name}",
            "affected": [{
                "package": {"ecosystem": ecosystem, "name": name},
                "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}],
            }],
            "references": [{"type": "ADVISORY", "url": f"https://example.test/{vid}"}],
        }
        if vector:
            record["severity"] = [{"type": "CVSS_V3", "score": vector}]
        (root / f"{vid}.json").write_text(json.dumps(record))
    return root


def build_image(layout: Layout, tag: str) -> dict[str, object]:
    """Two gzip layers (the OS, then the apps) tagged `tag`; returns the manifest descriptor."""
    base = gzip_bytes(tar_layer({"etc/os-release": OS_RELEASE, "var/lib/dpkg/status": DPKG_STATUS}))
    apps = gzip_bytes(tar_layer({
        "usr/lib/python3/dist-packages/requests-2.25.0.dist-info/METADATA": PY_METADATA,
        "app/node_modules/lodash/package.json": NPM_PACKAGE,
    }))
    layers = [layout.add_blob(base), layout.add_blob(apps)]
    for layer in layers:
        layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    desc = layout.image(layers=layers)
    layout.tag(desc, tag)
    return desc
