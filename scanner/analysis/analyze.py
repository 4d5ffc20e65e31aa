"""Analyse an image: walk its layers, inventory its packages, match them against the database."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from scanner.analysis import inventory, matching
from scanner.analysis.layers import LayerIndex
from scanner.analysis.model import Analysis
from scanner.analysis.vulndb import VulnDB


def analyze_layers(layers: Sequence[Path], db: VulnDB) -> Analysis:
    """Analyse the layer files of one image, in manifest order (lowest first).

    Raises LayerError when a layer is not a readable tar, tar+gzip or tar+zstd stream.
    """
    with tempfile.TemporaryDirectory(prefix="atcr-analysis-") as workdir:
        index = LayerIndex(Path(workdir))
        index.add_layers(layers)
        os_release = inventory.os_release_of(index)
        packages = inventory.packages_of(index, os_release)
    findings = matching.match_all(packages, db)
    return Analysis(os_release=os_release, packages=tuple(packages), findings=tuple(findings))
