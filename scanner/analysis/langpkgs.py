"""Language packages: Python distributions and npm modules."""

from __future__ import annotations

import json
import re
from email.parser import BytesHeaderParser

from packageurl import PackageURL

from scanner.analysis.model import Package


def python_dist(data: bytes, location: str) -> Package | None:
    """A Python distribution from its `*.dist-info/METADATA` or `*.egg-info/PKG-INFO` headers.

    `location` is the metadata directory; for a single-file `*.egg-info` it is that file.
    """
    headers = BytesHeaderParser().parsebytes(data.split(b"\n\n", 1)[0])
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return None
    name, version = str(name).strip(), str(version).strip()
    purl = PackageURL(type="pypi", name=normalize_pypi(name), version=version).to_string()
    return Package(name=name, version=version, ecosystem="PyPI", purl=purl, source=None, location=location)


def normalize_pypi(name: str) -> str:
    """PEP 503 normalised name, which OSV's PyPI records and package URLs use."""
    return re.sub(r"[-_.]+", "-", name).lower()


def npm_module(data: bytes, location: str) -> Package | None:
    """An npm module from its `node_modules/.../package.json`."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict):
        return None
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return None
    namespace, _, short = name.rpartition("/")
    purl = PackageURL(type="npm", namespace=namespace or None, name=short, version=version).to_string()
    return Package(name=name, version=version, ecosystem="npm", purl=purl, source=None, location=location)
