"""Scanner analysis: scan time of a 200 MiB, 4-layer image and matching against 100,000 OSV records.

Reproduce:  .venv/bin/python bench/scan_analysis.py [--records 100000] [--mib 200] [--runs 3]

The image is built here, deterministically (seeded): a Debian 12 base with a dpkg status of
400 packages, a layer of 300 Python distributions, a zstd layer of 300 npm modules, and a layer
with a Go binary (build info with 40 modules) and a jar; the rest of each layer is filler files,
half incompressible and half text, with ELF executables among them so the Go probe reads them.
The database is an osv.dev-style all.zip of N records, a third of them naming installed
packages (so their ranges are evaluated), the rest other names, across Debian:12, Debian:11,
PyPI, npm, Go and Maven.

The image and database are built first; a fresh process then loads the database and scans, so
the RSS printed is the scanner's own (baseline, after the load, peak during the scans). Per run:
the layer walk + inventory time, the matching time, package and finding counts.
`--hit-share` sets how many records name an installed package (fixed versions are drawn from
the installed versions' range, so about half of those match: a stress case at 1/3).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scanner.analysis import VulnDB, inventory, matching
from scanner.analysis.layers import LayerIndex
from tests.support import imagebuild as ib

MiB = 1 << 20


def rss_mib() -> float:
    """Peak RSS of this process image (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def filler(layer: ib.Layer, rng: random.Random, prefix: str, total: int, *, elf_every: int = 5) -> None:
    size, i = 0, 0
    text = (b"lorem ipsum dolor sit amet, consectetur adipiscing elit; " * 64)[: 2 * MiB]
    while size < total:
        chunk = min(4 * MiB, total - size)
        if i % elf_every == 0:
            data = b"\x7fELF\x02\x01\x01" + rng.randbytes(chunk - 7)
            layer.file(f"{prefix}/bin{i}", data, mode=0o755)
        elif i % 2:
            layer.file(f"{prefix}/blob{i}.bin", rng.randbytes(chunk))
        else:
            layer.file(f"{prefix}/doc{i}.txt", (text * (chunk // len(text) + 1))[:chunk])
        size += chunk
        i += 1


def build_image(tmp: Path, mib: int, rng: random.Random) -> tuple[list[Path], dict[str, list[str]]]:
    per_layer = mib * MiB // 4
    names: dict[str, list[str]] = {"Debian": [], "PyPI": [], "npm": [], "Go": [], "Maven": []}
    status = []
    for i in range(400):
        source = f"src{i // 2}"  # two binaries per source, as in Debian
        names["Debian"].append(source)
        status.append(ib.dpkg_entry(f"bin{i}", f"1.{i % 7}.{i % 13}-{1 + i % 3}", source=source))
    base = (
        ib.Layer()
        .file("etc/os-release", ib.os_release("debian", "12"))
        .file("var/lib/dpkg/status", ib.dpkg_status(*status))
    )
    filler(base, rng, "usr/lib/x86_64-linux-gnu", per_layer)

    py = ib.Layer()
    for i in range(300):
        names["PyPI"].append(f"py-pkg{i}")
        py.file(
            f"usr/lib/python3/dist-packages/py_pkg{i}-{i % 5}.{i % 11}.0.dist-info/METADATA",
            ib.dist_info_metadata(f"py-pkg{i}", f"{i % 5}.{i % 11}.0"),
        )
    filler(py, rng, "usr/share/python", per_layer)

    npm = ib.Layer()
    for i in range(300):
        names["npm"].append(f"node-pkg{i}")
        npm.file(
            f"app/node_modules/node-pkg{i}/package.json", ib.package_json(f"node-pkg{i}", f"{i % 4}.{i % 9}.{i % 3}")
        )
    filler(npm, rng, "app/assets", per_layer)

    deps = [(f"example.com/mod{i}", f"v0.{i % 10}.{i % 4}") for i in range(40)]
    names["Go"] = [p for p, _ in deps]
    jars = [("org.example", f"art{i}", f"2.{i % 6}.0") for i in range(20)]
    names["Maven"] = [f"{g}:{a}" for g, a, _ in jars]
    tools = ib.Layer().file(
        "usr/local/bin/server", ib.go_binary("go1.22.1", ("example.com/server", "(devel)"), deps), mode=0o755
    )
    tools.file("opt/app.jar", ib.jar(jars))
    filler(tools, rng, "opt/data", per_layer - 3 * MiB)
    return [
        base.write(tmp / "l0.tar.gz", "gzip"),
        py.write(tmp / "l1.tar.gz", "gzip"),
        npm.write(tmp / "l2.tar.zst", "zstd"),
        tools.write(tmp / "l3.tar", "tar"),
    ], names


def build_db(target: Path, count: int, names: dict[str, list[str]], rng: random.Random, hit_share: float) -> Path:
    ecosystems = [
        ("Debian:12", "Debian"),
        ("Debian:11", "Debian"),
        ("PyPI", "PyPI"),
        ("npm", "npm"),
        ("Go", "Go"),
        ("Maven", "Maven"),
    ]
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for i in range(count):
            ecosystem, kind = ecosystems[i % len(ecosystems)]
            installed = names[kind]
            name = rng.choice(installed) if installed and rng.random() < hit_share else f"other-{kind.lower()}-{i}"
            if kind == "Debian":
                fixed = f"1.{rng.randint(0, 7)}.{rng.randint(0, 13)}-{rng.randint(1, 3)}"
            elif kind == "Go":
                fixed = f"0.{rng.randint(0, 10)}.{rng.randint(0, 4)}"
            else:
                fixed = f"{rng.randint(0, 5)}.{rng.randint(0, 11)}.{rng.randint(0, 3)}"
            record = ib.osv(
                f"BENCH-{i}",
                ecosystem,
                name,
                [{"introduced": "0"}, {"fixed": fixed}],
                range_type="SEMVER" if kind in ("npm", "Go") else "ECOSYSTEM",
                aliases=[f"CVE-2024-{i}"],
                details="A realistic paragraph of advisory text. " * 8,
                severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"}]
                if i % 2
                else [],
            )
            archive.writestr(f"BENCH-{i}.json", json.dumps(record))
    return target


def measure(workdir: Path, runs: int) -> None:
    """Load the database and scan the image in this (fresh) process, so RSS is the scanner's own."""
    layers = sorted(workdir.glob("l*.tar*"))
    print(f"baseline RSS {rss_mib():.0f} MiB")
    started = time.perf_counter()
    db = VulnDB.load(workdir / "all.zip")
    print(f"db load: {time.perf_counter() - started:.2f} s, {db.records} records, RSS after load {rss_mib():.0f} MiB")
    walks, matches = [], []
    for run in range(runs):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-work-") as work:
            index = LayerIndex(Path(work))
            index.add_layers(layers)
            os_release = inventory.os_release_of(index)
            packages = inventory.packages_of(index, os_release)
        walked = time.perf_counter()
        findings = matching.match_all(packages, db)
        done = time.perf_counter()
        walks.append(walked - started)
        matches.append(done - walked)
        print(
            f"run {run}: walk+inventory {walked - started:.2f} s, match {done - walked:.3f} s,"
            f" {len(packages)} packages, {len(findings)} findings, peak RSS {rss_mib():.0f} MiB"
        )
    scans = [w + m for w, m in zip(walks, matches, strict=True)]
    print(
        f"median: scan {statistics.median(scans):.2f} s, walk {statistics.median(walks):.2f} s, match {statistics.median(matches):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hit-share", type=float, default=0.1, help="share of records naming an installed package")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the fresh measuring process
    args = parser.parse_args()
    if args.measure:
        measure(args.measure, args.runs)
        return
    rng = random.Random(16)
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmpdir:
        tmp = Path(tmpdir)
        layers, names = build_image(tmp, args.mib, rng)
        print(f"image: {args.mib} MiB in 4 layers, {sum(p.stat().st_size for p in layers) / MiB:.1f} MiB compressed")
        db_path = build_db(tmp / "all.zip", args.records, names, rng, args.hit_share)
        print(
            f"db: {args.records} records ({args.hit_share:.0%} naming installed packages), zip {db_path.stat().st_size / MiB:.1f} MiB"
        )
        sys.stdout.flush()
        subprocess.run([sys.executable, __file__, "--measure", str(tmp), "--runs", str(args.runs)], check=True)


if __name__ == "__main__":
    main()
