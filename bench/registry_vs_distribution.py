"""The registry against Debian's docker-registry (CNCF distribution 2.8), same machine, same run.

    .venv/bin/python bench/registry_vs_distribution.py [--duration 15] [--image-mb 200] [--runs 5]
        [--layout production|dev] [--direct-uploads auto|off] [--server uvicorn|granian]

Needs: docker-registry, wrk, hyperfine, skopeo (Debian packages). Starts, on 127.0.0.1 only:
a real PLC+PDS (dev-env), Valkey, our services and distribution 2.8 (filesystem, no auth).
Ours is either the production layout (`atcr hold` on the filesystem driver, like
distribution's, and `atcr appview` with 2 uvicorn workers) or `atcr dev` (one process), with
direct uploads (layer bytes from skopeo straight to the hold, docs/direct-uploads.md) on or
off. Measures:

* manifest GET by tag, warm: wrk requests/s and p99 (ours with a bearer token, as clients send);
* blob GET: ours answers 307 to the hold's signed URL; distribution streams the bytes itself
  (its filesystem driver has no redirect), so the figure is "how fast a pull learns where the
  bytes are" vs "serving a small blob";
* push and pull of an image of `--image-mb` in 4 layers with skopeo, timed by hyperfine. New
  layers are generated and `sync`ed before every push (hyperfine's --prepare, untimed).

Writes a section into docs/benchmarks.md between markers.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from atcr.identity import did_web_for_url  # noqa: E402
from bench._common import write_section  # noqa: E402
from tests.support.ocilayout import Layout  # noqa: E402
from tests.support.pdsnet import TestNetwork, create_account, create_app_password, ensure_installed  # noqa: E402
from tests.support.services import free_port, running_valkey  # noqa: E402
from tests.support.stack import Service, appview_env, hold_env, network_env, start_service  # noqa: E402

MARK_BEGIN = "<!-- bench:registry_vs_distribution begin -->"
MARK_END = "<!-- bench:registry_vs_distribution end -->"


def markers(layout: str, direct: str, server: str = "uvicorn", with_proxied: bool = False) -> tuple[str, str]:
    """One section per (layout, direct uploads, server); MARK_BEGIN/END keep the run from before
    direct uploads."""
    tag = f"{layout}-direct-{direct}" + ("" if server == "uvicorn" else f"-{server}")
    if with_proxied:
        tag += "-vs-proxied"
    return (f"<!-- bench:registry_vs_distribution:{tag} begin -->",
            f"<!-- bench:registry_vs_distribution:{tag} end -->")


def start_granian(name: str, service: str, env: dict[str, str], work: Path, port: int, workers: int) -> Any:
    """`atcr <service>`'s app factory under granian (pip) instead of uvicorn, same settings."""
    log = work / f"{name}.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--workers", str(workers), "--no-log", f"atcr.cli:_factory_{service}"],
            stdout=out, stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", ""), "HOME": str(work), **env},
            cwd=str(ROOT),
        )
    svc = Service(name=name, url=f"http://127.0.0.1:{port}", proc=proc, log=log, env=dict(env))
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{svc.url}/readyz", timeout=2).status_code == 200:
                return svc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            svc.stop()
            raise RuntimeError(f"{name} under granian did not start:\n{svc.logs()[-3000:]}")
        time.sleep(0.1)


