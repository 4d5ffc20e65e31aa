"""Images built in the test against a fixture OSV database: the findings are exactly the expected ones.

Each package is there for one boundary: the fixed version itself, a `~` version below the fix,
an epoch that puts the installed version above a fix written without one (and below one written
with it), a record for another Debian release, a withdrawn record, `last_affected` (inclusive),
a binary package whose `Source:` (with its own version) is what the record names, a package
deleted by a whiteout, a directory hidden by an opaque whiteout, a package database replaced by
an upper layer, and a Go module replaced in go.mod.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scanner.analysis import Analysis, VulnDB, analyze_layers
from tests.support import imagebuild as ib

pytestmark = pytest.mark.unit

CVSS_CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
CVSS_HIGH = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N"
CVSS4_MEDIUM = "CVSS:4.0/AV:N/AC:L/AT:N/PR:L/UI:N/VC:L/VI:L/VA:N/SC:N/SI:N/SA:N"  # 5.3

DEBIAN_RECORDS = [
    # libssl3 (source openssl) 3.0.11-1~deb12u1 is below the fix 3.0.11-1~deb12u2
    ib.osv(
        "DEBIAN-CVE-2024-0001",
        "Debian:12",
        "openssl",
        [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}],
        aliases=["CVE-2024-0001"],
        severity=[{"type": "CVSS_V3", "score": CVSS_CRITICAL}],
    ),
    # the same source in Debian 11 with a later fix: another release, not this image
    ib.osv("DEBIAN-CVE-2024-0002", "Debian:11", "openssl", [{"introduced": "0"}, {"fixed": "3.9.0-1"}]),
    # withdrawn: never reported
    ib.osv(
        "DEBIAN-CVE-2024-0003",
        "Debian:12",
        "openssl",
        [{"introduced": "0"}],
        withdrawn="2024-02-01T00:00:00Z",
    ),
    # tzdata is installed at exactly the fixed version
    ib.osv("DEBIAN-CVE-2024-0004", "Debian:12", "tzdata", [{"introduced": "0"}, {"fixed": "2024a-0+deb12u1"}]),
    # bash binary 5.2.15-2+b2 is a binNMU of source 5.2.15-2, which is below the fix 5.2.15-2+deb12u1
    ib.osv("DEBIAN-CVE-2024-0005", "Debian:12", "bash", [{"introduced": "0"}, {"fixed": "5.2.15-2+deb12u1"}]),
    # perl-base 1:5.36.0-7: above a fix without epoch, below a fix with it
    ib.osv("DEBIAN-CVE-2024-0006", "Debian:12", "perl", [{"introduced": "0"}, {"fixed": "5.36.0-9"}]),
    ib.osv("DEBIAN-CVE-2024-0007", "Debian:12", "perl", [{"introduced": "0"}, {"fixed": "1:5.36.0-8"}]),
    # zlib: last_affected is inclusive, no fix known
    ib.osv("DEBIAN-CVE-2024-0008", "Debian:12", "zlib", [{"introduced": "0"}, {"last_affected": "1:1.2.13.dfsg-1"}]),
    # only Debian 11 has a record for libgcrypt20
    ib.osv("DEBIAN-CVE-2024-0009", "Debian:11", "libgcrypt20", [{"introduced": "0"}, {"fixed": "1.10.2-1"}]),
    # curl is removed by an upper layer's new status file; nano is only in config-files state
    ib.osv("DEBIAN-CVE-2024-0010", "Debian:12", "curl", [{"introduced": "0"}]),
    ib.osv("DEBIAN-CVE-2024-0011", "Debian:12", "nano", [{"introduced": "0"}]),
    # a distroless status.d entry deleted by a whiteout
    ib.osv("DEBIAN-CVE-2024-0012", "Debian:12", "libzstd", [{"introduced": "0"}]),
]

LANGUAGE_RECORDS = [
    ib.osv(
        "GHSA-requests",
        "PyPI",
        "requests",
        [{"introduced": "0"}, {"fixed": "2.32.0"}],
        database_specific={"severity": "MODERATE"},
    ),
    ib.osv("PYSEC-jinja", "PyPI", "jinja2", [{"introduced": "0"}, {"fixed": "3.1.3"}]),  # installed as "Jinja2"
    ib.osv("PYSEC-urllib3", "PyPI", "urllib3", versions=["2.0.6"]),  # 2.0.7 is not listed
    ib.osv("PYSEC-pyyaml", "PyPI", "pyyaml", [{"introduced": "0"}, {"fixed": "5.4"}]),  # whited out
    ib.osv("PYSEC-six", "PyPI", "six", [{"introduced": "0"}, {"fixed": "1.16.0"}]),  # a single-file egg-info
    ib.osv(
        "GHSA-lodash",
        "npm",
        "lodash",
        [{"introduced": "0"}, {"fixed": "4.17.21"}],
        range_type="SEMVER",
        severity=[{"type": "CVSS_V3", "score": CVSS_HIGH}],
    ),
    ib.osv("GHSA-babel", "npm", "@babel/traverse", [{"introduced": "0"}, {"fixed": "7.23.2"}], range_type="SEMVER"),
    ib.osv("GHSA-minimist", "npm", "minimist", [{"introduced": "0"}, {"fixed": "1.2.6"}], range_type="SEMVER"),
    ib.osv(
        "GO-2023-net",
        "Go",
        "golang.org/x/net",
        [{"introduced": "0"}, {"fixed": "0.17.0"}],
        range_type="SEMVER",
        severity=[{"type": "CVSS_V4", "score": CVSS4_MEDIUM}],
    ),
    ib.osv("GO-2023-bar", "Go", "github.com/foo/bar", [{"introduced": "0"}, {"fixed": "1.0.1"}], range_type="SEMVER"),
    ib.osv(
        "GO-2023-stdlib",
        "Go",
        "stdlib",
        [{"introduced": "1.21.0-0"}, {"fixed": "1.21.3"}],
        range_type="SEMVER",
    ),
    ib.osv(
        "GHSA-log4j",
        "Maven",
        "org.apache.logging.log4j:log4j-core",
        [{"introduced": "2.0-beta9"}, {"fixed": "2.15.0"}],
        severity=[{"type": "CVSS_V3", "score": CVSS_CRITICAL}],
    ),
    ib.osv("GHSA-text", "Maven", "org.apache.commons:commons-text", [{"introduced": "1.5"}, {"fixed": "1.10.0"}]),
]


def _debian_image(tmp_path: Path) -> list[Path]:
    status = ib.dpkg_status(
        ib.dpkg_entry("libssl3", "3.0.11-1~deb12u1", source="openssl"),
        ib.dpkg_entry("openssl", "3.0.11-1~deb12u1"),
        ib.dpkg_entry("tzdata", "2024a-0+deb12u1", arch="all"),
        ib.dpkg_entry("bash", "5.2.15-2+b2", source="bash (5.2.15-2)"),
        ib.dpkg_entry("perl-base", "1:5.36.0-7", source="perl"),
        ib.dpkg_entry("zlib1g", "1:1.2.13.dfsg-1", source="zlib"),
        ib.dpkg_entry("libgcrypt20", "1.10.1-3"),
        ib.dpkg_entry("curl", "7.88.1-10"),
        ib.dpkg_entry("nano", "7.2-1", status="deinstall ok config-files"),
    )
    without_curl = status.replace(ib.dpkg_entry("curl", "7.88.1-10"), "")
    site = "usr/lib/python3/dist-packages"
    base = (
        ib.Layer()
        .file("usr/lib/os-release", ib.os_release("debian", "12", "Debian GNU/Linux 12 (bookworm)"))
        .symlink("etc/os-release", "../usr/lib/os-release")
        .directory("var/lib/dpkg")
        .file("var/lib/dpkg/status", status)
        .file("var/lib/dpkg/status.d/libzstd", ib.dpkg_entry("libzstd1", "1.5.4+dfsg2-5", source="libzstd"))
        .file(f"{site}/PyYAML-5.3.dist-info/METADATA", ib.dist_info_metadata("PyYAML", "5.3"))
        .file("app/node_modules/minimist/package.json", ib.package_json("minimist", "1.2.5"))
    )
    app = (
        ib.Layer()
        .file(f"{site}/requests-2.31.0.dist-info/METADATA", ib.dist_info_metadata("requests", "2.31.0"))
        .file(f"{site}/Jinja2-3.1.2.dist-info/METADATA", ib.dist_info_metadata("Jinja2", "3.1.2"))
        .file(f"{site}/urllib3-2.0.7.egg-info/PKG-INFO", ib.dist_info_metadata("urllib3", "2.0.7"))
        .file("usr/lib/python3/site-packages/six-1.15.0.egg-info", ib.dist_info_metadata("six", "1.15.0"))
        .file("app/node_modules/lodash/package.json", ib.package_json("lodash", "4.17.20"))
        .file("app/node_modules/@babel/traverse/package.json", ib.package_json("@babel/traverse", "7.23.2"))
        .file("app/node_modules/lodash/node_modules/x/lib/package.json", ib.package_json("not-a-module", "1.0.0"))
        .file(
            "usr/local/bin/app",
            ib.go_binary(
                "go1.21.0",
                ("example.com/app", "(devel)"),
                [("golang.org/x/net", "v0.15.0"), ("github.com/foo/bar", "v1.0.0")],
                replace={"github.com/foo/bar": ("github.com/foo/bar", "v1.0.1")},
            ),
            mode=0o755,
        )
        .file(
            "opt/app.jar",
            ib.jar(
                [("org.apache.logging.log4j", "log4j-core", "2.14.1")],
                nested={"BOOT-INF/lib/commons-text-1.9.jar": ib.jar([("org.apache.commons", "commons-text", "1.9")])},
            ),
        )
    )
    cleanup = (
        ib.Layer()
        .file("var/lib/dpkg/status", without_curl)  # `apt-get remove curl` rewrites the status file
        .whiteout("var/lib/dpkg/status.d/libzstd")
        .whiteout(f"{site}/PyYAML-5.3.dist-info")
        .opaque("app/node_modules/minimist")
        .file("app/node_modules/minimist/package.json", ib.package_json("minimist", "1.2.8"))
    )
    return [
        base.write(tmp_path / "base.tar.gz", "gzip"),
        app.write(tmp_path / "app.tar.zst", "zstd"),
        cleanup.write(tmp_path / "cleanup.tar", "tar"),
    ]


@pytest.fixture(scope="module")
def debian_analysis(tmp_path_factory: pytest.TempPathFactory) -> Analysis:
    tmp = tmp_path_factory.mktemp("debian-image")
    db = VulnDB.load(ib.write_osv_dir(tmp / "osv", DEBIAN_RECORDS + LANGUAGE_RECORDS))
    return analyze_layers(_debian_image(tmp), db)


def _ids(analysis: Analysis) -> set[tuple[str, str, str | None]]:
    return {(f.id, f.package.name, f.fixed_in) for f in analysis.findings}


def test_findings_are_exactly_the_expected_ones(debian_analysis: Analysis) -> None:
    assert _ids(debian_analysis) == {
        ("DEBIAN-CVE-2024-0001", "libssl3", "3.0.11-1~deb12u2"),
        ("DEBIAN-CVE-2024-0001", "openssl", "3.0.11-1~deb12u2"),
        ("DEBIAN-CVE-2024-0005", "bash", "5.2.15-2+deb12u1"),
        ("DEBIAN-CVE-2024-0007", "perl-base", "1:5.36.0-8"),
        ("DEBIAN-CVE-2024-0008", "zlib1g", None),
        ("GHSA-requests", "requests", "2.32.0"),
        ("PYSEC-jinja", "Jinja2", "3.1.3"),
        ("PYSEC-six", "six", "1.16.0"),
        ("GHSA-lodash", "lodash", "4.17.21"),
        ("GO-2023-net", "golang.org/x/net", "0.17.0"),
        ("GO-2023-stdlib", "stdlib", "1.21.3"),
        ("GHSA-log4j", "org.apache.logging.log4j:log4j-core", "2.15.0"),
        ("GHSA-text", "org.apache.commons:commons-text", "1.10.0"),
    }


def test_severities_come_from_cvss_vectors_and_the_records_own_rating(debian_analysis: Analysis) -> None:
    by_id = {f.id: f.severity for f in debian_analysis.findings}
    assert by_id["DEBIAN-CVE-2024-0001"] == "critical"  # CVSS v3 9.8
    assert by_id["GHSA-lodash"] == "high"  # CVSS v3 7.5
    assert by_id["GO-2023-net"] == "medium"  # CVSS v4 vector
    assert by_id["GHSA-requests"] == "medium"  # database_specific MODERATE
    assert by_id["PYSEC-jinja"] == "unknown"
    assert debian_analysis.counts() == {"critical": 3, "high": 1, "medium": 2, "low": 0, "unknown": 7, "total": 13}


def test_inventory_honours_whiteouts_and_replaced_files(debian_analysis: Analysis) -> None:
    names = {(p.ecosystem, p.name, p.version) for p in debian_analysis.packages}
    assert ("Debian:12", "curl", "7.88.1-10") not in names  # status file replaced by an upper layer
    assert ("Debian:12", "nano", "7.2-1") not in names  # config-files only
    assert not any(p.name == "libzstd1" for p in debian_analysis.packages)  # whiteout of a status.d file
    assert not any(p.name == "PyYAML" for p in debian_analysis.packages)  # whiteout of a directory
    assert ("npm", "minimist", "1.2.8") in names and ("npm", "minimist", "1.2.5") not in names  # opaque dir
    assert not any(p.name == "not-a-module" for p in debian_analysis.packages)
    assert debian_analysis.os_release is not None and debian_analysis.os_release["VERSION_ID"] == "12"
    assert {p.ecosystem for p in debian_analysis.packages} == {"Debian:12", "PyPI", "npm", "Go", "Maven"}


def test_package_urls_and_locations(debian_analysis: Analysis) -> None:
    purls = {p.name: p for p in debian_analysis.packages}
    assert (
        purls["libssl3"].purl == "pkg:deb/debian/libssl3@3.0.11-1~deb12u1?arch=amd64&distro=debian-12&upstream=openssl"
    )
    assert (
        purls["bash"].purl == "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12&upstream=bash%405.2.15-2"
    )
    assert purls["bash"].source == "bash" and purls["libssl3"].source == "openssl"
    assert purls["libssl3"].location == "/var/lib/dpkg/status"
    assert purls["Jinja2"].purl == "pkg:pypi/jinja2@3.1.2"
    assert purls["Jinja2"].location == "/usr/lib/python3/dist-packages/Jinja2-3.1.2.dist-info"
    assert purls["six"].location == "/usr/lib/python3/site-packages/six-1.15.0.egg-info"
    assert purls["@babel/traverse"].purl == "pkg:npm/%40babel/traverse@7.23.2"
    assert purls["golang.org/x/net"].purl == "pkg:golang/golang.org/x/net@v0.15.0"
    assert purls["github.com/foo/bar"].version == "v1.0.1"  # the replacement is what was built
    assert purls["stdlib"].version == "go1.21.0" and purls["stdlib"].location == "/usr/local/bin/app"
    assert purls["example.com/app"].version == "(devel)"
    log4j = purls["org.apache.logging.log4j:log4j-core"]
    assert log4j.purl == "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1"
    assert purls["org.apache.commons:commons-text"].location == "/opt/app.jar:BOOT-INF/lib/commons-text-1.9.jar"


def _alpine_image(tmp_path: Path) -> list[Path]:
    installed = ib.apk_installed(
        ib.apk_entry("musl", "1.2.4_git20230717-r4"),
        ib.apk_entry("libcrypto3", "3.1.4-r0", origin="openssl"),
        ib.apk_entry("libssl3", "3.1.4-r0", origin="openssl"),
        ib.apk_entry("busybox", "1.36.1-r15"),
        ib.apk_entry("zlib", "1.3-r2"),
    )
    layer = (
        ib.Layer()
        .file("etc/os-release", ib.os_release("alpine", "3.19.1", "Alpine Linux v3.19"))
        .file("lib/apk/db/installed", installed)
    )
    return [layer.write(tmp_path / "alpine.tar.gz", "gzip")]


ALPINE_RECORDS = [
    ib.osv("ALPINE-CVE-1", "Alpine:v3.19", "openssl", [{"introduced": "0"}, {"fixed": "3.1.4-r1"}]),
    ib.osv("ALPINE-CVE-2", "Alpine:v3.19", "busybox", [{"introduced": "0"}, {"fixed": "1.36.1-r15"}]),
    ib.osv("ALPINE-CVE-3", "Alpine:v3.18", "zlib", [{"introduced": "0"}, {"fixed": "1.3-r3"}]),
    # apk orders r-suffixes numerically: r2 < r10
    ib.osv("ALPINE-CVE-4", "Alpine:v3.19", "zlib", [{"introduced": "0"}, {"fixed": "1.3-r10"}]),
    # a _git suffix is post-release: 1.2.4_git20230717 is above 1.2.4 and below a later snapshot
    ib.osv("ALPINE-CVE-5", "Alpine:v3.19", "musl", [{"introduced": "0"}, {"fixed": "1.2.4-r0"}]),
    ib.osv("ALPINE-CVE-6", "Alpine:v3.19", "musl", [{"introduced": "0"}, {"fixed": "1.2.4_git20230801-r0"}]),
]


def test_alpine_image_matches_by_origin_and_release(tmp_path: Path) -> None:
    db = VulnDB.load(ib.write_osv_zip(tmp_path / "alpine.zip", ALPINE_RECORDS))
    analysis = analyze_layers(_alpine_image(tmp_path), db)
    assert {p.ecosystem for p in analysis.packages} == {"Alpine:v3.19"}
    assert _ids(analysis) == {
        ("ALPINE-CVE-1", "libcrypto3", "3.1.4-r1"),
        ("ALPINE-CVE-1", "libssl3", "3.1.4-r1"),
        ("ALPINE-CVE-4", "zlib", "1.3-r10"),
        ("ALPINE-CVE-6", "musl", "1.2.4_git20230801-r0"),
    }
    libssl = next(p for p in analysis.packages if p.name == "libssl3")
    assert libssl.purl == "pkg:apk/alpine/libssl3@3.1.4-r0?arch=x86_64&distro=alpine-3.19.1"
    assert libssl.source == "openssl"


def test_rpm_image_from_rpmdb_sqlite(tmp_path: Path) -> None:
    rpmdb = ib.rpmdb_sqlite(
        tmp_path / "rpmdb.sqlite",
        [
            ib.rpm_header("openssl-libs", "3.0.7", "24.el9", epoch=1, sourcerpm="openssl-3.0.7-24.el9.src.rpm"),
            ib.rpm_header("bash", "5.1.8", "6.el9", sourcerpm="bash-5.1.8-6.el9.src.rpm"),
            ib.rpm_header("gpg-pubkey", "350d275d", "6395a42b"),
        ],
    )
    layer = (
        ib.Layer()
        .file("etc/os-release", ib.os_release("rocky", "9.3", "Rocky Linux 9.3 (Blue Onyx)"))
        .file("var/lib/rpm/rpmdb.sqlite", rpmdb)
    )
    records = [
        ib.osv("RLSA-1", "Rocky Linux:9", "openssl-libs", [{"introduced": "0"}, {"fixed": "1:3.0.7-25.el9"}]),
        ib.osv("RLSA-2", "Rocky Linux:9", "bash", [{"introduced": "0"}, {"fixed": "5.1.8-6.el9"}]),
        ib.osv("RLSA-3", "Rocky Linux:8", "bash", [{"introduced": "0"}, {"fixed": "5.1.8-9.el8"}]),
    ]
    db = VulnDB.load(ib.write_osv_dir(tmp_path / "osv", records))
    analysis = analyze_layers([layer.write(tmp_path / "rocky.tar.zst", "zstd")], db)
    packages = {p.name: p for p in analysis.packages}
    assert set(packages) == {"openssl-libs", "bash"}
    assert packages["openssl-libs"].version == "1:3.0.7-24.el9"
    assert packages["openssl-libs"].source == "openssl"
    assert (
        packages["openssl-libs"].purl == "pkg:rpm/rocky/openssl-libs@3.0.7-24.el9?arch=x86_64&distro=rocky-9.3&epoch=1"
    )
    assert _ids(analysis) == {("RLSA-1", "openssl-libs", "1:3.0.7-25.el9")}
