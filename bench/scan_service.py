"""The scanner service end to end: a job for a 200 MiB, 4-layer image on a real hold, scanned by
a real `atcr scanner` process against 100,000 OSV records. Complements bench/scan_analysis.py
(analysis alone, in one process) with what the service adds: the job over the WebSocket, the
layer downloads from the hold (getBlob → signed URL → file, sha256 checked), the result upload,
and the hold's record write. Reports the scanner process's RSS.

Reproduce:  .venv/bin/python bench/scan_service.py [--records 100000] [--mib 200] [--runs 3]

Processes: an embedded valkey-server, `atcr hold` (filesystem storage, private, scanning on),
`atcr scanner`. The image and database are the seeded ones of bench/scan_analysis.py; the layers
are placed in the hold's storage directly and the job is queued through `ScanQueue` (what a push
does after notifyManifest), so the figure is the scan, not a push.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, wait_http
from scan_analysis import build_db, build_image

from atcr.identity import did_web_for_url
from atcr.valkey import EmbeddedValkey, connect
from hold.scan.queue import ScanQueue

MiB = 1 << 20
SECRET = "bench-secret"


def start(name: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "atcr.cli", name], env={"PATH": os.environ["PATH"], **env},
                                stdout=out, stderr=subprocess.STDOUT)


def rss(pid: int) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def queue_job(valkey_url: str, hold_did: str, job: dict[str, object]) -> None:
    client = connect(valkey_url)
    try:
        await ScanQueue(client, hold_did).enqueue(job, rescan=True)
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(16)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scansvc-") as tmpdir:
        tmp = Path(tmpdir)
        valkey = EmbeddedValkey(tmp / "valkey", port=free_port())
        valkey_url = valkey.start()
        try:
            layers, names = build_image(tmp, args.mib, rng)
            db = build_db(tmp / "all.zip", args.records, names, rng)
            print(f"image: {args.mib} MiB in 4 layers, {sum(p.stat().st_size for p in layers) / MiB:.1f} MiB stored;"
                  f" db: {args.records} records")
            hold_port, scanner_port = free_port(), free_port()
            hold_url = f"http://127.0.0.1:{hold_port}"
            hold_did = did_web_for_url(f"http://localhost:{hold_port}")
            root = tmp / "hold" / "blobs"
            descs = []
            for path in layers:
                data = path.read_bytes()
                hexd = hashlib.sha256(data).hexdigest()
                target = root / "blobs" / "sha256" / hexd[:2] / hexd / "data"
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                descs.append({"digest": f"sha256:{hexd}", "size": len(data),
                              "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip"})
            net = {"VALKEY_URL": valkey_url, "ATCR_ALLOW_PRIVATE_NETWORKS": "true", "ATCR_LOG_LEVEL": "info",
                   "HOME": str(tmp)}
            procs.append(start("hold", {
                **net, "HOLD_HTTP_ADDR": f"127.0.0.1:{hold_port}", "HOLD_PUBLIC_URL": f"http://localhost:{hold_port}",
                "HOLD_DATA_DIR": str(tmp / "hold"), "STORAGE_DRIVER": "filesystem", "STORAGE_ROOT_DIR": str(root),
                "HOLD_SCANNER_SECRET": SECRET, "HOLD_OWNER": "did:plc:benchowner000000000000000",
            }, tmp / "hold.log"))
            wait_http(f"{hold_url}/readyz", ok_below=300)
            started = time.perf_counter()
            procs.append(start("scanner", {
                **net, "SCANNER_HTTP_ADDR": f"127.0.0.1:{scanner_port}", "SCANNER_HOLDS": hold_url,
                "SCANNER_SECRET": SECRET, "SCANNER_VULN_DB": str(db), "SCANNER_WORK_DIR": str(tmp / "work"),
            }, tmp / "scanner.log"))
            wait_http(f"http://127.0.0.1:{scanner_port}/readyz", timeout=600, ok_below=300)
            scanner = procs[-1]
            now, peak = rss(scanner.pid)
            print(f"scanner ready (db loaded, subscribed) in {time.perf_counter() - started:.1f} s;"
                  f" RSS {now:.0f} MiB (peak {peak:.0f})")
            times = []
            for run in range(args.runs):
                digest = "sha256:" + hashlib.sha256(f"bench-{run}".encode()).hexdigest()
                job = {"digest": digest, "repository": "bench", "userDid": "did:plc:benchuser0000000000000000",
                       "manifest": f"at://did:plc:benchuser0000000000000000/io.atcr.manifest/{digest[7:]}",
                       "layers": descs}
                started = time.perf_counter()
                asyncio.run(queue_job(valkey_url, hold_did, job))
                while True:
                    state = httpx.get(f"{hold_url}/xrpc/io.atcr.hold.getScanStatus", params={"digest": digest},
                                      timeout=10).json()
                    if state["state"] in ("done", "failed"):
                        break
                    time.sleep(0.02)
                took = time.perf_counter() - started
                times.append(took)
                scan = state.get("scan", {})
                now, peak = rss(scanner.pid)
                print(f"run {run}: {state['state']} in {took:.2f} s ({scan.get('total')} findings);"
                      f" scanner RSS {now:.0f} MiB, peak {peak:.0f} MiB")
            print(f"median job time (queued → record written): {statistics.median(times):.2f} s")
            for line in (tmp / "scanner.log").read_text(errors="replace").splitlines():
                if "analysed in" in line or "scanned in" in line:
                    print("scanner log:", line.split("scanner: ", 1)[-1][:200])
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
            valkey.stop()


if __name__ == "__main__":
    main()
