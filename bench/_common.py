"""What the hold benchmarks share: loopback ports, readiness waits and a did:web stand-in."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.serviceauth import multikey_of


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, *, ok_below: int = 500) -> None:
    """Wait until `url` answers with a status below `ok_below` (or fail after `timeout`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < ok_below:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


class DidWeb:
    """Serves one did:web document (a benchmark user, or the AppView) on loopback."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, *, pds: bool = False) -> None:
        port = free_port()
        self.did = f"did:web:127.0.0.1%3A{port}"
        document: dict[str, Any] = {
            "id": self.did,
            "verificationMethod": [
                {"id": f"{self.did}#atproto", "type": "Multikey", "controller": self.did,
                 "publicKeyMultibase": multikey_of(key)}
            ],
        }
        if pds:
            document["service"] = [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                    "serviceEndpoint": f"http://127.0.0.1:{port}"}]
        doc = json.dumps(document).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(doc)))
                self.end_headers()
                self.wfile.write(doc)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


BENCHMARKS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"


def write_section(section: str, begin: str, end: str) -> None:
    """Replace one benchmark's section of docs/benchmarks.md (from `begin` to `end`), or append it."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else "# Benchmarks\n"
    section = section.strip("\n")
    if begin in text and end in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    BENCHMARKS.write_text(text)
