"""A did:web identity served on loopback (`http://localhost:<port>/.well-known/did.json`), as an
AppView publishes one: holds resolve it to verify the service tokens the AppView signs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric import ec

from atcr.identity import did_web_for_url
from atcr.serviceauth import multikey_of
from tests.support.services import free_port


@contextmanager
def serving_did_web() -> Iterator[tuple[str, ec.EllipticCurvePrivateKey]]:
    """(did, signing key) of an AppView-like did:web identity, served until the block ends."""
    key = ec.generate_private_key(ec.SECP256R1())
    port = free_port()
    did = did_web_for_url(f"http://localhost:{port}")
    doc = json.dumps({
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "verificationMethod": [
            {"id": f"{did}#atproto", "type": "Multikey", "controller": did, "publicKeyMultibase": multikey_of(key)}
        ],
        "service": [{"id": "#atcr_appview", "type": "AtcrAppView", "serviceEndpoint": f"http://localhost:{port}"}],
    }).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/.well-known/did.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/did+json")
            self.send_header("Content-Length", str(len(doc)))
            self.end_headers()
            self.wfile.write(doc)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield did, key
    finally:
        server.shutdown()
        server.server_close()
