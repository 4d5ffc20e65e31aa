"""The `atcr` command: run the AppView, the hold, the Jetstream consumer, the scanner, or all of
them together (`dev`).

The CLI is the only place that reads the environment: it turns env + flags into each
service's frozen settings object and hands it to the service. Services are imported
lazily by name so the shared core does not depend on them at import time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atcr import __version__
from atcr.errors import AtcrError, ConfigError
from atcr.settings import check_addr, default_data_dir, describe, load


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    summary: str
    settings: str  # "module:Class"
    factory: str  # "module:create_app"
    addr_field: str


SERVICES: dict[str, ServiceSpec] = {
    "appview": ServiceSpec(
        "appview",
        "Serve the OCI registry API (/v2), registry tokens (/auth/token) and the web UI.",
        "appview.settings:AppViewSettings",
        "appview.app:create_app",
        "http_addr",
    ),
    "hold": ServiceSpec(
        "hold",
        "Serve blob storage (S3 or local disk) behind the hold XRPC API, with its own did:web.",
        "hold.settings:HoldSettings",
        "hold.app:create_app",
        "http_addr",
    ),
    "jetstream": ServiceSpec(
        "jetstream",
        "Follow Jetstream and keep the AppView's Valkey read model warm; serves /status and /metrics.",
        "jetstream.settings:JetstreamSettings",
        "jetstream.app:create_app",
        "status_addr",
    ),
    "scanner": ServiceSpec(
        "scanner",
        "Scan images for vulnerabilities: take jobs from holds (subscribeScanJobs), answer SBOMs and reports.",
        "scanner.settings:ScannerSettings",
        "scanner.app:create_app",
        "http_addr",
    ),
}


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _settings_epilog(cls: type[Any]) -> str:
    lines = ["settings (flag / environment variable, default):"]
    for info in describe(cls):
        default = "" if info.secret else info.default
        if isinstance(default, tuple):
            default = ",".join(default)
        lines.append(f"  {info.flag:<28} {info.env:<30} {default!s}")
        lines.append(f"      {info.help}")
    return "\n".join(lines)


def _add_setting_flags(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    group = parser.add_argument_group("settings (each also read from its environment variable)")
    for info in describe(cls):
        group.add_argument(info.flag, dest=info.name, default=None, metavar=info.env, help=argparse.SUPPRESS)


def _overrides(ns: argparse.Namespace, cls: type[Any]) -> dict[str, Any]:
    return {info.name: getattr(ns, info.name, None) for info in describe(cls)}


def build_settings(spec: ServiceSpec, environ: Mapping[str, str], overrides: Mapping[str, Any]) -> Any:
    return load(_resolve(spec.settings), environ, overrides)


def _configure_logging(level: str) -> None:
    from atcr.server import configure_logging

    configure_logging(level)


def _run_service(spec: ServiceSpec, settings: Any) -> None:
    from atcr import httpguard
    from atcr.server import ServedApp, serve_all, uvicorn_options

    _configure_logging(settings.log_level)
    httpguard.configure(httpguard.InboundLimits.from_settings(settings))
    host, port = check_addr(spec.addr_field, getattr(settings, spec.addr_field))
    workers = getattr(settings, "workers", 1)
    if workers > 1:
        import uvicorn

        uvicorn.run(
            f"atcr.cli:_factory_{spec.name}",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            **uvicorn_options(settings.log_level),
        )
        return
    app = _resolve(spec.factory)(settings)
    asyncio.run(serve_all([ServedApp(spec.name, app, host, port)], log_level=settings.log_level))


def _factory(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from atcr import httpguard

        spec = SERVICES[name]
        settings = build_settings(spec, os.environ, {})
        httpguard.configure(httpguard.InboundLimits.from_settings(settings))  # in each uvicorn worker
        return _resolve(spec.factory)(settings)

    return make


_factory_appview = _factory("appview")
_factory_hold = _factory("hold")
_factory_jetstream = _factory("jetstream")
_factory_scanner = _factory("scanner")


# --- atcr dev -----------------------------------------------------------------------------------


def dev_environment(
    environ: Mapping[str, str],
    *,
    data_dir: Path,
    valkey_url: str,
    appview_port: int,
    hold_port: int,
    jetstream_port: int,
    scanner_port: int = 5002,
    scanner_secret: str = "",
) -> dict[str, str]:
    """Zero-configuration defaults for the four services; the real environment still wins.

    The scanner runs when SCANNER_VULN_DB names vulnerability data; then the hold scans every
    push (a dev hold has no tiers) and both sides share `scanner_secret`."""
    from atcr.identity import did_web_for_url

    # did:web of an IP literal is refused by the reference PDS as a service-auth audience, so a
    # local hold is named by `localhost` (which still resolves to the 127.0.0.1 it listens on).
    hold_url = f"http://localhost:{hold_port}"
    defaults = {
        "VALKEY_URL": valkey_url,
        "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        "ATCR_HTTP_ADDR": f"127.0.0.1:{appview_port}",
        "ATCR_BASE_URL": f"http://127.0.0.1:{appview_port}",
        "ATCR_DATA_DIR": str(data_dir / "appview"),
        "ATCR_DEFAULT_HOLD_DID": did_web_for_url(environ.get("HOLD_PUBLIC_URL", hold_url)),
        "HOLD_HTTP_ADDR": f"127.0.0.1:{hold_port}",
        "HOLD_PUBLIC_URL": hold_url,
        "HOLD_PUBLIC": "true",
        "HOLD_ALLOW_ALL_CREW": "true",
        "HOLD_DATA_DIR": str(data_dir / "hold"),
        "STORAGE_DRIVER": "filesystem",
        "STORAGE_ROOT_DIR": str(data_dir / "hold" / "blobs"),
        "ATCR_JETSTREAM_STATUS_ADDR": f"127.0.0.1:{jetstream_port}",
        "SCANNER_HTTP_ADDR": f"127.0.0.1:{scanner_port}",
        "SCANNER_HOLDS": f"http://127.0.0.1:{hold_port}",
        "SCANNER_WORK_DIR": str(data_dir / "scanner"),
    }
    if environ.get("SCANNER_VULN_DB"):
        secret = environ.get("HOLD_SCANNER_SECRET") or environ.get("SCANNER_SECRET") or scanner_secret
        defaults.update({"HOLD_SCANNER_SECRET": secret, "SCANNER_SECRET": secret, "HOLD_SCAN_ALL_PUSHES": "true"})
    return {**defaults, **{k: v for k, v in environ.items() if v != "" or k not in defaults}}


def _run_dev(ns: argparse.Namespace) -> None:
    from atcr.server import ServedApp, serve_all
    from atcr.valkey import EmbeddedValkey

    environ = dict(os.environ)
    data_dir = Path(ns.data_dir or environ.get("ATCR_DATA_DIR") or default_data_dir()).expanduser().resolve()
    _configure_logging(environ.get("ATCR_LOG_LEVEL", "info"))
    embedded: EmbeddedValkey | None = None
    valkey_url = environ.get("VALKEY_URL", "")
    try:
        if not valkey_url:
            (data_dir / "valkey").mkdir(parents=True, exist_ok=True)
            embedded = EmbeddedValkey(data_dir / "valkey", persist=True)
            valkey_url = embedded.start()
        env = dev_environment(
            environ,
            data_dir=data_dir,
            valkey_url=valkey_url,
            appview_port=ns.appview_port,
            hold_port=ns.hold_port,
            jetstream_port=ns.jetstream_port,
            scanner_port=ns.scanner_port,
            scanner_secret=secrets.token_urlsafe(32),
        )
        scanning = bool(env.get("SCANNER_VULN_DB"))
        served = []
        urls = {}
        # Also the stop order (serve_all stops them one after another): the AppView first, so its
        # last pull counts reach a hold that still answers; the hold next, so its shutdown flush
        # still has Valkey; the consumer last; the embedded Valkey after all of them (below). The
        # scanner, when there is one, goes before them all: its jobs go back to a hold still up.
        for name in (*(("scanner",) if scanning else ()), "appview", "hold", "jetstream"):
            spec = SERVICES[name]
            env_for = dict(env)
            if name == "appview":
                env_for["ATCR_DATA_DIR"] = str(data_dir / "appview")
            settings = build_settings(spec, env_for, {})
            if name == "appview":
                from atcr import httpguard

                httpguard.configure(httpguard.InboundLimits.from_settings(settings))
            host, port = check_addr(spec.addr_field, getattr(settings, spec.addr_field))
            served.append(ServedApp(name, _resolve(spec.factory)(settings), host, port))
            urls[name] = f"http://{host}:{port}"

        def ready() -> None:
            print(
                "atcr dev is ready:\n"
                f"  AppView    {urls['appview']}\n"
                f"  hold       {urls['hold']}  ({env['ATCR_DEFAULT_HOLD_DID']})\n"
                f"  consumer   {urls['jetstream']}/status\n"
                + (f"  scanner    {urls['scanner']}/status  (SCANNER_VULN_DB={env['SCANNER_VULN_DB']})\n"
                   if scanning else "  scanner    off (set SCANNER_VULN_DB to a directory, zip or URL of OSV data)\n")
                + f"  valkey     {'embedded' if embedded else 'external'}\n"
                f"  data dir   {data_dir}\n"
                "Press Ctrl-C to stop.",
                flush=True,
            )

        asyncio.run(serve_all(served, log_level=env.get("ATCR_LOG_LEVEL", "info"), on_ready=ready))
    finally:
        if embedded is not None:
            embedded.stop()  # SIGTERM: it writes its append-only file and exits


# --- entry point --------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atcr",
        description="An OCI container registry on the AT Protocol.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"atcr {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{appview,hold,jetstream,scanner,dev,verify}")
    for spec in SERVICES.values():
        cls = _resolve(spec.settings)
        p = sub.add_parser(
            spec.name,
            help=spec.summary,
            description=spec.summary,
            epilog=_settings_epilog(cls),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _add_setting_flags(p, cls)
        if spec.name == "hold":
            p.add_argument(
                "action", nargs="?", choices=("gc",), default=None,
                help="gc: run the garbage collector once (asks the running hold, else runs here) and exit",
            )
            p.add_argument("--grace", type=int, default=None, help="gc: seconds a blob must be unreferenced")
            p.add_argument("--dry-run", action="store_true", help="gc: report what would be deleted, delete nothing")
        if spec.name == "scanner":
            p.add_argument(
                "scanner_action", nargs="?", choices=("update-db",), default=None,
                help="update-db: make the running scanner reload SCANNER_VULN_DB now (else load and check it here)",
            )
        if spec.name == "jetstream":
            p.add_argument(
                "--status", dest="show_status", action="store_true",
                help="print the running consumer's status (from its status address) and exit",
            )
    dev = sub.add_parser(
        "dev",
        help="Run AppView + hold + consumer together with zero configuration.",
        description=(
            "Run the AppView, the hold, the Jetstream consumer and (with SCANNER_VULN_DB) the scanner in "
            "one process with an embedded "
            "Valkey (unless VALKEY_URL is set) and the hold on local disk under the data directory. "
            "Every service setting can still be given through its environment variable "
            "(see `atcr appview --help`, `atcr hold --help`, `atcr jetstream --help`, `atcr scanner --help`)."
        ),
    )
    dev.add_argument("--data-dir", default=None, help=f"data directory (ATCR_DATA_DIR; default {default_data_dir()})")
    dev.add_argument("--appview-port", type=int, default=5000, help="AppView port (default 5000)")
    dev.add_argument("--hold-port", type=int, default=8080, help="hold port (default 8080)")
    dev.add_argument("--jetstream-port", type=int, default=5001, help="consumer status port (default 5001)")
    dev.add_argument("--scanner-port", type=int, default=5002, help="scanner status port (default 5002)")
    from atcr import verifycmd

    verify = sub.add_parser(
        "verify",
        help="Prove who published an image, from the publisher's own ATProto repository.",
        description=verifycmd.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verifycmd.add_arguments(verify)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = make_parser()
    ns = parser.parse_args(argv)
    try:
        if ns.command == "verify":
            from atcr import verifycmd

            raise SystemExit(verifycmd.run(ns, os.environ, sys.stdout, sys.stderr))
        if ns.command == "dev":
            _run_dev(ns)
            return
        spec = SERVICES[ns.command]
        settings = build_settings(spec, os.environ, _overrides(ns, _resolve(spec.settings)))
        if getattr(ns, "action", None) == "gc":
            _configure_logging(settings.log_level)
            _resolve("hold.gc.cli:main")(settings, dry_run=ns.dry_run, grace=ns.grace)
            return
        if getattr(ns, "scanner_action", None) == "update-db":
            _configure_logging(settings.log_level)
            raise SystemExit(_resolve("scanner.cli:update_db")(settings))
        if getattr(ns, "show_status", False):
            _resolve("jetstream.status:print_status")(settings)
            return
        _run_service(spec, settings)
    except ConfigError as exc:
        print(f"atcr {ns.command}: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except AtcrError as exc:
        print(f"atcr {ns.command}: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
