"""Regenerate the README's configuration table from the settings classes.

    .venv/bin/python scripts/settings_table.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from appview.settings import AppViewSettings  # noqa: E402
from atcr.config import NetworkSettings  # noqa: E402
from atcr.settings import describe  # noqa: E402
from hold.settings import HoldSettings  # noqa: E402
from jetstream.settings import JetstreamSettings  # noqa: E402
from scanner.settings import ScannerSettings  # noqa: E402

BEGIN, END = "<!-- settings-table begin -->", "<!-- settings-table end -->"


def fmt_default(info) -> str:  # type: ignore[no-untyped-def]
    value = info.default
    if info.secret or value in ("", None):
        return ""
    if isinstance(value, tuple):
        value = ",".join(value)
    text = str(value)
    home = str(Path.home())
    if text.startswith(home):
        text = "~" + text[len(home):]
    return f"`{text}`"


def main() -> None:
    shared = {i.env for i in describe(NetworkSettings)}
    rows = ["| variable | service | default | meaning |", "|---|---|---|---|"]
    for info in describe(NetworkSettings):
        rows.append(f"| `{info.env}` | all | {fmt_default(info)} | {info.help} |")
    for name, cls in (("appview", AppViewSettings), ("hold", HoldSettings), ("jetstream", JetstreamSettings),
                      ("scanner", ScannerSettings)):
        for info in describe(cls):
            if info.env not in shared:
                rows.append(f"| `{info.env}` | {name} | {fmt_default(info)} | {info.help} |")
    readme = ROOT / "README.md"
    text = readme.read_text()
    table = BEGIN + "\n" + "\n".join(rows) + "\n" + END
    text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: table, text, flags=re.S)
    readme.write_text(text)


if __name__ == "__main__":
    main()
