"""Version order per ecosystem.

PEP 440 comes from `packaging` and Maven from `univers` (nexB's collection used by
VulnerableCode). dpkg, rpm and semver order are tuple keys from sortkeys.py, checked against
python-debian and univers by property tests (sortkeys.py says why); apk order is apkversion.py
(which says why univers' is not used). Written here: the dispatch on the OSV ecosystem name and
the normalisation of Go's `v`/`go` prefixes. Callers use only `<` on keys: some univers classes
derive `<=` and `==` from their fields rather than from the version order.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Protocol

import packaging.version
from univers import versions as uv

from scanner.analysis import sortkeys
from scanner.analysis.apkversion import apk_key


class Comparable(Protocol):
    def __lt__(self, other: Any, /) -> bool: ...
    def __eq__(self, other: object, /) -> bool: ...
    def __hash__(self) -> int: ...


class UnorderedVersion(ValueError):
    """The version string does not parse in its ecosystem's scheme."""


def ecosystem_base(ecosystem: str) -> str:
    """`Debian:12` -> `Debian`: the part that decides the version scheme."""
    return ecosystem.split(":", 1)[0]


_GO_RELEASE = re.compile(r"^(\d+)\.(\d+)(?:\.(\d+))?((?:rc|beta)\d+)?$")


def _go_semver(version: str) -> str:
    """Go module versions (`v1.2.3`) and toolchain versions (`go1.21rc2`) as plain semver."""
    if version.startswith("go"):
        match = _GO_RELEASE.match(version[2:])
        if match is None:
            raise UnorderedVersion(version)
        major, minor, patch, pre = match.groups()
        return f"{major}.{minor}.{patch or 0}" + (f"-{pre}" if pre else "")
    return version.removeprefix("v")


def _parse(scheme: str, version: str) -> Comparable:
    if scheme in ("Debian", "Ubuntu"):
        return sortkeys.dpkg_key(version)
    if scheme == "PyPI":
        return packaging.version.Version(version)
    if scheme == "Alpine":
        return apk_key(version)
    if scheme in ("Red Hat", "Rocky Linux", "AlmaLinux", "openSUSE", "SUSE", "Mageia", "openEuler"):
        return sortkeys.rpm_key(version)
    if scheme == "Maven":
        return uv.MavenVersion(version)
    if scheme == "Go":
        return sortkeys.semver_key(_go_semver(version))
    if scheme in ("npm", "SEMVER", "crates.io"):
        return sortkeys.semver_key(version.removeprefix("v"))
    raise UnorderedVersion(f"no version order for {scheme}")


@lru_cache(maxsize=65536)
def key(scheme: str, version: str) -> Comparable:
    """A comparable key for `version` in `scheme` (an ecosystem base name, or `SEMVER`).

    Raises UnorderedVersion when the version does not parse; callers skip ranges they cannot order.
    """
    try:
        return _parse(scheme, version)
    except UnorderedVersion:
        raise
    except (ValueError, TypeError, AttributeError, packaging.version.InvalidVersion, uv.InvalidVersion) as exc:
        raise UnorderedVersion(f"{scheme} version {version!r}: {exc}") from None


def compare(scheme: str, a: str, b: str) -> int:
    """-1, 0 or 1 as `a` sorts before, equal to or after `b`."""
    ka, kb = key(scheme, a), key(scheme, b)
    return -1 if ka < kb else 1 if kb < ka else 0
