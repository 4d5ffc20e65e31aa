"""The whole CLI loop against the real services, as a user does it.

`docker-credential-atcr login` (a real process) prints a code -> the user approves it in
chromium after signing in through the PDS's own pages -> the helper stores the device secret
(mode 0600) -> `configure-docker` adds credHelpers -> skopeo (and oras) push through the
helper -> the manifest and tag records appear in the user's PDS. The account has no app
password at all, so those writes can only have gone through its OAuth session (DPoP).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from appview.auth.sessions import SessionCipher
from tests.e2e.auth.conftest import pds_sign_in_and_authorize
from tests.support.fixtures_stack import RegistryStack
from tests.support.ocilayout import Layout
from tests.support.pdsnet import Account, create_account

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BIN = Path(sys.executable).parent
CODE = re.compile(r"\b([BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4})\b")


def user_env(home: Path) -> dict[str, str]:
    """A user's shell: their own HOME and docker config, the helper on PATH."""
    return {
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
    }


def records(stack: RegistryStack, did: str, collection: str) -> list[dict[str, object]]:
    r = httpx.get(
        f"{stack.network.pds_url}/xrpc/com.atproto.repo.listRecords",
        params={"repo": did, "collection": collection, "limit": 100},
        timeout=30,
    )
    r.raise_for_status()
    return list(r.json()["records"])


class Helper:
    """`docker-credential-atcr login` running in the background, its stderr collected."""

    def __init__(self, host: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(BIN / "docker-credential-atcr"), "login", host, "--no-browser", "--device-name", "e2e-laptop"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err.append(line)

    def code(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = CODE.search("".join(self.err))
            if found:
                return found.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError("helper printed no code:\n" + "".join(self.err))

    def wait(self, timeout: float = 60) -> int:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return rc


async def test_login_approve_push(
    chromium,
    registry_stack: RegistryStack,
    tmp_path: Path,
    shots: Path,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stack = registry_stack
    account: Account = create_account(stack.network.pds_url, "cli")
    home = tmp_path / "home"
    home.mkdir()
    env = user_env(home)

    helper = Helper(stack.host, env)
    code = helper.code()
    assert f"{stack.url}/device" in "".join(helper.err)

    # The user opens the verification page, signs in with ATProto OAuth, sees the device, approves.
    page = await chromium.new_page()
    await page.goto(f"{stack.url}/device?code={code}")
    await page.get_by_label("Handle or DID").fill(account.handle)
    await page.get_by_role("button", name="Sign in").click()
    await pds_sign_in_and_authorize(page, account, shots)
    await page.wait_for_url(re.compile(r".*/device\?code=.*"))
    assert await page.locator("#device-name").inner_text() == "e2e-laptop"
    await page.screenshot(path=str(shots / "5-device-confirm.png"))
    await page.get_by_role("button", name="Approve").click()
    await page.get_by_text("Device approved").wait_for()

    assert helper.wait() == 0, "".join(helper.err)
    assert f"Signed in to {stack.host} as {account.handle}" in "".join(helper.err)
    creds = home / ".config" / "atcr" / "credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600

    configure = subprocess.run(
        [str(BIN / "docker-credential-atcr"), "configure-docker", stack.host],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert configure.returncode == 0, configure.stderr
    docker_config = home / ".docker" / "config.json"
    assert json.loads(docker_config.read_text()) == {"credHelpers": {stack.host: "atcr"}}

    status = subprocess.run(
        [str(BIN / "docker-credential-atcr"), "status"], env=env, capture_output=True, text=True, timeout=60
    )
    assert f"* {account.handle} ({account.did})  [valid]" in status.stdout, status.stdout + status.stderr

    # skopeo asks the helper (credHelpers in its auth file) and pushes.
    layout = Layout(tmp_path / "image")
    layout.tag(layout.image(), "v1")
    push = subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--authfile",
            str(docker_config),
            "--digestfile",
            str(tmp_path / "digest"),
            f"oci:{layout.root}:v1",
            f"docker://{stack.host}/{account.handle}/app:v1",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert push.returncode == 0, push.stdout + push.stderr

    manifests = records(stack, account.did, "io.atcr.manifest")
    pushed = (tmp_path / "digest").read_text().strip()
    assert [m["value"]["digest"] for m in manifests] == [pushed]  # type: ignore[index]
    assert manifests[0]["uri"] == f"at://{account.did}/io.atcr.manifest/{pushed[7:]}"
    tags = records(stack, account.did, "io.atcr.tag")
    assert [t["value"]["tag"] for t in tags] == ["v1"]  # type: ignore[index]

    # The writes went through the account's OAuth session: the only PDS session the AppView holds.
    secret = (Path(stack.appview.env["ATCR_DATA_DIR"]) / "auth" / "session-secret.key").read_bytes()
    import valkey as sync_valkey

    raw = sync_valkey.Valkey.from_url(stack.appview.env["VALKEY_URL"]).get(f"av:pdssess:{account.did}")
    assert raw is not None
    session = SessionCipher(secret).open(raw, account.did)
    assert session is not None and session["kind"] == "oauth" and session["dpop_jwk"]["crv"] == "P-256"

    # oras (PyPI) finds the helper through credHelpers and calls `get` with this process's environment.
    # (Pushing with oras-py is left to the registry tests: it reuses a pull-scoped token for uploads.)
    import base64

    import oras.client

    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PATH", env["PATH"])
    client = oras.client.OrasClient(hostname=stack.host, insecure=True)
    container = client.get_container(f"{stack.host}/{account.handle}/notes:v1")
    client.auth.load_configs(container, configs=[str(docker_config)])
    user, _, secret_value = base64.b64decode(client.auth._basic_auth).decode().partition(":")
    assert user == account.handle and secret_value.startswith("atcr_")
    token = httpx.get(
        f"{stack.url}/auth/token",
        auth=(user, secret_value),
        timeout=30,
        params={"service": stack.host, "scope": f"repository:{account.handle}/notes:pull,push"},
    )
    assert token.status_code == 200, token.text
