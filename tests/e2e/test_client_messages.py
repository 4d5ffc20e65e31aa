"""What a user of a real client reads: the hint on an anonymous push, and a quiet AppView log
while clients try https first on its plain-HTTP port."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.fixtures_stack import Pusher, RegistryStack, token_for
from tests.support.ocilayout import Layout

pytestmark = pytest.mark.e2e


def test_anonymous_push_says_to_sign_in(tmp_path: Path, registry_stack: RegistryStack, pusher: Pusher) -> None:
    stack = registry_stack
    hint = f"sign in first with `docker login {stack.host}`"
    # The OCI error itself: an anonymous token asked for push.
    token = token_for(stack, None, f"repository:{pusher.handle}/app:pull,push")
    r = httpx.post(
        f"{stack.url}/v2/{pusher.handle}/app/blobs/uploads/", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert r.status_code == 401
    assert r.json()["errors"][0] == {
        "code": "UNAUTHORIZED", "message": f"authentication required to push: {hint}", "detail": None,
    }
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    # A pull stays a plain challenge (anonymous pulls of public images are fine).
    r = httpx.get(f"{stack.url}/v2/{pusher.handle}/app/tags/list", timeout=30)
    assert r.status_code == 401 and "docker login" not in r.text

    # What a real client prints (skopeo, which also tries https first on this http registry).
    layout = Layout(tmp_path / "layout")
    layout.tag(layout.image(), "1")
    log_before = stack.appview.logs()
    proc = subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--dest-tls-verify=false", "--retry-times=0",
         f"oci:{layout.root}:1", f"docker://{stack.host}/{pusher.handle}/app:1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert hint in proc.stderr, proc.stderr

    # The https attempts reached the AppView (skopeo falls back to http): none of them is a
    # warning line of its own; one line per process says what they are.
    for _ in range(3):
        subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{stack.host}/{pusher.handle}/app:1"],
            capture_output=True, text=True, timeout=120,
        )
    log = stack.appview.logs()
    assert "Invalid HTTP request received" not in log[len(log_before):]
    assert log.count("started TLS on this plain-HTTP port") == 1, log[-4000:]
