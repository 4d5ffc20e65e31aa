"""Maven artifacts from the `pom.properties` files Maven writes into every jar it builds.

A jar is a zip, which needs random access, so the layer walker spills it to a temporary file
first. Jars nested one level deep (Spring Boot's `BOOT-INF/lib/`, a war's `WEB-INF/lib/`) are
read from memory within a size bound; deeper nesting is not followed.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from packageurl import PackageURL

from scanner.analysis.model import Package

_MAX_NESTED = 64 << 20
_MAX_PROPERTIES = 64 << 10


def scan_archive(path: Path, location: str) -> tuple[Package, ...]:
    """The Maven artifacts a jar (or war/ear) declares, including those of jars nested in it."""
    try:
        with zipfile.ZipFile(path) as archive:
            return tuple(_scan(archive, location, nested=True))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError):
        return ()


def _scan(archive: zipfile.ZipFile, location: str, *, nested: bool) -> list[Package]:
    found: list[Package] = []
    for info in archive.infolist():
        name = info.filename
        if name.startswith("META-INF/maven/") and name.endswith("/pom.properties"):
            if info.file_size <= _MAX_PROPERTIES:
                package = _from_properties(archive.read(info), location)
                if package is not None:
                    found.append(package)
        elif nested and name.endswith(".jar") and info.file_size <= _MAX_NESTED:
            try:
                with zipfile.ZipFile(io.BytesIO(archive.read(info))) as inner:
                    found.extend(_scan(inner, f"{location}:{name}", nested=False))
            except (zipfile.BadZipFile, EOFError, ValueError):
                continue
    return found


def _from_properties(data: bytes, location: str) -> Package | None:
    props: dict[str, str] = {}
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        props[key.strip()] = value.strip()
    group, artifact, version = props.get("groupId"), props.get("artifactId"), props.get("version")
    if not (group and artifact and version):
        return None
    purl = PackageURL(type="maven", namespace=group, name=artifact, version=version).to_string()
    return Package(
        name=f"{group}:{artifact}", version=version, ecosystem="Maven", purl=purl, source=None, location=location
    )
