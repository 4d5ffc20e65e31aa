"""Branding from settings: the defaults render as before, each setting shows, bad values are
refused at start, an override directory replaces templates and static files by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from appview.settings import AppViewSettings
from appview.web.branding import Branding, accent_foreground
from appview.web.pages import PAGE_HEADERS, TEMPLATES, WebUi
from atcr.errors import ConfigError
from atcr.settings import load

pytestmark = pytest.mark.unit

HOLD = "did:web:hold.test"


class _Csrf:
    def token(self, binding: str) -> str:
        return "tok"


class _Auth:
    csrf = _Csrf()
    branded: Branding | None = None

    def brand(self, branding: Branding) -> None:
        self.branded = branding


def _web(**env: str) -> WebUi:
    web = WebUi(None, None, None, _Auth(), None, templates_dir=TEMPLATES)  # type: ignore[arg-type]
    web.brand(Branding.from_settings(load(AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": HOLD, **env})))
    return web


def _page(web: WebUi, template: str = "base.html", **ctx: Any) -> str:
    return web.env.get_template(template).render(user=None, csrf_token="", path="/", **ctx)


def test_defaults_look_as_before() -> None:
    html = _page(_web())
    assert "<title>ATCR</title>" in html and 'aria-label="ATCR home"' in html and "<span>ATCR</span>" in html
    assert "<svg viewBox=\"0 0 32 32\"" in html and "brand-logo" not in html
    assert "footer-links" not in html and "--accent:#" not in html
    assert _web().page_headers == PAGE_HEADERS


def test_every_setting_shows() -> None:
    web = _web(ATCR_UI_NAME="Harbor", ATCR_UI_LOGO_URL="https://cdn.example/logo.png",
               ATCR_UI_ACCENT_COLOR="#ffcc00", ATCR_UI_FOOTER_LINKS="Terms=https://example.com/terms,Status=/status")
    html = _page(web)
    assert "<title>Harbor</title>" in html and 'aria-label="Harbor home"' in html
    assert '<img src="https://cdn.example/logo.png"' in html
    assert "--accent:#ffcc00;--accent-fg:#08111c" in html  # dark text on a light accent
    assert '<a href="https://example.com/terms" rel="noopener">Terms</a>' in html and 'href="/status"' in html
    # Only the logo's origin is added to img-src; the rest of the policy stays.
    csp = web.page_headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://cdn.example;" in csp and "script-src 'self'" in csp
    assert "Harbor" in _page(web, "error.html", error=type("E", (), {"title": "Oops", "message": "m", "hint": None,
                                                                   "status": 404})(), next="/")
    assert accent_foreground("#0b5cad") == "#ffffff"


@pytest.mark.parametrize("env", [
    {"ATCR_UI_ACCENT_COLOR": "red;}body{display:none"},
    {"ATCR_UI_ACCENT_COLOR": "#fff"},
    {"ATCR_UI_LOGO_URL": "javascript:alert(1)"},
    {"ATCR_UI_LOGO_URL": "//evil.example/x.png"},
    {"ATCR_UI_FOOTER_LINKS": "NoUrl"},
    {"ATCR_UI_FOOTER_LINKS": "X=data:text/html,hi"},
    {"ATCR_UI_TEMPLATE_DIR": "/nonexistent/dir"},
])
def test_bad_values_are_refused_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=next(iter(env))):
        load(AppViewSettings, {"ATCR_DEFAULT_HOLD_DID": HOLD, **env})


def test_override_directory_replaces_templates_and_static_files(tmp_path: Path) -> None:
    (tmp_path / "static").mkdir()
    (tmp_path / "static" / "logo.svg").write_bytes(b"<svg xmlns='http://www.w3.org/2000/svg'/>")
    (tmp_path / "static" / "app.css").write_text("body{color:hotpink}")
    (tmp_path / "error.html").write_text("{% extends 'base.html' %}{% block main %}custom error{% endblock %}")
    web = _web(ATCR_UI_TEMPLATE_DIR=str(tmp_path), ATCR_UI_LOGO_URL="/static/logo.svg")
    html = _page(web, "error.html")
    assert "custom error" in html and "body{color:hotpink}" in html and '<img src="/static/logo.svg"' in html
    assert web.static_bytes["logo.svg"].startswith(b"<svg") and web.static_url("logo.svg").startswith("/static/logo.svg?v=")
    assert web.static_bytes["app.css"] == b"body{color:hotpink}"
    assert "home.html" in web.env.list_templates()  # the others still come from the built-in directory
    assert web.page_headers == PAGE_HEADERS  # a logo on this AppView needs no CSP change
