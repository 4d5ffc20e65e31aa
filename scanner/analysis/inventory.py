"""Turn the captured files of an image into its package inventory."""

from __future__ import annotations

import posixpath

from scanner.analysis import langpkgs, ospkgs, osrelease, rpmdb
from scanner.analysis.layers import LayerIndex
from scanner.analysis.model import Package


def os_release_of(index: LayerIndex) -> dict[str, str] | None:
    """`/etc/os-release`, falling back to `/usr/lib/os-release` (often the target of the former's symlink)."""
    for path in ("etc/os-release", "usr/lib/os-release"):
        captured = index.files.get(path)
        if captured is not None and captured.kind == "os-release":
            parsed = osrelease.parse(captured.data)
            if parsed:
                return parsed
    return None


def packages_of(index: LayerIndex, os_release: dict[str, str] | None) -> list[Package]:
    """Every package found, sorted by location then name so results are stable."""
    found: list[Package] = []
    for path, captured in index.files.items():
        location = "/" + path
        if captured.kind == "dpkg":
            found.extend(ospkgs.dpkg(captured.data, location, os_release))
        elif captured.kind == "apk":
            found.extend(ospkgs.apk(captured.data, location, os_release))
        elif captured.kind == "rpmdb" and captured.spill is not None:
            found.extend(ospkgs.rpm(rpmdb.read_database(captured.spill), location, os_release))
        elif captured.kind in ("python", "python-egg-file"):
            where = location if captured.kind == "python-egg-file" else posixpath.dirname(location)
            package = langpkgs.python_dist(captured.data, where)
            if package is not None:
                found.append(package)
        elif captured.kind == "npm":
            package = langpkgs.npm_module(captured.data, location)
            if package is not None:
                found.append(package)
        elif captured.kind in ("go", "jar"):
            found.extend(captured.packages)
    found.sort(key=lambda p: (p.location, p.ecosystem, p.name, p.version))
    return found
