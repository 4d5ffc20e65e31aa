"""Branding of a self-hosted AppView (ATCR's `BrandingOverrides`): the registry's name, a logo,
an accent colour, footer links and a directory of templates and static files that override the
built-in ones by name. Every setting is empty by default and the built-in look stays as it is.

The accent colour is checked to be ``#rrggbb`` (it goes into an inline style); the logo is a
path on this AppView (``/static/logo.svg`` from the override directory, say) or an https URL,
whose origin is then added to the pages' ``img-src`` (nothing else is loosened).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import ChoiceLoader, Environment, FileSystemLoader

from atcr.errors import ConfigError

HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
DEFAULT_NAME = "ATCR"


def _check_link(env: str, url: str) -> str:
    parts = urlsplit(url)
    if url.startswith("/") and not url.startswith("//"):
        return url
    if parts.scheme in ("https", "http") and parts.netloc:
        return url
    raise ConfigError(f"{env}: {url!r} is neither an http(s) URL nor a path on this AppView")


def parse_footer_links(env: str, items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``Label=URL`` pairs (the settings' comma-separated list)."""
    out = []
    for item in items:
        label, sep, url = item.partition("=")
        if not sep or not label.strip() or not url.strip():
            raise ConfigError(f"{env}: expected Label=URL, got {item!r}")
        out.append((label.strip(), _check_link(env, url.strip())))
    return tuple(out)


def accent_foreground(accent: str) -> str:
    """Black or white text on the accent, whichever reads better (WCAG relative luminance)."""
    def channel(c: str) -> float:
        v = int(c, 16) / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(accent[i:i + 2]) for i in (1, 3, 5))
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "#08111c" if luminance > 0.179 else "#ffffff"


@dataclass(frozen=True)
class Branding:
    name: str = DEFAULT_NAME
    logo_url: str = ""
    accent: str = ""
    footer_links: tuple[tuple[str, str], ...] = ()
    template_dir: Path | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> Branding:
        accent = settings.ui_accent_color
        if accent and not HEX.match(accent):
            raise ConfigError(f"ATCR_UI_ACCENT_COLOR={accent!r}: expected #rrggbb")
        logo = _check_link("ATCR_UI_LOGO_URL", settings.ui_logo_url) if settings.ui_logo_url else ""
        template_dir = settings.ui_template_dir
        if template_dir is not None and not Path(template_dir).is_dir():
            raise ConfigError(f"ATCR_UI_TEMPLATE_DIR={template_dir}: not a directory")
        return cls(
            name=settings.ui_name or DEFAULT_NAME,
            logo_url=logo,
            accent=accent,
            footer_links=parse_footer_links("ATCR_UI_FOOTER_LINKS", settings.ui_footer_links),
            template_dir=Path(template_dir) if template_dir is not None else None,
        )

    @property
    def accent_fg(self) -> str:
        return accent_foreground(self.accent) if self.accent else ""

    def install(self, env: Environment) -> None:
        """Templates see `brand`; the override directory is searched before the built-in one."""
        env.globals["brand"] = self
        if self.template_dir is not None and env.loader is not None:
            env.loader = ChoiceLoader([FileSystemLoader(str(self.template_dir)), env.loader])

    def headers(self, base: dict[str, str]) -> dict[str, str]:
        """`base` with the logo's origin allowed as an image source (when it is another site)."""
        parts = urlsplit(self.logo_url)
        if not parts.netloc:
            return base
        origin = f"{parts.scheme}://{parts.netloc}"
        csp = re.sub(r"img-src ([^;]*)", lambda m: f"img-src {m.group(1)} {origin}", base["Content-Security-Policy"])
        return {**base, "Content-Security-Policy": csp}

    def static_overrides(self) -> dict[str, bytes]:
        """Static files of the override directory (``<dir>/static/<name>``), by name."""
        if self.template_dir is None or not (self.template_dir / "static").is_dir():
            return {}
        return {f.name: f.read_bytes() for f in sorted((self.template_dir / "static").iterdir()) if f.is_file()}


DEFAULT_BRANDING = Branding()

__all__ = ["DEFAULT_BRANDING", "Branding", "accent_foreground", "parse_footer_links"]
