"""Layer walking: formats by magic bytes, whiteouts, bad input, and the Go and RPM readers."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest

from scanner.analysis import LayerError, VulnDB, analyze_layers, gobuild, rpmdb
from tests.support import imagebuild as ib

pytestmark = pytest.mark.unit


@pytest.fixture
def empty_db(tmp_path: Path) -> VulnDB:
    return VulnDB.load(ib.write_osv_dir(tmp_path / "osv", []))


def _npm(tmp_path: Path, name: str, *layers: ib.Layer, compression: ib.Compression = "gzip") -> list[str]:
    paths = [layer.write(tmp_path / f"{name}-{i}", compression) for i, layer in enumerate(layers)]
    db = VulnDB.load(ib.write_osv_dir(tmp_path / "osv-empty", []))
    return sorted(f"{p.name}@{p.version}" for p in analyze_layers(paths, db).packages)


@pytest.mark.parametrize("compression", ["tar", "gzip", "zstd"])
def test_each_compression_is_detected_by_magic(tmp_path: Path, compression: ib.Compression) -> None:
    layer = ib.Layer().file("./srv/node_modules/a/package.json", ib.package_json("a", "1.0.0"))
    assert _npm(tmp_path, compression, layer, compression=compression) == ["a@1.0.0"]


def test_whiteout_in_the_same_layer_does_not_delete_that_layers_file(tmp_path: Path) -> None:
    lower = ib.Layer().file("srv/node_modules/a/package.json", ib.package_json("a", "1.0.0"))
    upper = (
        ib.Layer()
        .file("srv/node_modules/a/package.json", ib.package_json("a", "2.0.0"))
        .whiteout("srv/node_modules/a")  # the entry order inside a layer does not matter
    )
    assert _npm(tmp_path, "same", lower, upper) == ["a@2.0.0"]


def test_opaque_root_directory_and_later_readd(tmp_path: Path) -> None:
    lower = ib.Layer().file("srv/node_modules/a/package.json", ib.package_json("a", "1.0.0"))
    hide = ib.Layer().opaque("srv")
    readd = ib.Layer().file("srv/node_modules/b/package.json", ib.package_json("b", "1.0.0"))
    assert _npm(tmp_path, "opq", lower, hide, readd) == ["b@1.0.0"]


def test_a_symlink_over_a_captured_file_replaces_it(tmp_path: Path) -> None:
    lower = ib.Layer().file("srv/node_modules/a/package.json", ib.package_json("a", "1.0.0"))
    upper = ib.Layer().symlink("srv/node_modules/a/package.json", "/dev/null")
    assert _npm(tmp_path, "link", lower, upper) == []


def test_names_are_clamped_to_the_image_root(tmp_path: Path) -> None:
    layer = (
        ib.Layer()
        .file("../../node_modules/up/package.json", ib.package_json("up", "1.0.0"))
        .file("/abs/node_modules/ok/package.json", ib.package_json("ok", "1.0.0"))
    )
    db = VulnDB.load(ib.write_osv_dir(tmp_path / "osv", []))
    found = analyze_layers([layer.write(tmp_path / "l")], db).packages
    assert sorted((p.name, p.location) for p in found) == [
        ("ok", "/abs/node_modules/ok/package.json"),
        ("up", "/node_modules/up/package.json"),
    ]


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a tar archive at all" * 40, b"\x1f\x8b\x08\x00garbage", b"\x28\xb5\x2f\xfdgarbage"],
    ids=["empty", "text", "bad-gzip", "bad-zstd"],
)
def test_unreadable_layers_raise_layer_error(tmp_path: Path, empty_db: VulnDB, content: bytes) -> None:
    good = ib.Layer().file("etc/os-release", ib.os_release("debian", "12")).write(tmp_path / "good")
    bad = tmp_path / "bad"
    bad.write_bytes(content)
    with pytest.raises(LayerError, match="layer 1"):
        analyze_layers([good, bad], empty_db)


def test_truncated_gzip_layer_raises_layer_error(tmp_path: Path, empty_db: VulnDB) -> None:
    full = ib.Layer().file("srv/big.bin", bytes(200_000)).write(tmp_path / "full")
    cut = tmp_path / "cut"
    cut.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(LayerError):
        analyze_layers([cut], empty_db)


# --- Go build info ------------------------------------------------------------------------------


def test_go_header_across_a_read_boundary() -> None:
    binary = ib.go_binary("go1.22.1", ("example.com/m", "v1.0.0"), [("golang.org/x/text", "v0.14.0")])
    blob = binary[binary.index(ib.GO_MAGIC) :]
    shifted = b"\x7fELF" + b"\0" * ((1 << 20) - 5 - 4) + blob  # the magic starts 5 bytes before 1 MiB
    assert shifted.index(ib.GO_MAGIC) == (1 << 20) - 5
    found = gobuild.scan_stream(io.BytesIO(shifted), "/bin/m")
    assert [(p.name, p.version) for p in found] == [
        ("stdlib", "go1.22.1"),
        ("example.com/m", "v1.0.0"),
        ("golang.org/x/text", "v0.14.0"),
    ]


def test_non_go_and_non_elf_files_have_no_build_info() -> None:
    assert gobuild.scan_stream(io.BytesIO(b"\x7fELF" + b"\0" * 5000), "/bin/c") == ()
    assert gobuild.scan_stream(io.BytesIO(b"#!/bin/sh\n" + ib.GO_MAGIC * 3), "/bin/sh") == ()
    truncated = ib.GO_MAGIC + bytes([8, 2]) + b"\0" * 16 + b"\xff\xff\xff"
    assert gobuild.scan_stream(io.BytesIO(b"\x7fELF" + truncated), "/bin/t") == ()


# --- RPM headers ----------------------------------------------------------------------------------


def test_rpm_header_fields_and_source_name() -> None:
    header = rpmdb.parse_header(
        ib.rpm_header("glibc-common", "2.34", "83.el9", epoch=0, sourcerpm="glibc-2.34-83.el9.src.rpm")
    )
    assert (header.name, header.version, header.release, header.epoch) == ("glibc-common", "2.34", "83.el9", 0)
    assert header.source_name == "glibc"


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\0\0\0\x01",
        struct.pack(">ii", 1, 10_000) + b"\0" * 16,
        struct.pack(">ii", -1, 0),
        struct.pack(">ii", 1, 4) + struct.pack(">iiii", 1000, 6, 0, 1) + b"abcd",
    ],
    ids=["empty", "short", "data-overrun", "negative", "unterminated"],
)
def test_malformed_rpm_headers_raise_value_error(blob: bytes) -> None:
    with pytest.raises(ValueError):
        rpmdb.parse_header(blob)


def test_corrupt_rpmdb_gives_no_packages(tmp_path: Path) -> None:
    path = tmp_path / "rpmdb.sqlite"
    path.write_bytes(b"SQLite format 3\0" + b"\xff" * 4000)
    assert rpmdb.read_database(path) == []


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_multi_frame_layers_are_read_to_the_end(tmp_path: Path, compression: str) -> None:
    """estargz (gzip members) and zstd:chunked (zstd frames) split a layer into many frames."""
    import gzip

    import zstandard

    tar = (
        ib.Layer()
        .file("srv/node_modules/a/package.json", ib.package_json("a", "1.0.0"))
        .file("srv/filler.bin", bytes(100_000))
        .file("srv/node_modules/b/package.json", ib.package_json("b", "2.0.0"))
        .tar_bytes()
    )
    half = len(tar) // 2
    if compression == "gzip":
        data = gzip.compress(tar[:half]) + gzip.compress(tar[half:])
    else:
        data = zstandard.ZstdCompressor().compress(tar[:half]) + zstandard.ZstdCompressor().compress(tar[half:])
    path = tmp_path / "layer"
    path.write_bytes(data)
    db = VulnDB.load(ib.write_osv_dir(tmp_path / "osv", []))
    assert sorted(p.name for p in analyze_layers([path], db).packages) == ["a", "b"]
