"""The repository rules page: the owner saves immutable and retention rules (the
io.atcr.repo.policy record), previews what retention would remove, and pushes follow them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.fixtures_stack import Pusher
from tests.support.pdsnet import TestNetwork, create_account, create_app_password
from tests.support.ui_stack import UiStack, csrf_of, push_image, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_owner_saves_rules_and_previews(ui_stack: UiStack, pds_network: TestNetwork, tmp_path: Path) -> None:
    account = create_account(pds_network.pds_url, "rules")
    owner = Pusher(account=account, app_password=create_app_password(account, "docker"))
    for tag in ("build-1", "build-2", "build-3", "v1"):
        push_image(ui_stack, owner, tmp_path / tag, "svc", tag)
    path = f"/r/{owner.handle}/svc"
    with httpx.Client(base_url=ui_stack.url, timeout=60, follow_redirects=False) as client:
        sign_in(client, owner.account)
        assert 'href="' + path + '/-/rules"' in client.get(path).text
        page = client.get(f"{path}/-/rules")
        assert page.status_code == 200 and 'data-preview="empty"' in page.text
        token = csrf_of(page.text)
        form = {"csrf_token": token, "immutable": "v*", "keep": "build-* 1", "untagged_days": "", "protect": "latest"}
        preview = client.post(f"{path}/-/rules", data={**form, "do": "preview"})
        assert preview.status_code == 200
        assert 'data-remove-tag="build-1"' in preview.text and 'data-remove-tag="build-2"' in preview.text
        assert 'data-remove-tag="build-3"' not in preview.text and 'data-remove-tag="v1"' not in preview.text
        assert 'data-preview="empty"' in client.get(f"{path}/-/rules").text  # a preview saves nothing
        bad = client.post(f"{path}/-/rules", data={**form, "keep": "build-*", "do": "save"})
        assert bad.status_code == 400 and "pattern count" in bad.text
        saved = client.post(f"{path}/-/rules", data={**form, "do": "save"})
        assert saved.status_code == 303 and saved.headers["location"].endswith("/-/rules?done=rules-saved")
        again = client.get(saved.headers["location"])
        assert "The rules were saved" in again.text and "build-* 1" in again.text
        assert 'data-remove-tag="build-1"' in again.text  # the saved rules' preview
    r = httpx.get(f"{account.pds_url}/xrpc/com.atproto.repo.getRecord",
                  params={"repo": account.did, "collection": "io.atcr.repo.policy", "rkey": "svc"}, timeout=30)
    value = r.json()["value"]
    assert value["immutableTags"] == ["v*"]
    assert value["retention"] == {"keepNewest": [{"pattern": "build-*", "count": 1}], "protect": ["latest"]}
    # The next push by the owner applies them.
    push_image(ui_stack, owner, tmp_path / "b4", "svc", "build-4")
    with httpx.Client(base_url=ui_stack.url, timeout=60) as client:
        html = client.get(path).text
    assert 'data-tag="build-4"' in html and 'data-tag="v1"' in html
    assert 'data-tag="build-1"' not in html and 'data-tag="build-3"' not in html


def test_only_the_owner_sees_the_rules(ui_stack: UiStack, pds_network: TestNetwork, tmp_path: Path) -> None:
    account = create_account(pds_network.pds_url, "rules2")
    owner = Pusher(account=account, app_password=create_app_password(account, "docker"))
    push_image(ui_stack, owner, tmp_path, "svc", "1")
    other = create_account(pds_network.pds_url, "other")
    with httpx.Client(base_url=ui_stack.url, timeout=60, follow_redirects=False) as client:
        sign_in(client, other)
        assert client.get(f"/r/{owner.handle}/svc/-/rules").status_code == 403
