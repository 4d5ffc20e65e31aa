"""Packages of the distribution's package managers: dpkg, apk and RPM."""

from __future__ import annotations

from debian.deb822 import Deb822
from packageurl import PackageURL

from scanner.analysis import osrelease, rpmdb
from scanner.analysis.model import Package


def dpkg(data: bytes, location: str, os_release: dict[str, str] | None) -> list[Package]:
    """Installed packages of a dpkg status file (or one `status.d/` file of a distroless image).

    `Source:` names the source package the Debian and Ubuntu security trackers (and so their OSV
    records) are keyed by; its own version, when given in parentheses, is what they compare.
    The source travels in the package URL's `upstream` qualifier, as Syft writes it.
    """
    ecosystem = osrelease.distro_ecosystem(os_release) or "Debian"
    namespace = (os_release or {}).get("ID", "debian") or "debian"
    distro = osrelease.purl_distro(os_release)
    found: list[Package] = []
    for para in Deb822.iter_paragraphs(data.decode("utf-8", "replace").splitlines(keepends=True)):
        name, version = para.get("Package"), para.get("Version")
        if not name or not version:
            continue
        status = para.get("Status")
        if status is not None and not status.endswith(" installed"):
            continue  # removed, half-installed, config-files only
        source, source_version = _split_source(para.get("Source"))
        qualifiers = {"arch": para.get("Architecture", "")}
        if source and (source != name or source_version):
            qualifiers["upstream"] = f"{source}@{source_version}" if source_version else source
        if distro:
            qualifiers["distro"] = distro
        purl = PackageURL(
            type="deb", namespace=namespace, name=name, version=version, qualifiers=_present(qualifiers)
        ).to_string()
        found.append(
            Package(name=name, version=version, ecosystem=ecosystem, purl=purl, source=source, location=location)
        )
    return found


def _present(qualifiers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in qualifiers.items() if v}


def _split_source(field: str | None) -> tuple[str | None, str | None]:
    if not field:
        return None, None
    name, _, rest = field.strip().partition(" ")
    rest = rest.strip()
    if rest.startswith("(") and rest.endswith(")"):
        return name, rest[1:-1].strip()
    return name, None


def apk(data: bytes, location: str, os_release: dict[str, str] | None) -> list[Package]:
    """Installed packages of Alpine's `lib/apk/db/installed`; `o:` is the origin (source) package."""
    ecosystem = osrelease.distro_ecosystem(os_release) or "Alpine"
    distro = osrelease.purl_distro(os_release)
    found: list[Package] = []
    for block in data.decode("utf-8", "replace").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if len(line) > 2 and line[1] == ":" and line[0] not in fields:
                fields[line[0]] = line[2:]
        name, version = fields.get("P"), fields.get("V")
        if not name or not version:
            continue
        qualifiers = {"arch": fields.get("A", ""), "distro": distro or ""}
        purl = PackageURL(
            type="apk", namespace="alpine", name=name, version=version, qualifiers=_present(qualifiers)
        ).to_string()
        found.append(
            Package(
                name=name, version=version, ecosystem=ecosystem, purl=purl, source=fields.get("o"), location=location
            )
        )
    return found


def rpm(headers: list[rpmdb.Header], location: str, os_release: dict[str, str] | None) -> list[Package]:
    """Installed packages from RPM headers; the version carries the epoch as `epoch:version-release`."""
    ecosystem = osrelease.distro_ecosystem(os_release) or "Red Hat"
    namespace = (os_release or {}).get("ID", "redhat") or "redhat"
    distro = osrelease.purl_distro(os_release)
    found: list[Package] = []
    for header in headers:
        if not header.name or not header.version or header.name == "gpg-pubkey":
            continue
        evr = f"{header.version}-{header.release}" if header.release else header.version
        version = f"{header.epoch}:{evr}" if header.epoch else evr
        qualifiers = {"arch": header.arch or "", "epoch": str(header.epoch or ""), "distro": distro or ""}
        purl = PackageURL(
            type="rpm", namespace=namespace, name=header.name, version=evr, qualifiers=_present(qualifiers)
        ).to_string()
        found.append(
            Package(
                name=header.name,
                version=version,
                ecosystem=ecosystem,
                purl=purl,
                source=header.source_name,
                location=location,
            )
        )
    return found
