"""`atcr scanner update-db`: ask the running scanner to reload SCANNER_VULN_DB now, or, when
none answers on SCANNER_HTTP_ADDR, load it here to check it (prints its version)."""

from __future__ import annotations

import sys

import httpx

from scanner.analysis import AnalysisError
from scanner.settings import ScannerSettings
from scanner.vulndb import load_db


def update_db(settings: ScannerSettings) -> int:
    if not settings.vuln_db:
        print("atcr scanner update-db: SCANNER_VULN_DB is not set", file=sys.stderr)
        return 2
    try:
        r = httpx.post(f"http://{settings.http_addr}/update-db", timeout=settings.db_timeout + 10)
    except httpx.ConnectError:
        r = None
    except httpx.HTTPError as exc:
        print(f"atcr scanner update-db: the scanner at {settings.http_addr} did not answer: {type(exc).__name__}",
              file=sys.stderr)
        return 1
    if r is not None:
        body = r.json()
        if r.status_code != 200:
            print(f"atcr scanner update-db: {body.get('message')}", file=sys.stderr)
            return 1
        print(f"{body['version']} ({'updated' if body['changed'] else 'unchanged'}; the running scanner reloaded it)")
        return 0
    try:
        db = load_db(settings)
    except AnalysisError as exc:
        print(f"atcr scanner update-db: {exc}", file=sys.stderr)
        return 1
    print(f"{db.version} ({db.records} records; no scanner running at {settings.http_addr}, nothing else done)")
    return 0
