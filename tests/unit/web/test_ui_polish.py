"""What a new user noticed on the pages (issue 21): platforms of single images, index children,
artifact vs missing-manifest badges, the right pull command, hold names, empty texts, one
search box, the device pages, content types and the favicon."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from appview.auth.device import Device
from appview.web import humanize
from appview.web.configinfo import ConfigPlatforms, platform_of
from appview.web.holdhealth import HoldStatus
from appview.web.pages import TEMPLATES
from appview.web.ui import UiService, Viewer, hold_host, pull_command
from atcr.errors import UpstreamUnavailable
from atcr.readmodel.models import ManifestEntry, TagEntry
from tests.unit.web.fakes import HOLD, OWNER, FakeLoader, manifest
from tests.unit.web.test_pages_render import Holds, render, service

pytestmark = pytest.mark.unit

INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = json.dumps({"architecture": "arm64", "os": "linux", "variant": "v8"}).encode()
CONFIG_DIGEST = "sha256:" + hashlib.sha256(CONFIG).hexdigest()


class FakeValkey:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.ttl: dict[str, int] = {}

    async def get(self, key: str) -> bytes | None:
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ex: int | None = None) -> None:
        self.data[key] = value
        self.ttl[key] = ex or 0


class Blobs:
    """The hold's getBlob redirect and the bytes behind it."""

    def __init__(self, body: bytes = CONFIG) -> None:
        self.body = body
        self.asked: list[tuple[str, str]] = []
        self.down = False

    async def blob_url(self, hold_did: str, digest: str, *, user_did: str | None = None) -> str | None:
        self.asked.append((hold_did, digest))
        if self.down:
            raise UpstreamUnavailable("hold down")
        return f"https://hold.test/blobs/{digest}"


class Http:
    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        import httpx

        await asyncio.sleep(0.01)  # concurrent readers overlap here
        return httpx.Response(200, content=self.blobs.body)


def configs(blobs: Blobs, valkey: FakeValkey | None = None) -> ConfigPlatforms:
    return ConfigPlatforms(valkey or FakeValkey(), Http(blobs), blobs)  # type: ignore[arg-type]


def image(repo: str, n: int, *, config_digest: str = CONFIG_DIGEST, config_type: str | None = None,
          artifact_type: str | None = None) -> ManifestEntry:
    m = manifest(repo, n)
    record = dict(m.record)
    record["config"] = {**record["config"], "digest": config_digest}
    if config_type:
        record["config"]["mediaType"] = config_type
    if artifact_type:
        record["artifactType"] = artifact_type
    return replace(m, record=record, artifact_type=artifact_type or record["config"]["mediaType"])


def index_of(repo: str, n: int, children: list[tuple[ManifestEntry, str]]) -> ManifestEntry:
    m = manifest(repo, n)
    record = {k: v for k, v in m.record.items() if k not in ("config", "layers")}
    record["mediaType"] = INDEX
    record["manifests"] = [
        {"digest": c.digest, "mediaType": c.media_type, "size": c.size,
         "platform": dict(zip(("os", "architecture"), plat.split("/"), strict=True))}
        for c, plat in children
    ]
    return replace(m, media_type=INDEX, record=record)


def test_platform_of_a_config() -> None:
    assert platform_of(json.loads(CONFIG)) == "linux/arm64/v8"
    assert platform_of({"os": "linux", "architecture": "amd64"}) == "linux/amd64"
    assert platform_of({"os": "unknown", "architecture": "unknown"}) is None
    assert platform_of({"architecture": "amd64"}) is None and platform_of([1]) is None


def test_config_platform_is_fetched_once_checked_and_cached() -> None:
    blobs, valkey = Blobs(), FakeValkey()
    reader = configs(blobs, valkey)

    async def go() -> list[str | None]:
        return list(await asyncio.gather(*(reader.platform(HOLD, CONFIG_DIGEST) for _ in range(5))))

    assert asyncio.run(go()) == ["linux/arm64/v8"] * 5
    assert blobs.asked == [(HOLD, CONFIG_DIGEST)]  # concurrent views share one fetch
    assert asyncio.run(configs(Blobs(), valkey).platform(HOLD, CONFIG_DIGEST)) == "linux/arm64/v8"  # from Valkey
    assert valkey.ttl[ConfigPlatforms.key(CONFIG_DIGEST)] > 86400


def test_config_platform_refuses_bytes_that_are_not_the_blob() -> None:
    liar = Blobs(json.dumps({"architecture": "s390x", "os": "linux"}).encode())
    valkey = FakeValkey()
    assert asyncio.run(configs(liar, valkey).platform(HOLD, CONFIG_DIGEST)) is None
    assert valkey.ttl[ConfigPlatforms.key(CONFIG_DIGEST)] == 300  # "unknown" is kept briefly only
    down = Blobs()
    down.down = True
    assert asyncio.run(configs(down).platform(HOLD, CONFIG_DIGEST)) is None


