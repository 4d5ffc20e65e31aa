"""OSV range evaluation, database loading and the version hash."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scanner.analysis import Package, VulnDB, VulnDBError
from scanner.analysis.matching import findings_for, match_version
from tests.support import imagebuild as ib

pytestmark = pytest.mark.unit


def _in(
    version: str, events: list[dict[str, str]], scheme: str = "PyPI", kind: str = "ECOSYSTEM"
) -> tuple[bool, str | None]:
    flat = tuple((k, v) for e in events for k, v in e.items())
    return match_version(version, kind, flat, scheme)


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("0.9", (False, None)),  # below introduced
        ("1.0", (True, "1.2")),  # introduced itself
        ("1.1", (True, "1.2")),
        ("1.2", (False, None)),  # the fixed version itself
        ("1.5", (False, None)),
        ("2.0", (True, "2.1")),  # second span
        ("2.0.5", (True, "2.1")),
        ("2.1", (False, None)),
        ("3.0", (True, None)),  # introduced again, last_affected inclusive
        ("3.5", (True, None)),
        ("3.5.1", (False, None)),
    ],
)
def test_range_with_several_spans(version: str, expected: tuple[bool, str | None]) -> None:
    events = [
        {"introduced": "3.0"},
        {"fixed": "1.2"},
        {"introduced": "1.0"},
        {"last_affected": "3.5"},
        {"introduced": "2.0"},
        {"fixed": "2.1"},
    ]  # unsorted on purpose: the schema does not order events
    assert _in(version, events) == expected


@st.composite
def well_formed_range(draw: st.DrawFn) -> tuple[list[tuple[int, int | None, str]], list[dict[str, str]]]:
    """Spans over integer versions: sorted distinct bounds, each introduced closed by fixed or
    last_affected, the last one possibly open. Returns the spans and the events, shuffled."""
    bounds = sorted(draw(st.sets(st.integers(1, 40), min_size=1, max_size=8)))
    open_end = draw(st.booleans()) or len(bounds) % 2 == 1
    if len(bounds) % 2 == 0 and open_end:
        bounds = bounds[:-1]
    spans: list[tuple[int, int | None, str]] = []
    events: list[dict[str, str]] = []
    for i in range(0, len(bounds), 2):
        start = bounds[i]
        introduced = "0" if i == 0 and draw(st.booleans()) else str(start)
        events.append({"introduced": introduced})
        start = 0 if introduced == "0" else start
        if i + 1 < len(bounds):
            close = draw(st.sampled_from(["fixed", "last_affected"]))
            events.append({close: str(bounds[i + 1])})
            spans.append((start, bounds[i + 1], close))
        else:
            spans.append((start, None, "open"))
    return spans, draw(st.permutations(events))


@given(well_formed_range(), st.integers(0, 45))
def test_range_evaluation_matches_the_spans(
    case: tuple[list[tuple[int, int | None, str]], list[dict[str, str]]], v: int
) -> None:
    spans, events = case
    expected: tuple[bool, str | None] = (False, None)
    for start, end, close in spans:
        if end is None and v >= start:
            expected = (True, None)
        elif end is not None and start <= v and (v < end if close == "fixed" else v <= end):
            expected = (True, str(end) if close == "fixed" else None)
    assert _in(str(v), events) == expected, (spans, events, v)


def test_limit_bounds_the_range() -> None:
    events = [{"introduced": "0"}, {"limit": "2.0"}]
    assert _in("1.9", events) == (True, None)
    assert _in("2.0", events) == (False, None)
    assert _in("3.0", events) == (False, None)


def test_introduced_zero_is_below_everything() -> None:
    assert _in("0.0.0.dev1", [{"introduced": "0"}, {"fixed": "0.1"}]) == (True, "0.1")


def _db(tmp_path: Path, *records: dict[str, object]) -> VulnDB:
    return VulnDB.load(ib.write_osv_dir(tmp_path / "osv", list(records)))


def _pkg(name: str, version: str, ecosystem: str, source: str | None = None, purl: str = "pkg:generic/x") -> Package:
    return Package(name=name, version=version, ecosystem=ecosystem, purl=purl, source=source, location="/x")


def test_git_ranges_are_ignored_and_versions_lists_match_exactly(tmp_path: Path) -> None:
    record = ib.osv("OSV-1", "PyPI", "Django", versions=["4.2.1", "4.2.2"])
    record["affected"][0]["ranges"] = [{"type": "GIT", "repo": "https://g.invalid/x", "events": [{"introduced": "0"}]}]
    db = _db(tmp_path, record)
    assert [f.id for f in findings_for(_pkg("django", "4.2.1", "PyPI"), db)] == ["OSV-1"]
    assert findings_for(_pkg("django", "4.2.3", "PyPI"), db) == []


def test_unparseable_versions_skip_the_range_not_the_scan(tmp_path: Path) -> None:
    db = _db(
        tmp_path, ib.osv("OSV-2", "npm", "left-pad", [{"introduced": "0"}, {"fixed": "1.3.0"}], range_type="SEMVER")
    )
    assert findings_for(_pkg("left-pad", "not-a-version", "npm"), db) == []
    assert [f.fixed_in for f in findings_for(_pkg("left-pad", "1.2.0", "npm"), db)] == ["1.3.0"]


def test_a_record_aliased_by_another_is_reported_once(tmp_path: Path) -> None:
    db = _db(
        tmp_path,
        ib.osv(
            "GHSA-aaaa",
            "PyPI",
            "flask",
            [{"introduced": "0"}, {"fixed": "2.3.2"}],
            aliases=["PYSEC-2023-62", "CVE-2023-30861"],
        ),
        ib.osv(
            "PYSEC-2023-62",
            "PyPI",
            "flask",
            [{"introduced": "0"}, {"fixed": "2.3.2"}],
            aliases=["GHSA-aaaa", "CVE-2023-30861"],
        ),
    )
    found = findings_for(_pkg("Flask", "2.3.1", "PyPI"), db)
    assert [f.id for f in found] == ["GHSA-aaaa"]
    assert found[0].aliases == ("PYSEC-2023-62", "CVE-2023-30861")
    assert found[0].url == "https://security.example.invalid/GHSA-aaaa"


def test_ubuntu_severity_word_and_per_package_severity(tmp_path: Path) -> None:
    ubuntu = ib.osv(
        "UBUNTU-CVE-1", "Ubuntu:22.04:LTS", "openssl", [{"introduced": "0"}, {"fixed": "3.0.2-0ubuntu1.15"}]
    )
    ubuntu["severity"] = [{"type": "Ubuntu", "score": "negligible"}]
    per_package = ib.osv("OSV-3", "Ubuntu:22.04:LTS", "openssl", [{"introduced": "0"}], aliases=[])
    per_package["affected"][0]["severity"] = [
        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}
    ]
    db = _db(tmp_path, ubuntu, per_package)
    found = findings_for(_pkg("libssl3", "3.0.2-0ubuntu1.14", "Ubuntu:22.04:LTS", source="openssl"), db)
    assert {(f.id, f.severity) for f in found} == {("UBUNTU-CVE-1", "low"), ("OSV-3", "critical")}


def test_red_hat_product_streams_match_the_release(tmp_path: Path) -> None:
    db = _db(
        tmp_path,
        ib.osv(
            "RHSA-1",
            "Red Hat:enterprise_linux:9::appstream",
            "curl",
            [{"introduced": "0"}, {"fixed": "0:7.76.1-26.el9"}],
        ),
        ib.osv(
            "RHSA-2",
            "Red Hat:enterprise_linux:8::appstream",
            "curl",
            [{"introduced": "0"}, {"fixed": "0:7.61.1-34.el8"}],
        ),
    )
    found = findings_for(_pkg("curl", "7.76.1-23.el9", "Red Hat:enterprise_linux:9"), db)
    assert [(f.id, f.fixed_in) for f in found] == [("RHSA-1", "0:7.76.1-26.el9")]


def test_version_is_a_content_hash_equal_for_dir_and_zip(tmp_path: Path) -> None:
    records = [ib.osv(f"OSV-{i}", "PyPI", f"p{i}", [{"introduced": "0"}]) for i in range(5)]
    in_dir = VulnDB.load(ib.write_osv_dir(tmp_path / "d", records))
    in_zip = VulnDB.load(ib.write_osv_zip(tmp_path / "all.zip", records))
    again = VulnDB.load(tmp_path / "d")
    assert in_dir.version == in_zip.version == again.version
    assert in_dir.version.startswith("sha256:")
    assert in_dir.records == 5
    (tmp_path / "d" / "OSV-3.json").write_text(json.dumps({**records[3], "modified": "2024-02-02T00:00:00Z"}))
    assert VulnDB.load(tmp_path / "d").version != in_dir.version


def test_malformed_records_are_counted_and_skipped(tmp_path: Path) -> None:
    target = ib.write_osv_dir(
        tmp_path / "d", [ib.osv("OSV-ok", "npm", "a", [{"introduced": "0"}], range_type="SEMVER")]
    )
    (target / "broken.json").write_text("{not json")
    (target / "list.json").write_text("[1, 2]")
    (target / "odd.json").write_text(json.dumps({"id": "OSV-odd", "affected": [{"package": "x"}, 5, {"ranges": "y"}]}))
    db = VulnDB.load(target)
    assert (db.records, db.skipped) == (2, 2)
    assert [f.id for f in findings_for(_pkg("a", "1.0.0", "npm"), db)] == ["OSV-ok"]


def test_missing_or_corrupt_sources_raise_vulndb_error(tmp_path: Path) -> None:
    with pytest.raises(VulnDBError, match="no such"):
        VulnDB.load(tmp_path / "absent")
    (tmp_path / "bad.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(VulnDBError, match="not a readable zip"):
        VulnDB.load(tmp_path / "bad.zip")


def test_zip_entries_that_are_not_records_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "all.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("README.txt", "not a record")
        archive.writestr("dir/", "")
        archive.writestr(
            "GHSA-x.json",
            json.dumps(ib.osv("GHSA-x", "Go", "example.com/m", [{"introduced": "0"}], range_type="SEMVER")),
        )
    db = VulnDB.load(path)
    assert db.records == 1 and db.skipped == 0


def test_a_directory_of_per_ecosystem_zips_and_loose_records(tmp_path: Path) -> None:
    (tmp_path / "db" / "Debian").mkdir(parents=True)
    (tmp_path / "db" / "PyPI").mkdir()
    ib.write_osv_zip(
        tmp_path / "db" / "Debian" / "all.zip", [ib.osv("DSA-1", "Debian:12", "bash", [{"introduced": "0"}])]
    )
    ib.write_osv_zip(tmp_path / "db" / "PyPI" / "all.zip", [ib.osv("PYSEC-1", "PyPI", "six", [{"introduced": "0"}])])
    ib.write_osv_dir(
        tmp_path / "db" / "local", [ib.osv("LOCAL-1", "npm", "a", [{"introduced": "0"}], range_type="SEMVER")]
    )
    db = VulnDB.load(tmp_path / "db")
    assert db.records == 3
    assert [f.id for f in findings_for(_pkg("bash", "5.2.15-2", "Debian:12"), db)] == ["DSA-1"]
    assert [f.id for f in findings_for(_pkg("six", "1.0", "PyPI"), db)] == ["PYSEC-1"]
    (tmp_path / "db" / "PyPI" / "all.zip").write_bytes(b"corrupt")
    with pytest.raises(VulnDBError, match="all.zip"):
        VulnDB.load(tmp_path / "db")