class DevProcess:
    """`atcr dev` (AppView, hold and consumer in one process) on free ports."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.ports = {"appview": free_port(), "hold": free_port(), "jetstream": free_port()}
        self.log = work / "dev.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "atcr.cli", "dev", "--data-dir", str(work / "dev"),
                 "--appview-port", str(self.ports["appview"]), "--hold-port", str(self.ports["hold"]),
                 "--jetstream-port", str(self.ports["jetstream"])],
                stdout=out, stderr=subprocess.STDOUT, env={"PATH": os.environ.get("PATH", ""), **env},
            )
        self.url = f"http://127.0.0.1:{self.ports['appview']}"
        deadline = time.monotonic() + 60
        for url in (self.url, f"http://127.0.0.1:{self.ports['hold']}"):
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"atcr dev did not start:\n{self.log.read_text()[-3000:]}")
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def wrk(url: str, headers: dict[str, str], duration: int, connections: int = 64) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": ms("50"),
        "p99": ms("99"),
        "bad": float(non2xx.group(1)) if non2xx else 0.0,
        "socket_errors": errors.group(1) if errors else "",  # type: ignore[dict-item]
    }


def hyperfine_once(command: str, prepare: str, export: Path) -> float:
    """One timed run of `command` (after `prepare`, untimed), by hyperfine."""
    subprocess.run(
        ["hyperfine", "--runs", "1", "--prepare", prepare, "--export-json", str(export), "--style", "none", command],
        check=True,
        capture_output=True,
    )
    return float(json.loads(export.read_text())["results"][0]["mean"])


def alternating(commands: dict[str, tuple[str, str]], runs: int, work: Path) -> dict[str, dict[str, float]]:
    """Time each labelled (command, prepare) `runs` times, alternating labels run by run.

    On a shared machine the speed drifts over minutes; alternating gives both registries the
    same conditions, and the median of the per-round ratios is the figure least moved by it.
    """
    times: dict[str, list[float]] = {label: [] for label in commands}
    for i in range(runs):
        order = list(commands) if i % 2 == 0 else list(reversed(commands))
        for label in order:
            command, prepare = commands[label]
            times[label].append(hyperfine_once(command, prepare, work / f"hf-{label}.json"))
    out = {
        label: {"mean": statistics.mean(t), "stddev": statistics.stdev(t) if len(t) > 1 else 0.0,
                "min": min(t), "max": max(t), "rounds": [round(x, 3) for x in t]}
        for label, t in times.items()
    }
    base = "distribution" if "distribution" in commands else list(commands)[-1]
    for label in commands:
        if label != base:
            ratios = [a / b for a, b in zip(times[label], times[base], strict=True)]
            out[label]["median_ratio"] = statistics.median(ratios)
    return out


def start_distribution(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (work / "registry").mkdir()
    cfg = work / "registry.yml"
    cfg.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  cache:\n"
        f"    blobdescriptor: inmemory\n  filesystem:\n    rootdirectory: {work / 'registry'}\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(f"{url}/v2/", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("docker-registry did not start")


GEN = """
import sys; sys.path.insert(0, {root!r})
import shutil
from pathlib import Path
from tests.support.ocilayout import Layout
root = Path({path!r}); shutil.rmtree(root, ignore_errors=True)
lay = Layout(root)
layers = [lay.add_big_blob({size}) for _ in range(4)]
lay.tag(lay.image(layers=layers), "big")
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--image-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--layout", choices=("production", "dev"), default="production")
    parser.add_argument("--direct-uploads", choices=("auto", "off"), default="auto")
    parser.add_argument("--with-proxied", action="store_true",
                        help="production layout: also push through a second AppView with direct uploads off, "
                             "in the same alternating rounds")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn",
                        help="production layout: the ASGI server running the hold and the AppView")
    args = parser.parse_args()
    for tool in ("docker-registry", "wrk", "hyperfine", "skopeo"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found: apt-get install docker-registry wrk hyperfine skopeo")

    work = Path(tempfile.mkdtemp(prefix="atcr-bench-"))
    ensure_installed()
    results: dict[str, dict[str, float]] = {}
    with running_valkey() as valkey_url, TestNetwork() as net:
        env = network_env(valkey_url, net.plc_url, net.pds_url)
        env["ATCR_LOG_LEVEL"] = "warning"
        env["ATCR_DIRECT_UPLOADS"] = args.direct_uploads
        stops: list[Any] = []
        if args.layout == "production":
            hold_port, app_port = free_port(), free_port()
            hold_vars = {**env, **hold_env(work, hold_port)}
            if args.server == "granian":
                hold = start_granian("hold", "hold", hold_vars, work, hold_port, 1)
            else:
                hold = start_service("hold", "hold", hold_vars, work, f"http://127.0.0.1:{hold_port}")
            stops.append(hold.stop)
            hold_did = did_web_for_url(f"http://localhost:{hold_port}")
            app_env = {
                **env, **appview_env(work, app_port, hold_did), "ATCR_WORKERS": "2",
                "ATCR_DIRECT_UPLOADS": args.direct_uploads,
            }
            appview: Any = (
                start_granian("appview", "appview", app_env, work, app_port, 2)
                if args.server == "granian"
                else start_service("appview", "appview", app_env, work, f"http://127.0.0.1:{app_port}")
            )
            stops.insert(0, appview.stop)
            if args.with_proxied:
                proxied_port = free_port()
                proxied_env = {**app_env, **appview_env(work / "proxied", proxied_port, hold_did),
                               "ATCR_WORKERS": "2", "ATCR_DIRECT_UPLOADS": "off"}
                proxied = start_service(
                    "appview-proxied", "appview", proxied_env, work / "proxied", f"http://127.0.0.1:{proxied_port}"
                )
                stops.insert(0, proxied.stop)
        else:
            dev_env = {
                **env, "ATCR_JETSTREAM_ENABLED": "false", "ATCR_BACKFILL_ENABLED": "false",
                "ATCR_RATE_LIMIT_ADDRESS": "0", "HOME": str(work),
            }
            appview = DevProcess(work, dev_env)
            stops.append(appview.stop)
        dist, dist_url = start_distribution(work)
        try:
            account = create_account(net.pds_url, "bench")
            password = create_app_password(account, "bench")
            ours = appview.url.removeprefix("http://")
            theirs = dist_url.removeprefix("http://")

            # A small image for the request-rate figures.
            small = Layout(work / "small")
            desc = small.image()
            small.tag(desc, "v1")
            creds = f"--dest-creds={account.handle}:{password}"
            for host, extra in ((ours, [creds]), (theirs, [])):
                subprocess.run(
                    ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", *extra,
                     f"oci:{small.root}:v1", f"docker://{host}/{account.handle}/small:v1"],
                    check=True, capture_output=True,
                )
            token = httpx.get(
                f"{appview.url}/auth/token",
                params={"service": ours, "scope": f"repository:{account.handle}/small:pull"},
                timeout=30,
            ).json()["token"]
            accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
            path = f"/v2/{account.handle}/small/manifests/v1"
            for label, base, hdrs in (
                ("ours", appview.url, {**accept, "Authorization": f"Bearer {token}"}),
                ("distribution", dist_url, accept),
            ):
                wrk(base + path, hdrs, 3)  # warm up
                results[f"manifest_{label}"] = wrk(base + path, hdrs, args.duration)
                results[f"manifest16_{label}"] = wrk(base + path, hdrs, args.duration, connections=16)
            layer = small.index[0]
            cfg_digest = json.loads((small.root / "blobs" / "sha256" / str(layer["digest"])[7:]).read_text())["config"]["digest"]
            blob_path = f"/v2/{account.handle}/small/blobs/{cfg_digest}"
            results["blob_ours"] = wrk(appview.url + blob_path, {"Authorization": f"Bearer {token}"}, args.duration)
            results["blob_distribution"] = wrk(dist_url + blob_path, {}, args.duration)

            # Push and pull of a big image, timed by hyperfine.
            size = args.image_mb * 1024 * 1024 // 4
            src = work / "big"
            gen = work / "gen.py"
            gen.write_text(GEN.format(root=str(ROOT), path=str(src), size=size))
            # `sync` after the new layers are written: a registry's fsync during the timed push
            # must not pay for flushing the generator's 200 MB (ext4 commits them together).
            prepare = f"{sys.executable} {gen} && sync"
            subprocess.run([sys.executable, str(gen)], check=True)
            pushes: dict[str, tuple[str, str]] = {}
            pulls: dict[str, tuple[str, str]] = {}
            if args.layout == "production" and args.with_proxied:
                pushes["proxied"] = (
                    f"skopeo --insecure-policy copy --dest-tls-verify=false {creds} "
                    f"oci:{src}:big docker://{proxied.url.removeprefix('http://')}/{account.handle}/big-$(date +%s%N):1",
                    prepare,
                )
            for label, host, extra in (("ours", ours, creds), ("distribution", theirs, "")):
                pushes[label] = (
                    f"skopeo --insecure-policy copy --dest-tls-verify=false {extra} "
                    f"oci:{src}:big docker://{host}/{account.handle}/big-$(date +%s%N):1",
                    prepare,
                )
                # Pull: push once to a fixed name, then pull it repeatedly into a fresh dir.
                subprocess.run(
                    f"skopeo --insecure-policy copy --dest-tls-verify=false {extra} oci:{src}:big "
                    f"docker://{host}/{account.handle}/bigpull:1", shell=True, check=True, capture_output=True,
                )
                out = work / f"pulled-{label}"
                pulls[label] = (
                    f"skopeo --insecure-policy copy --src-tls-verify=false docker://{host}/{account.handle}/bigpull:1 "
                    f"oci:{out}:x",
                    f"rm -rf {out}",
                )
            for kind, commands in (("push", pushes), ("pull", pulls)):
                for label, figures in alternating(commands, args.runs, work).items():
                    results[f"{kind}_{label}"] = figures
        finally:
            dist.terminate()
            for stop in stops:
                stop()
            dist.wait(timeout=10)
    shutil.rmtree(work, ignore_errors=True)
    write_report(results, args)
    print(json.dumps(results, indent=2))