def test_single_platform_tags_show_the_config_platform() -> None:
    loader = FakeLoader()
    loader.repos = {"app": [image("app", 1)]}
    svc = UiService(loader, Holds(), registry_host="registry.test", default_hold_did=HOLD,  # type: ignore[arg-type]
                    configs=configs(Blobs()))
    page = asyncio.run(svc.repo("owner.test", "app", None))
    assert page.tags[0].platforms == ["linux/arm64/v8"]
    assert page.manifests[0].platforms == ["linux/arm64/v8"]
    html = render("repo.html", page=page, message=None)
    assert '<td data-label="Platforms" class="platforms">linux/arm64/v8</td>' in html
    detail = asyncio.run(svc.manifest("owner.test", "app", page.tags[0].digest, None))
    assert detail.platform == "linux/arm64/v8"
    assert '<dd id="manifest-platform">linux/arm64/v8</dd>' in render("manifest.html", page=detail)


def test_an_index_lists_its_children_with_their_tags() -> None:
    amd, arm = image("multi", 1), image("multi", 2)
    idx = index_of("multi", 3, [(amd, "linux/amd64"), (arm, "linux/arm64")])
    loader = FakeLoader()
    loader.repos = {"multi": [idx, amd, arm]}

    async def tags(did: str, repo: str) -> dict[str, TagEntry]:
        return {"1": TagEntry(did, repo, "1", idx.digest, "rk1", None, idx.created_at),
                "arm": TagEntry(did, repo, "arm", arm.digest, "rk2", None, arm.created_at)}

    loader.tag_entries = tags  # type: ignore[method-assign]
    page = asyncio.run(service(loader).repo("owner.test", "multi", None))
    rows = [(m.digest, m.parent, m.platform, m.tags) for m in page.manifests]
    assert rows == [
        (idx.digest, None, "", ["1"]),
        (amd.digest, idx.digest, "linux/amd64", []),
        (arm.digest, idx.digest, "linux/arm64", ["arm"]),
    ]
    assert {t.tag: t.platforms for t in page.tags} == {"1": ["linux/amd64", "linux/arm64"], "arm": ["linux/arm64"]}
    html = render("repo.html", page=page, message=None)
    assert 'Manifests <span class="muted">(3)</span>' in html
    assert html.count(f'data-parent="{idx.digest}"') == 2
    detail = asyncio.run(service(loader).manifest("owner.test", "multi", idx.digest, None))
    assert [(c.platform, c.tags) for c in detail.children] == [("linux/amd64", []), ("linux/arm64", ["arm"])]
    assert '<span class="badge">arm</span>' in render("manifest.html", page=detail)


def test_artifact_and_missing_manifest_have_their_own_badges_and_pull_commands() -> None:
    sbom = image("files", 1, config_type="application/vnd.oci.empty.v1+json", artifact_type="application/spdx+json")
    loader = FakeLoader()
    loader.repos = {"files": [sbom]}

    async def tags(did: str, repo: str) -> dict[str, TagEntry]:
        return {"latest": TagEntry(did, repo, "latest", sbom.digest, "rk1", None, "2026-11-20T00:00:00Z"),
                "gone": TagEntry(did, repo, "gone", "sha256:" + "e" * 64, "rk2", None, "2026-11-19T00:00:00Z")}

    loader.tag_entries = tags  # type: ignore[method-assign]
    page = asyncio.run(service(loader).repo("owner.test", "files", None))
    assert {t.tag: t.kind for t in page.tags} == {"latest": "artifact", "gone": "missing"}
    assert page.pull_command == "oras pull registry.test/owner.test/files:latest"
    html = render("repo.html", page=page, message=None)
    assert '<span class="badge artifact" title="application/spdx+json">artifact</span>' in html
    assert ">manifest missing</span>" in html and ">unknown<" not in html
    assert '<code id="pull-command">oras pull registry.test/<wbr>owner.test/<wbr>files:<wbr>latest</code>' in html
    detail = asyncio.run(service(loader).manifest("owner.test", "files", sbom.digest, None))
    assert detail.kind == "artifact" and detail.artifact_type == "application/spdx+json"
    assert detail.pull_command == f"oras pull registry.test/owner.test/files@{sbom.digest}"


def test_breakable_escapes_and_adds_break_points() -> None:
    from appview.web.pages import breakable

    assert str(breakable("docker pull h:1/a<b>@x")) == "docker pull h:<wbr>1/<wbr>a&lt;b&gt;@<wbr>x"


def test_pull_commands() -> None:
    assert pull_command("container-image", "h:5000", "a/b", ":1") == "docker pull h:5000/a/b:1"
    assert pull_command("index", "h:5000", "a/b", "@sha256:x") == "docker pull h:5000/a/b@sha256:x"
    assert pull_command("artifact", "h:5000", "a/b", ":1", plain_http=True) == "oras pull --plain-http h:5000/a/b:1"
    assert pull_command("helm-chart", "h", "a/c", ":0.1.0") == "helm pull oci://h/a/c --version 0.1.0"


