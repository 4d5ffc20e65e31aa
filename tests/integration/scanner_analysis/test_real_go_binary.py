"""A binary built by the real Go toolchain (golang-go, installed by scripts/test) is inventoried and matched.

Modules come from a file:// GOPROXY written here, so the build needs no network; the module
zip follows the proxy protocol's layout (`<module>@<version>/...`). The build cache is Go's
default (~/.cache/go-build): the first run on a machine compiles the standard library (~20 s
on 2 busy cores), later runs take ~3 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from scanner.analysis import VulnDB, analyze_layers
from tests.support import imagebuild as ib

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _proxy(root: Path, module: str, version: str, files: dict[str, str]) -> None:
    at = root / module / "@v"
    at.mkdir(parents=True)
    gomod = f"module {module}\n\ngo 1.19\n"
    (at / "list").write_text(f"{version}\n")
    (at / f"{version}.info").write_text(json.dumps({"Version": version, "Time": "2024-01-01T00:00:00Z"}))
    (at / f"{version}.mod").write_text(gomod)
    with zipfile.ZipFile(at / f"{version}.zip", "w") as archive:
        archive.writestr(f"{module}@{version}/go.mod", gomod)
        for name, text in files.items():
            archive.writestr(f"{module}@{version}/{name}", text)


def _go_version() -> str:
    out = subprocess.run(["go", "env", "GOVERSION"], capture_output=True, text=True, check=True, timeout=60)
    return out.stdout.strip()


def test_real_go_binary(tmp_path: Path) -> None:
    proxy, src = tmp_path / "proxy", tmp_path / "src"
    _proxy(proxy, "example.com/greet", "v1.2.3", {"greet.go": 'package greet\n\nfunc Hello() string { return "hi" }\n'})
    src.mkdir()
    (src / "go.mod").write_text("module example.com/app\n\ngo 1.19\n\nrequire example.com/greet v1.2.3\n")
    (src / "main.go").write_text(
        'package main\n\nimport (\n\t"fmt"\n\n\t"example.com/greet"\n)\n\nfunc main() { fmt.Println(greet.Hello()) }\n'
    )
    env = {
        **os.environ,
        "GOPROXY": proxy.as_uri(),
        "GOSUMDB": "off",
        "GOFLAGS": "-mod=mod -modcacherw",
        "GOMODCACHE": str(tmp_path / "modcache"),
        "CGO_ENABLED": "0",
        "GOTOOLCHAIN": "local",
    }
    build = subprocess.run(
        ["go", "build", "-trimpath", "-o", str(tmp_path / "app"), "."],
        cwd=src, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    go = _go_version()  # e.g. go1.19.8
    major, minor, patch = (go.removeprefix("go").split(".") + ["0"])[:3]
    next_patch = f"{major}.{minor}.{int(patch) + 1}"

    layer = ib.Layer().file("usr/local/bin/app", (tmp_path / "app").read_bytes(), mode=0o755)
    records = [
        ib.osv(
            "GO-2024-0001", "Go", "example.com/greet", [{"introduced": "0"}, {"fixed": "1.2.4"}], range_type="SEMVER"
        ),
        ib.osv(
            "GO-2024-0002", "Go", "example.com/greet", [{"introduced": "0"}, {"fixed": "1.2.3"}], range_type="SEMVER"
        ),
        ib.osv(
            "GO-2024-0003",
            "Go",
            "stdlib",
            [{"introduced": "0"}, {"fixed": next_patch}],
            range_type="SEMVER",
        ),
    ]
    db = VulnDB.load(ib.write_osv_dir(tmp_path / "osv", records))
    analysis = analyze_layers([layer.write(tmp_path / "layer.tar.gz")], db)
    assert {(p.name, p.version) for p in analysis.packages} == {
        ("stdlib", go),
        ("example.com/app", "(devel)"),
        ("example.com/greet", "v1.2.3"),
    }
    assert {(f.id, f.package.name) for f in analysis.findings} == {
        ("GO-2024-0001", "example.com/greet"),
        ("GO-2024-0003", "stdlib"),
    }
