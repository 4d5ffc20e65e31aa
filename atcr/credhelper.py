"""`docker-credential-atcr`: the Docker credential-helper protocol for ATCR registries.

This build knows the protocol verbs and `version`; the device-flow `login` and account
management arrive with the sign-in work. `get` never prompts: without stored credentials it
fails at once with a hint, as Docker expects of a helper.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from atcr import __version__


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print("usage: docker-credential-atcr {get,store,erase,list,version}")
        return
    verb = args[0]
    if verb == "version":
        print(f"docker-credential-atcr {__version__}")
        return
    if verb == "list":
        print("{}")
        return
    if verb == "get":
        print("credentials not found: run `docker-credential-atcr login` first", file=sys.stdout)
        raise SystemExit(1)
    print(f"docker-credential-atcr: {verb}: not supported by this build", file=sys.stderr)
    raise SystemExit(1)
