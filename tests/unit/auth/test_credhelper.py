"""`docker-credential-atcr`: the Docker protocol verbs and the user commands, with fake servers."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from atcr import credhelper as ch

pytestmark = pytest.mark.unit

ALICE = ch.Account(key="did:plc:alice", secret="atcr_0123456789abcdef_aaa", did="did:plc:alice", handle="alice.test")
BOB = ch.Account(key="did:plc:bob", secret="atcr_fedcba9876543210_bbb", did="did:plc:bob", handle="bob.test")


class Stdin(io.StringIO):
    def isatty(self) -> bool:
        return False


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def store(tmp_path: Path) -> ch.CredentialStore:
    return ch.CredentialStore(tmp_path / "cfg" / "atcr" / "credentials.json")


def test_registry_names() -> None:
    assert ch.registry_key("https://Atcr.io/v2/") == "atcr.io"
    assert ch.registry_key("127.0.0.1:5000") == "127.0.0.1:5000"
    assert ch.registry_url("atcr.io") == "https://atcr.io"
    assert ch.registry_url("127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert ch.registry_url("localhost:5000") == "http://localhost:5000"
    assert ch.registry_url("http://registry.internal:8080/") == "http://registry.internal:8080"


def test_paths_from_env(tmp_path: Path) -> None:
    paths = ch.Paths.from_env({"HOME": str(tmp_path)})
    assert paths.credentials == tmp_path / ".config" / "atcr" / "credentials.json"
    assert paths.docker_config == tmp_path / ".docker" / "config.json"
    paths = ch.Paths.from_env({"HOME": "/x", "XDG_CONFIG_HOME": "/cfg", "DOCKER_CONFIG": "/dc"})
    assert (paths.credentials, paths.docker_config) == (Path("/cfg/atcr/credentials.json"), Path("/dc/config.json"))


def test_get_without_credentials_fails_at_once(store: ch.CredentialStore) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert ch.cmd_get(store, Stdin("atcr.io\n"), out, err, commands=list) == 1
    assert out.getvalue().strip() == ch.NOT_FOUND
    assert err.getvalue() == ""  # clients ask on every anonymous pull: no noise on their stderr


def test_anonymous_pulls_after_logout_print_nothing_on_stderr(tmp_path: Path) -> None:
    """A real `get` process after `logout`, as docker runs it for each anonymous pull."""
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    store = ch.CredentialStore(ch.Paths.from_env(env).credentials)
    store.put("127.0.0.1:5000", "http://127.0.0.1:5000", ALICE)
    store.save()
    revoke = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={})))
    ch.cmd_logout(ch.CredentialStore(store.path), "127.0.0.1:5000", None, everyone=False, err=io.StringIO(), http=revoke)
    for _ in range(2):
        proc = subprocess.run(
            [sys.executable, "-m", "atcr.credhelper", "get"],
            input="127.0.0.1:5000\n", capture_output=True, text=True, env=env, timeout=30,
        )
        assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (1, ch.NOT_FOUND, "")


def test_get_refuses_a_terminal_and_empty_stdin(store: ch.CredentialStore) -> None:
    with pytest.raises(ch.HelperError, match="login"):
        ch.cmd_get(store, Tty(""), io.StringIO(), io.StringIO(), commands=list)
    with pytest.raises(ch.HelperError, match="no registry"):
        ch.cmd_get(store, Stdin(""), io.StringIO(), io.StringIO(), commands=list)


def test_get_without_stdin_gives_up_within_a_second(tmp_path: Path) -> None:
    """A real process with stdin open but silent (the ATCR v1 hang) exits quickly with a hint."""
    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "atcr.credhelper", "get"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert b"stdin" in err
    # 0.75 s of patience plus interpreter start-up: a bound that proves it gives up rather than
    # hangs (the v1 bug), loose enough for a loaded 2-core runner (1.57 s was seen there).
    assert elapsed < 15


def test_store_get_list_erase(store: ch.CredentialStore, tmp_path: Path) -> None:
    payload = json.dumps({"ServerURL": "127.0.0.1:5000", "Username": "alice.test", "Secret": "app-pass-word"})
    assert ch.cmd_store(store, Stdin(payload)) == 0
    path = store.path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    again = ch.CredentialStore(path)
    out = io.StringIO()
    assert ch.cmd_get(again, Stdin("http://127.0.0.1:5000"), out, io.StringIO(), commands=list) == 0
    assert json.loads(out.getvalue()) == {
        "ServerURL": "http://127.0.0.1:5000",
        "Username": "alice.test",
        "Secret": "app-pass-word",
    }
    listed = io.StringIO()
    ch.cmd_list(again, listed)
    assert json.loads(listed.getvalue()) == {"127.0.0.1:5000": "alice.test"}
    assert ch.cmd_erase(again, Stdin("127.0.0.1:5000")) == 0
    assert ch.CredentialStore(path).registries == {}
    with pytest.raises(ch.HelperError):
        ch.cmd_erase(ch.CredentialStore(path), Stdin("127.0.0.1:5000"))
    with pytest.raises(ch.HelperError):
        ch.cmd_store(store, Stdin("not json"))


def test_get_picks_the_account_the_image_names(store: ch.CredentialStore) -> None:
    store.put("atcr.io", "https://atcr.io", ALICE)
    store.put("atcr.io", "https://atcr.io", BOB)  # bob is active

    def get(*cmdlines: list[str]) -> str:
        out = io.StringIO()
        assert ch.cmd_get(store, Stdin("atcr.io"), out, io.StringIO(), commands=lambda: list(cmdlines)) == 0
        return str(json.loads(out.getvalue())["Username"])

    assert get(["docker", "push", "atcr.io/alice.test/app:1"]) == "alice.test"
    assert get(["skopeo", "copy", "oci:dir:v1", "docker://atcr.io/did:plc:alice/app:v1"]) == "alice.test"
    assert get(["podman", "pull", "--tls-verify=false", "ATCR.IO/Alice.Test/app"]) == "alice.test"
    assert get(["docker", "push", "atcr.io/carol.test/app"]) == "bob.test"  # unknown: the active account
    assert get(["docker", "push", "other.io/alice.test/app"]) == "bob.test"
    assert get([], ["bash", "-c", "docker push atcr.io/alice.test/x"]) == "bob.test"  # one arg: not a ref
    assert get(["sh"], ["make", "IMAGE=atcr.io/alice.test/app"]) == "bob.test"
    assert get(["sh"], ["docker", "pull", "atcr.io/alice.test/app"]) == "alice.test"  # the grandparent


def test_identities_in() -> None:
    argv = ["skopeo", "copy", "docker://h:5000/a.test/r", "--dest=h:5000/did:plc:x/r", "h:5000/a.test/other"]
    assert ch.identities_in(argv, "h:5000") == ["a.test", "did:plc:x"]


def test_caller_commands_reads_proc() -> None:
    """A child process sees this (pytest) process as its caller: the helper's view of docker."""
    import json as _json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", "import json, atcr.credhelper as ch; print(json.dumps(ch.caller_commands()))"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    commands = _json.loads(out)
    me = Path(f"/proc/{os.getpid()}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert commands and commands[0][0] == me


def device_server(script: list[tuple[int, dict[str, object]]], seen: list[httpx.Request]) -> httpx.Client:
    answers = iter(script)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/auth/device/code":
            return httpx.Response(
                200,
                json={
                    "device_code": "dc",
                    "user_code": "BCDF-GHJK",
                    "verification_uri": "https://atcr.test/device",
                    "verification_uri_complete": "https://atcr.test/device?code=BCDF-GHJK",
                    "expires_in": 600,
                    "interval": 5,
                },
            )
        status, body = next(answers)
        return httpx.Response(status, json=body)

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_login_polls_until_approved(store: ch.CredentialStore) -> None:
    seen: list[httpx.Request] = []
    sleeps: list[float] = []
    http = device_server(
        [
            (400, {"error": "authorization_pending"}),
            (400, {"error": "slow_down"}),
            (400, {"error": "authorization_pending"}),
            (
                200,
                {
                    "device_secret": ALICE.secret,
                    "access_token": ALICE.secret,
                    "did": ALICE.did,
                    "handle": ALICE.handle,
                    "device_id": "0123456789abcdef",
                },
            ),
        ],
        seen,
    )
    err = io.StringIO()
    code = ch.cmd_login(
        store, "atcr.test", err=err, environ={}, open_browser=False, device_name="box", http=http, sleep=sleeps.append
    )
    assert code == 0
    assert sleeps == [5, 5, 10, 10]  # slow_down adds five seconds to every later wait
    text = err.getvalue()
    # The complete URL (RFC 8628 §3.3.1) on a line of its own, the code to compare, the plain page as a fallback.
    assert "\n    https://atcr.test/device?code=BCDF-GHJK\n" in text
    assert "It shows the code BCDF-GHJK" in text and "(Or open https://atcr.test/device and enter the code.)" in text
    assert "Signed in to atcr.test as alice.test" in text
    assert "configure-docker atcr.test" in text
    start = seen[0]
    assert b"client_name=box" in start.content and b"client_id=docker-credential-atcr" in start.content
    assert b"grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code" in seen[1].content
    reg = ch.CredentialStore(store.path).registry("atcr.test")
    assert reg is not None and reg.url == "https://atcr.test"
    current = reg.current()
    assert current is not None and (current.did, current.secret, current.device_id) == (
        ALICE.did,
        ALICE.secret,
        "0123456789abcdef",
    )


def test_login_opens_the_complete_url_in_a_browser_when_there_is_one(store: ch.CredentialStore) -> None:
    approved = (200, {"device_secret": ALICE.secret, "did": ALICE.did, "handle": ALICE.handle, "device_id": "d1"})
    opened: list[str] = []

    def browser(url: str) -> bool:
        opened.append(url)
        return True

    err = io.StringIO()
    ch.cmd_login(store, "atcr.test", err=err, environ={"DISPLAY": ":0"}, http=device_server([approved], []),
                 sleep=lambda s: None, open_url=browser)
    assert opened == ["https://atcr.test/device?code=BCDF-GHJK"]
    assert "(A browser window was opened for you.)" in err.getvalue()
    # No display (an SSH session): nothing is opened, the URL is printed.
    opened.clear()
    err = io.StringIO()
    ch.cmd_login(store, "atcr.test", err=err, environ={}, http=device_server([approved], []),
                 sleep=lambda s: None, open_url=browser)
    assert opened == [] and "https://atcr.test/device?code=BCDF-GHJK" in err.getvalue()
    assert "browser window" not in err.getvalue()
    # --no-browser wins over a display.
    ch.cmd_login(store, "atcr.test", err=io.StringIO(), environ={"DISPLAY": ":0"}, open_browser=False,
                 http=device_server([approved], []), sleep=lambda s: None, open_url=browser)
    assert opened == []


@pytest.mark.parametrize(
    ("error", "text"), [("access_denied", "denied"), ("expired_token", "expired"), ("invalid_grant", "invalid_grant")]
)
def test_login_failures(store: ch.CredentialStore, error: str, text: str) -> None:
    http = device_server([(400, {"error": error})], [])
    with pytest.raises(ch.HelperError, match=text):
        ch.cmd_login(
            store, "atcr.test", err=io.StringIO(), environ={}, open_browser=False, http=http, sleep=lambda s: None
        )
    assert ch.CredentialStore(store.path).registries == {}


def test_login_against_an_unreachable_registry(store: ch.CredentialStore) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(ch.HelperError, match="cannot reach"):
        ch.cmd_login(
            store,
            "atcr.test",
            err=io.StringIO(),
            environ={},
            open_browser=False,
            http=httpx.Client(transport=httpx.MockTransport(down)),
        )


def test_status_and_switch(store: ch.CredentialStore) -> None:
    store.put("atcr.io", "https://atcr.io", ALICE)
    store.put("atcr.io", "https://atcr.io", BOB)
    carol = ch.Account(key="did:plc:carol", secret="atcr_x", did="did:plc:carol", handle="carol.test")
    out = io.StringIO()
    ch.cmd_status(store, None, out=out, offline=True)
    assert "  * bob.test (did:plc:bob)" in out.getvalue() and "    alice.test (did:plc:alice)" in out.getvalue()

    def checker(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == httpx.BasicAuth("alice.test", ALICE.secret)._auth_header:
            return httpx.Response(200, json={"token": "t"})
        return httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED", "message": "device secret revoked"}]})

    out = io.StringIO()
    code = ch.cmd_status(
        store, "atcr.io", out=out, offline=False, http=httpx.Client(transport=httpx.MockTransport(checker))
    )
    assert "alice.test (did:plc:alice)  [valid]" in out.getvalue()
    assert (
        "bob.test (did:plc:bob)  [revoked: this device was signed out; "
        "sign in again with `docker-credential-atcr login atcr.io`]"
    ) in out.getvalue()
    assert code == 1 and out.getvalue().endswith("\nNot working: bob.test (did:plc:bob) on atcr.io.\n")

    ch.cmd_switch(store, None, None, out=io.StringIO(), stdin=Stdin(""))  # two accounts: toggle
    assert ch.CredentialStore(store.path).registry("atcr.io").current().handle == "alice.test"  # type: ignore[union-attr]
    store = ch.CredentialStore(store.path)
    store.put("atcr.io", "https://atcr.io", carol, activate=False)
    with pytest.raises(ch.HelperError, match="several accounts"):
        ch.cmd_switch(store, None, None, out=io.StringIO(), stdin=Stdin(""))
    ch.cmd_switch(store, "atcr.io", "did:plc:carol", out=io.StringIO(), stdin=Stdin(""))
    assert ch.CredentialStore(store.path).registry("atcr.io").current().handle == "carol.test"  # type: ignore[union-attr]
    menu = Tty("2\n")
    ch.cmd_switch(store, "atcr.io", None, out=io.StringIO(), stdin=menu)
    assert ch.CredentialStore(store.path).registry("atcr.io").current().handle == "bob.test"  # type: ignore[union-attr]
    with pytest.raises(ch.HelperError, match="no account"):
        ch.cmd_switch(store, "atcr.io", "nobody", out=io.StringIO(), stdin=Stdin(""))


def test_several_registries(store: ch.CredentialStore) -> None:
    store.put("atcr.io", "https://atcr.io", ALICE)
    store.put("buoy.cr", "https://buoy.cr", BOB)
    out = io.StringIO()
    assert ch.cmd_get(store, Stdin("buoy.cr"), out, io.StringIO(), commands=list) == 0
    assert json.loads(out.getvalue())["Username"] == "bob.test"
    with pytest.raises(ch.HelperError, match="several registries"):
        ch.cmd_switch(store, None, None, out=io.StringIO(), stdin=Stdin(""))


def test_logout_revokes_and_forgets(store: ch.CredentialStore) -> None:
    store.put("atcr.io", "https://atcr.io", ALICE)
    store.put("atcr.io", "https://atcr.io", BOB)
    seen: list[httpx.Request] = []

    def revoke(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"revoked": "x"})

    http = httpx.Client(transport=httpx.MockTransport(revoke))
    ch.cmd_logout(store, "atcr.io", "alice.test", everyone=False, err=io.StringIO(), http=http)
    assert [str(r.url) for r in seen] == ["https://atcr.io/auth/device/revoke"]
    assert seen[0].headers["authorization"] == httpx.BasicAuth(ALICE.did, ALICE.secret)._auth_header
    reg = ch.CredentialStore(store.path).registry("atcr.io")
    assert reg is not None and list(reg.accounts) == [BOB.key]
    ch.cmd_logout(ch.CredentialStore(store.path), None, None, everyone=True, err=io.StringIO(), http=http)
    assert ch.CredentialStore(store.path).registries == {}


def test_configure_docker_keeps_other_keys(store: ch.CredentialStore, tmp_path: Path) -> None:
    paths = ch.Paths(credentials=store.path, docker_config=tmp_path / ".docker" / "config.json")
    paths.docker_config.parent.mkdir()
    original = {
        "auths": {"ghcr.io": {"auth": "eDp5"}},
        "credsStore": "desktop",
        "credHelpers": {"gcr.io": "gcloud"},
        "proxies": {"default": {}},
    }
    paths.docker_config.write_text(json.dumps(original))
    os.chmod(paths.docker_config, 0o644)
    out = io.StringIO()
    ch.cmd_configure_docker(store, ["atcr.io", "https://buoy.cr"], paths, out=out)
    doc = json.loads(paths.docker_config.read_text())
    assert doc == {**original, "credHelpers": {"gcr.io": "gcloud", "atcr.io": "atcr", "buoy.cr": "atcr"}}
    assert stat.S_IMODE(paths.docker_config.stat().st_mode) == 0o644  # the user's choice is kept
    ch.cmd_configure_docker(store, ["atcr.io"], paths, out=out)
    assert "already" in out.getvalue()


def test_configure_docker_new_file_and_bad_json(store: ch.CredentialStore, tmp_path: Path) -> None:
    paths = ch.Paths(credentials=store.path, docker_config=tmp_path / "d" / "config.json")
    store.put("127.0.0.1:5000", "http://127.0.0.1:5000", ALICE)
    ch.cmd_configure_docker(store, [], paths, out=io.StringIO())
    assert json.loads(paths.docker_config.read_text()) == {"credHelpers": {"127.0.0.1:5000": "atcr"}}
    assert stat.S_IMODE(paths.docker_config.stat().st_mode) == 0o600
    paths.docker_config.write_text("{broken")
    with pytest.raises(ch.HelperError, match="not valid JSON"):
        ch.cmd_configure_docker(store, ["atcr.io"], paths, out=io.StringIO())
    assert paths.docker_config.read_text() == "{broken"


def test_main_version_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        ch.main(["version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("docker-credential-atcr ")
    with pytest.raises(SystemExit) as info:
        ch.main([])
    assert info.value.code == 0 and "configure-docker" in capsys.readouterr().out


def test_main_reports_errors_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    (tmp_path / ".config" / "atcr").mkdir(parents=True)
    (tmp_path / ".config" / "atcr" / "credentials.json").write_text("{nope")
    with pytest.raises(SystemExit) as info:
        ch.main(["status", "--offline"])
    assert info.value.code == 1 and "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("answer", "shown", "code"),
    [
        (httpx.Response(200, json={"token": "t"}), "[valid]", 0),
        (httpx.Response(401, json={"errors": [{"code": "UNAUTHORIZED", "message": "bad password"}]}),
         "[invalid: bad password]", 1),
        (None, "[unreachable: could not ask the registry]", 1),
    ],
)
def test_status_exit_status(store: ch.CredentialStore, answer: httpx.Response | None, shown: str, code: int) -> None:
    store.put("atcr.io", "https://atcr.io", ch.Account(key="alice.test", secret="app-pass", username="alice.test"))

    def registry(request: httpx.Request) -> httpx.Response:
        if answer is None:
            raise httpx.ConnectError("refused")
        return answer

    out = io.StringIO()
    http = httpx.Client(transport=httpx.MockTransport(registry))
    assert ch.cmd_status(store, None, out=out, offline=False, http=http) == code
    assert f"* alice.test  {shown}" in out.getvalue()
    assert ("Not working: alice.test on atcr.io." in out.getvalue()) == bool(code)
    assert ch.cmd_status(store, None, out=io.StringIO(), offline=True) == 0  # nothing checked