def test_holds_are_named_by_host() -> None:
    assert HoldStatus("did:web:localhost%3A8180", True, None, 0.0).host == "localhost:8180"
    assert HoldStatus("did:plc:abc", True, "https://hold.example.com", 0.0).host == "hold.example.com"
    assert hold_host("did:web:hold.example.com", None) == "hold.example.com"
    page = asyncio.run(service(FakeLoader(repos={"app": [manifest("app", 1)]})).repo("owner.test", "app", None))
    html = render("repo.html", page=page, message=None)
    assert f'<a href="https://hold.test" class="hold-link" title="{HOLD}" rel="nofollow">hold.test</a>' in html


def test_popular_empty_text_names_the_list() -> None:
    loader = FakeLoader(repos={"app": [manifest("app", 1)]}, pulls={"app": 4})
    by_stars = asyncio.run(service(loader).home("stars"))
    by_pulls = asyncio.run(service(loader).home("pulls"))
    assert by_stars.popular == [] and [c.repository for c in by_pulls.popular] == ["app"]
    stars_html = render("home.html", page=by_stars)
    assert "No repository has been starred yet." in stars_html and "pulled" not in stars_html.split("Popular")[1]
    empty = asyncio.run(service(FakeLoader()).home("pulls"))
    assert "No repository has been pulled yet." in render("home.html", page=empty)


def test_search_page_has_one_search_box() -> None:
    page = asyncio.run(service(FakeLoader(repos={"app": [manifest("app", 1)]})).search("app", 1))
    html = render("search.html", page=page, q="app")
    assert html.count('type="search"') == 1 and html.count('role="search"') == 1
    assert 'value="app"' in html


def device_env() -> Any:
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    from appview.web.branding import DEFAULT_BRANDING

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    env.filters["isotime"] = humanize.iso
    env.filters.update(humanize.FILTERS)
    env.globals["brand"] = DEFAULT_BRANDING  # as AuthWeb's environment has it
    return env


def test_device_page_buttons_times_and_errors() -> None:
    import time

    class Pending:
        user_code, client_name, ip, user_agent = "BCDF-GHJK", "laptop", "127.0.0.1", "docker-credential-atcr/1"
        created = int(time.time()) - 180

    html = device_env().get_template("device.html").render(user=None, csrf_token="", step="confirm", request=Pending)
    assert '<button type="submit" id="approve">Approve</button>' in html
    assert '<button type="submit" id="deny" class="danger">Deny</button>' in html
    asked = html.split('id="device-asked"')[1].split("</time>")[0].split(">", 1)[1]
    assert re.fullmatch(r"\d+ minutes ago, \d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d UTC", asked), asked
    html = device_env().get_template("device.html").render(user=None, csrf_token="", step="enter", code="",
                                                           error="this code was already answered")
    assert '<p class="error" role="alert" id="device-error">This code was already answered.</p>' in html


def test_revoking_asks_first() -> None:
    device = Device("0123456789abcdef", OWNER, "ci-runner", "127.0.0.1", "ua", 1_800_000_000, 0)
    settings = render("settings.html", page=asyncio.run(service(FakeLoader()).settings(Viewer(OWNER, "o.test"))),
                      devices=[device], message=None)
    assert 'href="/settings/devices/revoke?device_id=0123456789abcdef"' in settings
    assert 'action="/settings/devices/revoke"' not in settings  # no one-click revoke
    confirm = render("confirm_revoke.html", device=device, back="/settings")
    assert 'name="confirm" value="yes"' in confirm and "Revoke ci-runner" in confirm and 'href="/settings#devices"' in confirm


def test_clock_filter() -> None:
    assert humanize.clock(1_800_000_000) == "15 Jan 2027, 08:00 UTC"
    assert humanize.clock("2026-12-03T21:05:09Z") == "3 Dec 2026, 21:05 UTC"
    assert humanize.clock(None) == "—"


def test_favicon_file_is_an_icon() -> None:
    data = (Path(TEMPLATES) / "static" / "favicon.ico").read_bytes()
    assert data[:4] == b"\x00\x00\x01\x00" and data[4] >= 1


def test_devices_page_revoke_asks_first() -> None:
    device = Device("0123456789abcdef", OWNER, "ci-runner", "127.0.0.1", "ua", 1_800_000_000, 0)
    html = device_env().get_template("devices.html").render(user=None, csrf_token="t", devices=[device], message=None)
    # The form that revokes sits inside a closed <details>: the first click only opens it.
    details = html.split('<details class="confirm">')[1].split("</details>")[0]
    assert '<summary class="button danger small">Revoke' in details
    assert 'action="/settings/devices/0123456789abcdef/revoke"' in details and ">Revoke ci-runner</button>" in details
    assert html.count('action="/settings/devices/') == 1
