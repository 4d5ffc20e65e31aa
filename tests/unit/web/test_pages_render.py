"""Page models from a fake read model, rendered with the real templates."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appview.web.holdhealth import HoldStatus
from appview.web.pages import TEMPLATES, WebUi
from appview.web.ui import UiService, Viewer
from tests.unit.web.fakes import HOLD, OWNER, FakeLoader, manifest

pytestmark = pytest.mark.unit

XSS = "<script>alert(1)</script>"


class Holds:
    def __init__(self, up: bool = True) -> None:
        self.up = up

    async def status(self, did: str) -> HoldStatus:
        return HoldStatus(did, self.up, "https://hold.test", 0.0)


@dataclass
class Csrf:
    def token(self, binding: str) -> str:
        return "tok"


class Auth:
    csrf = Csrf()


def service(loader: FakeLoader, up: bool = True) -> UiService:
    return UiService(loader, Holds(up), registry_host="registry.test", default_hold_did=HOLD)  # type: ignore[arg-type]


def render(template: str, **ctx: Any) -> str:
    web = WebUi(None, None, None, Auth(), None, templates_dir=TEMPLATES)  # type: ignore[arg-type]
    return web.env.get_template(template).render(user=None, csrf_token="", path="/", **ctx)


def scene() -> FakeLoader:
    loader = FakeLoader()
    loader.repos = {
        "app": [manifest("app", 1, {"org.opencontainers.image.title": XSS, "x\"><b>": "y"}), manifest("app", 2)],
        "team/tool": [manifest("team/tool", 3)],
    }
    loader.pages = {"app": {"repository": "app", "description": f"# App\n\n{XSS} **bold**"}}
    loader.stars = {"app": 3, "team/tool": 1}
    loader.pulls = {"app": 1, "team/tool": 7}
    return loader


def test_repo_page_model_and_html() -> None:
    loader = scene()
    page = asyncio.run(service(loader).repo("owner.test", "app", Viewer(OWNER, "owner.test")))
    assert page.is_owner and page.stars == 3 and page.pull_ref == "registry.test/owner.test/app:v1"
    assert [t.tag for t in page.tags] == ["v1", "v0"]
    assert page.tags[0].size == 100 + 2_000_000 + loader.repos["app"][1].size  # config + layers + manifest
    html = render("repo.html", page=page, message=None)
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "<strong>bold</strong>" in html
    assert 'href="/r/owner.test/app/-/edit"' in html and "Delete tag v1" in html
    assert 'id="hold-warning"' not in html


def test_unreachable_hold_is_a_warning() -> None:
    page = asyncio.run(service(scene(), up=False).repo("owner.test", "app", None))
    html = render("repo.html", page=page, message=None)
    assert 'id="hold-warning"' in html and "unreachable" in html and "Edit description" not in html


def test_manifest_page_escapes_annotations() -> None:
    loader = scene()
    digest = loader.repos["app"][0].digest
    page = asyncio.run(service(loader).manifest("owner.test", "app", digest, None))
    assert [x.size for x in page.layers] == [2_000_000] and page.config is not None
    html = render("manifest.html", page=page)
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "x&#34;&gt;&lt;b&gt;" in html


def test_search_ranks_names_before_descriptions_and_pages() -> None:
    loader = FakeLoader()
    loader.repos = {f"tool-{i:02d}": [manifest(f"tool-{i:02d}", i + 1)] for i in range(25)}
    loader.repos["other"] = [manifest("other", 99)]
    loader.pages = {"other": {"description": "a tool for everything"}}
    loader.stars = {"tool-07": 50}
    first = asyncio.run(service(loader).search("tool", 1))
    assert first.total == 26 and first.has_next and len(first.repositories) == 20
    assert first.repositories[0].repository == "tool-07"  # popularity breaks the tie between name matches
    assert "other" not in [c.repository for c in first.repositories]
    second = asyncio.run(service(loader).search("tool", 2))
    assert [c.repository for c in second.repositories][-1] == "other" and not second.has_next
    exact = asyncio.run(service(loader).search("tool-03", 1))
    assert exact.repositories[0].repository == "tool-03"
    html = render("search.html", page=first, q="tool")
    assert 'rel="next"' in html and "page=2" in html


def test_home_user_settings_and_error_pages_render() -> None:
    svc = service(scene())
    home = asyncio.run(svc.home("pulls"))
    assert [c.repository for c in home.popular] == ["team/tool", "app"]
    assert 'aria-current="page">By pulls' in render("home.html", page=home)
    user = asyncio.run(svc.user("owner.test", None))
    assert {c.repository: c.tag_count for c in user.repositories} == {"app": 2, "team/tool": 1}
    assert "/r/owner.test/team/tool" in render("user.html", page=user)
    settings = asyncio.run(svc.settings(Viewer(OWNER, "owner.test")))
    assert settings.holds[0].role == "member" and settings.holds[0].is_default
    assert "tier deckhand" in render("settings.html", page=settings, devices=[], message=None)
    from appview.web.errors import PageNotFound

    html = render("error.html", error=PageNotFound("No account named <x>."), next="/r/x")
    assert "No account named &lt;x&gt;." in html and "Search repositories" in html


def test_unknown_owner_is_a_404() -> None:
    from appview.web.errors import PageNotFound

    with pytest.raises(PageNotFound):
        asyncio.run(service(scene()).repo("nobody.test", "app", None))
    with pytest.raises(PageNotFound):
        asyncio.run(service(scene()).repo("owner.test", "missing", None))


def test_templates_dir_exists() -> None:
    assert (Path(TEMPLATES) / "static" / "app.js").is_file()


class SlowHolds(Holds):
    """A hold whose status takes 0.3 s (and says it is down)."""

    async def status(self, did: str) -> HoldStatus:
        await asyncio.sleep(0.3)
        return HoldStatus(did, False, "https://hold.test", 0.3)


@pytest.mark.parametrize(("wait", "shown"), [(0.02, False), (10.0, True)])
def test_a_page_waits_for_the_hold_as_long_as_it_is_told(wait: float, shown: bool) -> None:
    # ATCR_UI_HOLD_WAIT: below the hold's answer time the page comes without the warning (a later
    # view has it); above it, the warning is on this very page.
    svc = UiService(scene(), SlowHolds(), registry_host="registry.test", default_hold_did=HOLD,  # type: ignore[arg-type]
                    hold_wait=wait)
    page = asyncio.run(svc.repo("owner.test", "app", None))
    html = render("repo.html", page=page, message=None)
    assert ('id="hold-warning"' in html) is shown