def write_report(r: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    mo, md = r["manifest_ours"], r["manifest_distribution"]
    bo, bd = r["blob_ours"], r["blob_distribution"]
    begin, end = markers(args.layout, args.direct_uploads, args.server, args.with_proxied)
    ours = (
        f"AppView with 2 {args.server} workers + bearer token on every request, hold ({args.server}) on the "
        "filesystem driver"
        if args.layout == "production"
        else "`atcr dev` (AppView, hold and consumer in one uvicorn process) + bearer token on every request"
    )
    title = f" — {args.layout} layout, direct uploads {args.direct_uploads}" + (
        f", {args.server}" if args.layout == "production" else ""
    )
    lines = [
        begin,
        f"## Registry API vs CNCF distribution 2.8 (Debian `docker-registry`){title}",
        "",
        f"`bench/registry_vs_distribution.py --layout {args.layout} --direct-uploads {args.direct_uploads} "
        f"--server {args.server}`, "
        f"{os.cpu_count()} cores, everything on 127.0.0.1 in one run; "
        f"wrk -t2 -c64 -d{args.duration}s; push and pull timed by hyperfine, {args.runs} rounds alternating "
        f"the two registries; {args.image_mb} MB image in 4 layers (new random layers before every push). "
        f"Ours: {ours}; direct uploads {args.direct_uploads} (docs/direct-uploads.md). "
        "distribution: filesystem driver, no auth.",
        "",
        "| measure | ours | distribution 2.8 | ratio |",
        "|---|---:|---:|---:|",
        f"| manifest GET by tag (warm), req/s | {mo['rps']:.0f} | {md['rps']:.0f} | {mo['rps'] / md['rps']:.2f}x |",
        f"| manifest GET p50 / p99 at 64 connections, ms | {mo['p50']:.2f} / {mo['p99']:.2f} | {md['p50']:.2f} / {md['p99']:.2f} | |",
        f"| manifest GET at 16 connections, req/s | {r['manifest16_ours']['rps']:.0f} | "
        f"{r['manifest16_distribution']['rps']:.0f} | {r['manifest16_ours']['rps'] / r['manifest16_distribution']['rps']:.2f}x |",
        f"| manifest GET p50 / p99 at 16 connections, ms | {r['manifest16_ours']['p50']:.2f} / "
        f"{r['manifest16_ours']['p99']:.2f} | {r['manifest16_distribution']['p50']:.2f} / "
        f"{r['manifest16_distribution']['p99']:.2f} | |",
        f"| blob GET, req/s (ours: 307 to signed URL; theirs: bytes) | {bo['rps']:.0f} | {bd['rps']:.0f} | "
        f"{bo['rps'] / bd['rps']:.2f}x |",
        f"| blob GET p99, ms | {bo['p99']:.2f} | {bd['p99']:.2f} | |",
        f"| push {args.image_mb} MB (skopeo), s | {r['push_ours']['mean']:.2f} ± {r['push_ours']['stddev']:.2f} | "
        f"{r['push_distribution']['mean']:.2f} ± {r['push_distribution']['stddev']:.2f} | "
        f"{r['push_ours']['mean'] / r['push_distribution']['mean']:.2f}x (median of rounds "
        f"{r['push_ours']['median_ratio']:.2f}x) |",
        *([
            f"| push {args.image_mb} MB (skopeo) through an AppView with direct uploads off, same rounds, s | "
            f"{r['push_proxied']['mean']:.2f} ± {r['push_proxied']['stddev']:.2f} | | "
            f"{r['push_proxied']['mean'] / r['push_distribution']['mean']:.2f}x (median of rounds "
            f"{r['push_proxied']['median_ratio']:.2f}x) |"
        ] if "push_proxied" in r else []),
        f"| pull {args.image_mb} MB (skopeo), s | {r['pull_ours']['mean']:.2f} ± {r['pull_ours']['stddev']:.2f} | "
        f"{r['pull_distribution']['mean']:.2f} ± {r['pull_distribution']['stddev']:.2f} | "
        f"{r['pull_ours']['mean'] / r['pull_distribution']['mean']:.2f}x (median of rounds "
        f"{r['pull_ours']['median_ratio']:.2f}x) |",
        "",
        f"Non-2xx/3xx responses during wrk: ours {mo['bad']:.0f} (manifest) / {bo['bad']:.0f} (blob); "
        f"distribution {md['bad']:.0f} / {bd['bad']:.0f}.",
        end,
    ]
    write_section("\n".join(lines), begin, end)

if __name__ == "__main__":
    main()
