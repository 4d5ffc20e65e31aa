"""`atcr scanner update-db`: ask the running scanner to reload SCANNER_VULN_DB now, or, when
none answers on SCANNER_HTTP_ADDR, load it here to check it (prints its version)."""

from __future__ import annotations

import sys

import httpx

from scanner.settings import ScannerSettings
from scanner.vulndb import load_db


def update_db(settings: ScannerSettings) -> int:
    try:
        r = httpx.post(f"http://{settings.http_addr}/update-db", timeout=settings.db_timeout + 10)
    except httpx.ConnectError:
        r = None
    if r is not None:
        body = r.json()
        if r.status_code != 200:
            print(f"atcr scanner update-db: {body.get('message')}", file=sys.stderr)
            return 1
        print(f"{body['version']} ({'updated' if body['changed'] else 'unchanged'}; the running scanner reloaded it)")
        return 0
    db = load_db(settings)
    print(f"{db.version} ({db.records} records; no scanner running at {settings.http_addr}, nothing else done)")
    return 0
