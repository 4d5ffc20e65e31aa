"""`atcr verify` and `docker-credential-atcr verify`: check an image's provenance from the command line.

    atcr verify <registry>/<handle-or-did>/<repo>:<tag>
    atcr verify <registry>/<handle-or-did>/<repo>@<digest>
    atcr verify <registry>/<handle-or-did>/<repo>:<tag>@<digest>   (the tag must still point there)

The registry is asked for the manifest (anonymously, through its token challenge) so the digest
compared is the one a pull gets; `--no-registry` skips that and checks the publisher's records
alone. `--from-registry` takes the proof from the registry's signature referrer instead of the
publisher's PDS (only the DID document is fetched: offline from the PDS). Exit status 0 only
when every check passes; 1 when one fails (the status names which); 2 for a bad reference.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO

from atcr.errors import AtcrError
from atcr.syntax import is_oci_repository, is_oci_tag

# The credential helper builds this command's parser on every call (docker runs `get` for
# every pull): the network and crypto modules are imported only when `verify` runs
# (atcr/verifyrun.py).

_DIGEST = re.compile(r"^sha(256:[0-9a-f]{64}|512:[0-9a-f]{128})$")


class BadReference(AtcrError):
    """The image reference cannot be parsed."""


@dataclass(frozen=True)
class ImageRef:
    registry: str
    identity: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.identity}/{self.repository}"

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"


def parse_reference(text: str) -> ImageRef:
    """`<registry>/<identity>/<repo>[:tag][@digest]`; a bare name means `:latest`."""
    rest = text.strip().removeprefix("docker://").removeprefix("oci://")
    digest: str | None = None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        if not _DIGEST.match(digest):
            raise BadReference(f"{digest!r} is not a sha256/sha512 digest")
    parts = rest.split("/")
    if len(parts) < 3:
        raise BadReference(f"{text!r}: expected <registry>/<handle-or-did>/<repository>[:tag][@digest]")
    registry, identity = parts[0], parts[1]
    path = "/".join(parts[2:])
    tag: str | None = None
    if ":" in path.rsplit("/", 1)[-1]:
        path, _, tag = path.rpartition(":")
        if not is_oci_tag(tag):
            raise BadReference(f"{tag!r} is not a valid tag")
    if not is_oci_repository(path):
        raise BadReference(f"{path!r} is not a valid repository name")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry=registry, identity=identity, repository=path, tag=tag, digest=digest)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", help="<registry>/<handle-or-did>/<repository>:<tag> or ...@<digest>")
    parser.add_argument("--json", action="store_true", help="print the verdict as JSON")
    parser.add_argument(
        "--no-registry", action="store_true",
        help="do not ask the registry for the manifest; check the publisher's records only",
    )
    parser.add_argument(
        "--from-registry", action="store_true",
        help="take the proof from the registry's signature referrer instead of the publisher's PDS",
    )
    parser.add_argument("--plain-http", action="store_true", help="talk to the registry over http (local registries)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before giving up (default 10)")
    parser.add_argument("--plc-url", default=None, help="PLC directory (ATCR_PLC_URL; default https://plc.directory)")
    parser.add_argument(
        "--handle-resolver", default=None,
        help="resolve handles through this PDS (ATCR_HANDLE_RESOLVER_URL), for networks without DNS handles",
    )


def run(ns: argparse.Namespace, environ: Mapping[str, str], out: IO[str], err: IO[str]) -> int:
    """Run the verify command; the exit status."""
    try:
        ref = parse_reference(ns.image)
    except BadReference as exc:
        print(f"verify: {exc}", file=err)
        return 2
    import asyncio

    from atcr.config import NetworkSettings
    from atcr.settings import load
    from atcr.verifyrun import render, verify_image

    overrides = {"plc_url": ns.plc_url, "handle_resolver_url": ns.handle_resolver}
    settings = load(NetworkSettings, environ, overrides)
    result = asyncio.run(
        verify_image(
            ref, settings=settings, use_registry=not ns.no_registry, from_registry=ns.from_registry,
            plain_http=ns.plain_http, timeout=ns.timeout,
        )
    )
    print(result.dumps() if ns.json else render(result), file=out)
    return 0 if result.ok else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="atcr verify", description=__doc__.split("\n\n")[0] if __doc__ else None)
    add_arguments(parser)
    ns = parser.parse_args(argv)
    import os

    raise SystemExit(run(ns, os.environ, sys.stdout, sys.stderr))
