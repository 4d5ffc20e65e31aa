"""`/etc/os-release` and the OSV ecosystem name of the distribution it describes.

The release is part of the ecosystem ("Debian:12", "Alpine:v3.19", "Ubuntu:22.04:LTS"), because
a record for one release says nothing about another: the same source version can be fixed in
Debian 12 and still vulnerable in Debian 11.
"""

from __future__ import annotations

import shlex


def parse(data: bytes) -> dict[str, str]:
    """The KEY=value pairs of an os-release file (shell quoting removed)."""
    out: dict[str, str] = {}
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            parts = shlex.split(value)
        except ValueError:
            continue
        out[key.strip()] = parts[0] if parts else ""
    return out


def _major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def distro_ecosystem(os_release: dict[str, str] | None) -> str | None:
    """The OSV ecosystem for the image's OS packages, or None when the distribution is unknown."""
    if not os_release:
        return None
    ident = os_release.get("ID", "").lower()
    version = os_release.get("VERSION_ID", "")
    if ident == "debian":
        return f"Debian:{version.split('.')[0]}" if version else "Debian"
    if ident == "ubuntu":
        lts = ":LTS" if "LTS" in os_release.get("VERSION", "") else ""
        return f"Ubuntu:{version}{lts}"
    if ident == "alpine":
        return f"Alpine:v{_major_minor(version)}"
    major = version.split(".")[0]
    if ident == "rhel":
        return f"Red Hat:enterprise_linux:{major}"
    if ident == "rocky":
        return f"Rocky Linux:{major}"
    if ident == "almalinux":
        return f"AlmaLinux:{major}"
    return None


def purl_distro(os_release: dict[str, str] | None) -> str | None:
    """The `distro` qualifier of OS package URLs, e.g. `debian-12`."""
    if not os_release or not os_release.get("ID"):
        return None
    version = os_release.get("VERSION_ID")
    return f"{os_release['ID']}-{version}" if version else os_release["ID"]
