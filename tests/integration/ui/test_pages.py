"""The web UI against the real stack: real PDS, real hold, images pushed with skopeo.

One module-wide scene (two accounts, three repositories, a description, a star, a pull) is
read by every test. The cold-cache test renders each page, empties the UI AppView's Valkey
with FLUSHALL, and renders again: the pages must say the same thing.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from atcr.readmodel.keys import stats_rkey
from tests.support.fixtures_stack import Pusher
from tests.support.pdsnet import Account, create_account, create_app_password
from tests.support.ui_stack import UiStack, csrf_of, push_image, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.slow]

XSS_README = (
    "# Hello\n\n<script>alert('readme')</script>\n\n"
    "[click](javascript:alert(1)) <img src=x onerror=alert(2)> ![pixel](http://tracker.example/p.gif)\n\n"
    "<a href=\"javascript:alert(3)\" onclick=\"alert(4)\">x</a> **safe bold**"
)
XSS_ANNOTATIONS = {
    "org.opencontainers.image.title": "<script>alert('annotation')</script>",
    "com.example.note": "\"><img src=x onerror=alert(5)>",
}


@dataclass
class Scene:
    stack: UiStack
    owner: Pusher
    fan: Account
    app_digest: str
    owner_client: httpx.Client
    fan_client: httpx.Client

    @property
    def repo_path(self) -> str:
        return f"/r/{self.owner.handle}/app"


def _client(stack: UiStack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=60, follow_redirects=False, trust_env=False)


def _hold_stats(stack: UiStack, did: str, repo: str) -> dict:
    reg = stack.registry
    r = httpx.get(f"{reg.hold.url}/xrpc/com.atproto.repo.getRecord", timeout=10, params={
        "repo": reg.hold_did, "collection": "io.atcr.hold.stats", "rkey": stats_rkey(did, repo)})
    return r.json().get("value") or {} if r.status_code == 200 else {}


def wait_hold_stats(stack: UiStack, did: str, repo: str, *, pushes: int = 0, pulls: int = 0) -> dict:
    """The hold moves counts into its records every few seconds: wait until they are there."""
    deadline = time.monotonic() + 30
    while True:
        value = _hold_stats(stack, did, repo)
        if value.get("pushCount", 0) >= pushes and value.get("pullCount", 0) >= pulls:
            return value
        assert time.monotonic() < deadline, f"hold stats of {repo} never reached {pushes}/{pulls}: {value}"
        time.sleep(0.3)


@pytest.fixture(scope="module")
def scene(ui_stack: UiStack, pds_network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:  # type: ignore[no-untyped-def]
    tmp: Path = tmp_path_factory.mktemp("ui-scene")
    account = create_account(pds_network.pds_url, "owner")
    owner = Pusher(account=account, app_password=create_app_password(account, "docker"))
    fan = create_account(pds_network.pds_url, "fan")
    app_digest = push_image(ui_stack, owner, tmp, "app", "1.0", annotations=XSS_ANNOTATIONS)
    push_image(ui_stack, owner, tmp, "app", "latest")
    push_image(ui_stack, owner, tmp, "tools/cli", "v2")
    # One pull, so the pull count and the sparkline have something to show.
    proc = subprocess.run(["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false",
                           f"docker://{ui_stack.host}/{owner.handle}/app:1.0", f"oci:{tmp / 'pulled'}:x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # Before any page is viewed: the AppView caches what it reads for a minute.
    wait_hold_stats(ui_stack, owner.did, "app", pushes=2, pulls=1)
    wait_hold_stats(ui_stack, owner.did, "tools/cli", pushes=1)

    owner_client, fan_client = _client(ui_stack), _client(ui_stack)
    sign_in(owner_client, owner.account)
    sign_in(fan_client, fan)
    page = owner_client.get(f"/r/{owner.handle}/app/-/edit")
    assert page.status_code == 200, page.text[:300]
    resp = owner_client.post(f"/r/{owner.handle}/app/-/edit", files={"icon": ("", b"", "application/octet-stream")},
                             data={"csrf_token": csrf_of(page.text), "description": XSS_README})
    assert resp.status_code == 303, resp.text[:500]
    repo_page = fan_client.get(f"/r/{owner.handle}/app")
    resp = fan_client.post(f"/r/{owner.handle}/app/-/star", data={"csrf_token": csrf_of(repo_page.text), "star": "1"})
    assert resp.status_code == 303, resp.text[:500]
    try:
        yield Scene(ui_stack, owner, fan, app_digest, owner_client, fan_client)
    finally:
        owner_client.close()
        fan_client.close()


def elements(html: str) -> tuple[set[str], list[tuple[str, str | None]]]:
    """Tags and attributes a browser would build from `html` (scripts included)."""
    from html.parser import HTMLParser

    found: tuple[set[str], list[tuple[str, str | None]]] = (set(), [])

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found[0].add(tag)
            found[1].extend(attrs)

    Collect().feed(html)
    return found


def main_of(html: str) -> str:
    """The page's <main>, minus what may differ between two renders of the same data: relative
    times ("just now" vs "1 minute ago"; the datetime attribute stays) and form tokens."""
    m = re.search(r"<main[^>]*>(.*)</main>", html, re.S)
    assert m, html[:300]
    body = re.sub(r"(<time [^>]*>)[^<]*(</time>)", r"\1\2", m.group(1))
    return re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token"', body)


def repository_links(html: str) -> set[str]:
    """The repository pages a page links to (its cards)."""
    return set(re.findall(r'href="(/r/[^"?#]+)"', main_of(html)))


def test_pages_show_the_scene(scene: Scene) -> None:
    anon = _client(scene.stack)
    home = anon.get("/")
    assert home.status_code == 200
    assert f"/r/{scene.owner.handle}/app" in home.text and f"/r/{scene.owner.handle}/tools/cli" in home.text
    repo = anon.get(scene.repo_path)
    assert repo.status_code == 200
    assert "<strong>safe bold</strong>" in repo.text
    # <wbr>: line-break opportunities inside the reference, no text
    assert f"docker pull {scene.stack.host}/{scene.owner.handle}/app:latest" in repo.text.replace("<wbr>", "")
    assert re.search(r'id="star-count"[^>]*>1<', repo.text)
    assert re.search(r'id="pull-count">1<', repo.text) and re.search(r'id="push-count">2<', repo.text)
    assert "1 pull in the last 30 days" in repo.text  # the sparkline's label
    assert 'data-tag="1.0"' in repo.text and 'data-tag="latest"' in repo.text
    assert f'title="{scene.stack.registry.hold_did}"' in repo.text  # the hold's link
    assert '<span class="badge ok">reachable</span>' in repo.text and "hold-warning" not in repo.text
    user = anon.get(f"/u/{scene.owner.handle}")
    assert user.status_code == 200 and scene.owner.did in user.text and "tools/cli" in user.text
    manifest = anon.get(f"{scene.repo_path}/manifest/{scene.app_digest}")
    assert manifest.status_code == 200 and 'id="layers"' in manifest.text
    assert "com.example.note" in manifest.text
    search = anon.get("/search", params={"q": "app"})
    assert f"/r/{scene.owner.handle}/app" in search.text


def test_xss_in_description_and_annotations_is_inert(scene: Scene) -> None:
    anon = _client(scene.stack)
    repo = anon.get(scene.repo_path).text
    readme = re.search(r'<div class="readme" id="readme">(.*?)</div>', repo, re.S)
    assert readme, repo[:2000]
    html = readme.group(1)
    tags, attrs = elements(html)
    assert tags <= {"h1", "p", "a", "strong"}, tags
    assert not [a for a in attrs if a[0].startswith("on") or "javascript:" in (a[1] or "")], attrs
    assert "&lt;script&gt;" in html  # shown as text
    assert 'href="http://tracker.example' not in html  # no images (or links) to plain-http hosts
    manifest = anon.get(f"{scene.repo_path}/manifest/{scene.app_digest}").text
    tags, attrs = elements(manifest)
    assert "img" not in tags
    assert [a for a in attrs if a[0].startswith("on")] == []
    assert "&lt;script&gt;alert(&#39;annotation&#39;)&lt;/script&gt;" in manifest
    assert "&#34;&gt;&lt;img src=x onerror=alert(5)&gt;" in manifest
    assert "script-src 'self'" in anon.get(scene.repo_path).headers["content-security-policy"]


def test_every_page_is_the_same_after_flushall(scene: Scene) -> None:
    anon = _client(scene.stack)
    owner = scene.owner
    paths = [
        "/",
        "/?popular=pulls",
        "/search?q=app",
        "/search?q=" + owner.handle.split(".")[0],
        f"/u/{owner.handle}",
        f"/u/{owner.did}",
        scene.repo_path,
        f"/r/{owner.handle}/tools/cli",
        f"{scene.repo_path}/manifest/{scene.app_digest}",
        f"/u/{scene.fan.handle}",
    ]
    network_wide = set(paths[:4])  # home, popular and search: every account's repositories
    warm = {p: anon.get(p) for p in paths}
    settings_warm = scene.owner_client.get("/settings")
    assert settings_warm.status_code == 200
    for p, r in warm.items():
        assert r.status_code == 200, (p, r.text[:500])

    scene.stack.flushall()
    try:
        first = anon.get("/")  # starts discovery, waits for it a few seconds at most
        assert first.status_code == 200, first.text[:500]
        scene.stack.wait_until_discovered()
        cold = {p: anon.get(p) for p in paths}
        for p in paths:
            assert cold[p].status_code == 200, (p, cold[p].text[:500])
            if p in network_wide:
                # Built from discovering every account on the (session-wide) PDS: after FLUSHALL the
                # discovery runs again and finds what every earlier test of the session pushed, some
                # of it ranked by record times above this scene's repositories, so the cold page's
                # list depends on which tests ran before. What must hold: the page is built again
                # from the PDS, and this scene's repositories are among what it shows.
                ours = (f"/r/{owner.handle}/", f"/r/{scene.fan.handle}/")
                warm_ours = {link for link in repository_links(warm[p].text) if link.startswith(ours)}
                cold_ours = {link for link in repository_links(cold[p].text) if link.startswith(ours)}
                assert cold_ours or not warm_ours, f"{p} lost all of {sorted(warm_ours)} after FLUSHALL"
            else:
                assert main_of(cold[p].text) == main_of(warm[p].text), f"{p} differs after FLUSHALL"
    finally:
        # Sessions lived in the flushed Valkey too: the scene's browsers sign in again whatever
        # the checks found, so one failure here does not sign every later test of the module out.
        fresh = _client(scene.stack)
        sign_in(fresh, owner.account)
        scene.owner_client = fresh
        scene.fan_client = _client(scene.stack)
        sign_in(scene.fan_client, scene.fan)
    settings_cold = fresh.get("/settings")
    assert main_of(settings_cold.text) == main_of(settings_warm.text)


def test_star_and_unstar_answer_json_for_the_button(scene: Scene) -> None:
    client = scene.fan_client
    token = csrf_of(client.get(scene.repo_path).text)
    headers = {"Accept": "application/json"}
    off = client.post(f"{scene.repo_path}/-/star", data={"csrf_token": token, "star": "0"}, headers=headers)
    assert off.status_code == 200 and off.json() == {"starred": False, "count": 0}
    on = client.post(f"{scene.repo_path}/-/star", data={"csrf_token": token, "star": "1"}, headers=headers)
    assert on.json() == {"starred": True, "count": 1}
    stars = httpx.get(f"{scene.stack.registry.network.pds_url}/xrpc/com.atproto.repo.listRecords",
                      params={"repo": scene.fan.did, "collection": "io.atcr.sailor.star"}).json()["records"]
    assert [s["value"]["subject"] for s in stars] == [f"at://{scene.owner.did}/io.atcr.repo.page/app"]


def test_state_changes_need_the_csrf_token(scene: Scene) -> None:
    resp = scene.fan_client.post(f"{scene.repo_path}/-/star", data={"star": "0"})
    assert resp.status_code == 403 and "Form expired" in resp.text
    resp = scene.fan_client.post(f"{scene.repo_path}/-/star", headers={"Origin": "https://evil.example"},
                                 data={"star": "0", "csrf_token": csrf_of(scene.fan_client.get("/").text)})
    assert resp.status_code == 403


def test_only_the_owner_edits_and_deletes(scene: Scene) -> None:
    client = scene.fan_client
    token = csrf_of(client.get(scene.repo_path).text)
    resp = client.post(f"{scene.repo_path}/-/edit", data={"csrf_token": token, "description": "mine now"})
    assert resp.status_code == 403 and "Only the owner" in resp.text
    resp = client.post(f"{scene.repo_path}/-/delete", data={"csrf_token": token, "tag": "1.0", "confirm": "yes"})
    assert resp.status_code == 403
    assert client.get(f"{scene.repo_path}/-/edit").status_code == 403
    anon = _client(scene.stack)
    resp = anon.post(f"{scene.repo_path}/-/star", data={"star": "1"})
    assert resp.status_code == 401 and "Sign in" in resp.text


def test_owner_deletes_a_tag_after_confirming(scene: Scene, tmp_path: Path) -> None:
    push_image(scene.stack, scene.owner, tmp_path, "app", "doomed")
    client = scene.owner_client
    page = client.get(f"{scene.repo_path}/-/delete", params={"tag": "doomed"})
    assert page.status_code == 200 and "Delete the tag doomed?" in page.text
    token = csrf_of(page.text)
    unconfirmed = client.post(f"{scene.repo_path}/-/delete", data={"csrf_token": token, "tag": "doomed"})
    assert unconfirmed.status_code == 303 and "/-/delete?tag=doomed" in unconfirmed.headers["location"]
    done = client.post(f"{scene.repo_path}/-/delete", data={"csrf_token": token, "tag": "doomed", "confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"].endswith("?done=tag-deleted")
    after = client.get(done.headers["location"])
    assert "The tag was deleted." in after.text and 'data-tag="doomed"' not in after.text
    assert 'data-tag="1.0"' in after.text


def test_settings_default_hold_is_written_to_the_profile(scene: Scene) -> None:
    client = scene.owner_client
    page = client.get("/settings")
    assert scene.stack.registry.hold_did in page.text and "this registry's default" in page.text
    other = "did:web:localhost%3A9"  # nothing listens there: the page must call it unreachable
    resp = client.post("/settings/hold", data={"csrf_token": csrf_of(page.text), "hold": "other", "other_hold": other})
    assert resp.status_code == 303
    profile = httpx.get(f"{scene.stack.registry.network.pds_url}/xrpc/com.atproto.repo.getRecord", params={
        "repo": scene.owner.did, "collection": "io.atcr.sailor.profile", "rkey": "self"}).json()["value"]
    assert profile["defaultHold"] == other
    page = client.get(resp.headers["location"])
    assert "Your default hold was saved" in page.text
    assert re.search(rf'value="{re.escape(other)}" checked', page.text)
    # Named by its host (the DID below it), and called unreachable.
    assert re.search(r'<strong class="hold-host">localhost:9</strong>\s*<span class="badge bad">unreachable', page.text)
    assert f'<code class="muted hold-did">{other}</code>' in page.text
    # Put it back: the scene's later pushes go to the session hold.
    client.post("/settings/hold", data={"csrf_token": csrf_of(page.text), "hold": scene.stack.registry.hold_did})


def test_errors_are_pages_for_people_and_json_for_apis(scene: Scene) -> None:
    anon = _client(scene.stack)
    missing = anon.get("/r/nobody-here.test/app", headers={"Accept": "text/html"})
    assert missing.status_code == 404 and "No account named nobody-here.test" in missing.text
    assert "Traceback" not in missing.text
    no_repo = anon.get(f"/r/{scene.owner.handle}/nothing-here")
    assert no_repo.status_code == 404 and "has no repository named nothing-here" in no_repo.text
    no_route = anon.get("/no/such/page", headers={"Accept": "text/html"})
    assert no_route.status_code == 404 and "<main" in no_route.text and "Search repositories" in no_route.text
    api = anon.get("/v2/nobody-here.test/app/tags/list")
    assert api.headers["content-type"].startswith("application/json")
    bad = anon.get(f"/r/{scene.owner.handle}/UPPER")
    assert bad.status_code == 404


def test_avatar_proxy_serves_only_images(scene: Scene) -> None:
    anon = _client(scene.stack)
    assert anon.get(f"/img/{scene.owner.did}/not-a-cid").status_code == 404
    assert anon.get("/img/not-a-did/bafkreia").status_code == 404


def test_index_platforms_and_attached_artifacts(ui_stack: UiStack, pusher: Pusher, tmp_path: Path) -> None:
    """A multi-arch index lists its platforms; a signature and an SBOM attached with `subject`
    show as referrers of the image they describe."""
    from tests.support.ocilayout import Layout
    from tests.support.ui_stack import skopeo_push

    layout = Layout(tmp_path / "multi")
    amd, arm = layout.image(arch="amd64"), layout.image(arch="arm64")
    index = layout.index_of([amd, arm])
    layout.tag(index, "multi")
    skopeo_push(ui_stack, pusher, layout.root, "multi", f"{pusher.handle}/multi:1", all_=True)
    subject = {"mediaType": amd["mediaType"], "digest": amd["digest"], "size": amd["size"]}
    for kind, name in (("application/vnd.dev.cosign.artifact.sig.v1+json", "sig"), ("application/spdx+json", "sbom")):
        art = Layout(tmp_path / name)
        desc = art.image(subject=subject, artifact_type=kind, config_media_type="application/vnd.oci.empty.v1+json",
                         layers=[art.add_blob(b'{"spdxVersion":"SPDX-2.3"}')])
        art.tag(desc, name)
        skopeo_push(ui_stack, pusher, art.root, name, f"{pusher.handle}/multi@{desc['digest']}")

    anon = _client(ui_stack)
    repo = anon.get(f"/r/{pusher.handle}/multi")
    assert repo.status_code == 200
    assert "linux/amd64, linux/arm64" in repo.text
    page = anon.get(f"/r/{pusher.handle}/multi/manifest/{index['digest']}")
    assert page.status_code == 200 and 'id="platforms"' in page.text
    assert f"/r/{pusher.handle}/multi/manifest/{amd['digest']}" in page.text and "linux/arm64" in page.text
    child = anon.get(f"/r/{pusher.handle}/multi/manifest/{amd['digest']}")
    kinds = re.findall(r'<span class="badge">(signature|sbom)</span>', child.text)
    assert sorted(kinds) == ["sbom", "signature"], child.text[-3000:]


def _png() -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x20\x60\xc0" * 4 for _ in range(4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_owner_uploads_an_icon_served_through_the_proxy(scene: Scene) -> None:
    client = scene.owner_client
    page = client.get(f"/r/{scene.owner.handle}/tools/cli/-/edit")
    png = _png()
    bad = client.post(f"/r/{scene.owner.handle}/tools/cli/-/edit", data={"csrf_token": csrf_of(page.text),
                      "description": "CLI"}, files={"icon": ("x.png", b"<svg onload=alert(1)>", "image/png")})
    assert bad.status_code == 400 and "PNG, JPEG or WebP" in bad.text
    resp = client.post(f"/r/{scene.owner.handle}/tools/cli/-/edit", data={"csrf_token": csrf_of(page.text),
                       "description": "The **CLI**"}, files={"icon": ("icon.png", png, "image/png")})
    assert resp.status_code == 303, resp.text[:300]
    html = _client(scene.stack).get(f"/r/{scene.owner.handle}/tools/cli").text
    src = re.search(r'<img class="icon" src="(/img/[^"]+)"', html)
    assert src and src.group(1).startswith(f"/img/{scene.owner.did}/b"), html[:3000]
    img = _client(scene.stack).get(src.group(1))
    assert img.status_code == 200 and img.content == png
    assert img.headers["content-type"] == "image/png" and "immutable" in img.headers["cache-control"]
    assert img.headers["x-content-type-options"] == "nosniff"
    record = httpx.get(f"{scene.stack.registry.network.pds_url}/xrpc/com.atproto.repo.getRecord", params={
        "repo": scene.owner.did, "collection": "io.atcr.repo.page", "rkey": "tools:cli"}).json()["value"]
    assert record["repository"] == "tools/cli" and record["avatar"]["mimeType"] == "image/png"
