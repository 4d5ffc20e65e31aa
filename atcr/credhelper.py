"""`docker-credential-atcr`: Docker's credential-helper protocol for ATCR registries, plus login.

Docker, podman, skopeo and oras run `docker-credential-atcr get` with the registry on stdin
whenever they need credentials; `get` must answer at once and never ask anything, so signing
in is a separate, interactive command (`login`, the RFC 8628 device flow against the AppView:
the user approves in a browser, the helper receives a device secret). Several accounts per
registry and several registries are kept; `get` picks the account an image reference names
(`host/<handle-or-did>/repo`, read from the calling process's command line) and otherwise the
active one (ATCR-NOTES.md §9).

Credentials live in one JSON file (mode 0600, directory 0700):
``$XDG_CONFIG_HOME/atcr/credentials.json`` (``~/.config/atcr/credentials.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import select
import sys
import time
import webbrowser
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx

from atcr import __version__

PROG = "docker-credential-atcr"
HELPER_NAME = "atcr"  # what goes in Docker's credHelpers: docker runs docker-credential-<name>
CLIENT_ID = PROG
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
NOT_FOUND = "credentials not found in native keychain"  # Docker's clients match this text
STDIN_TIMEOUT = 0.75  # plus interpreter start-up, `get` gives up within a second
HTTP_TIMEOUT = 15.0
DEFAULT_REGISTRY = "atcr.io"


class HelperError(Exception):
    """A failure to report on stderr (exit status 1); the message says what to do next."""


# --- paths and the credentials file ------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    credentials: Path
    docker_config: Path

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Paths:
        home = Path(environ.get("HOME") or Path.home())
        explicit = environ.get("ATCR_CREDENTIALS_FILE")
        if explicit:
            creds = Path(explicit).expanduser()
        else:
            base = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
            creds = base / "atcr" / "credentials.json"
        docker_dir = Path(environ["DOCKER_CONFIG"]).expanduser() if environ.get("DOCKER_CONFIG") else home / ".docker"
        return cls(credentials=creds, docker_config=docker_dir / "config.json")


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace `path` atomically; the new file is created with `mode` (never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def registry_key(server: str) -> str:
    """`https://Atcr.io/v2/` -> `atcr.io`: how Docker names a registry, used as the store key."""
    value = server.strip()
    if "://" not in value:
        value = "//" + value
    parts = urlsplit(value)
    return (parts.netloc or parts.path).lower().rstrip("/")


def _is_loopback(host: str) -> bool:
    name = urlsplit("//" + host).hostname or ""
    return name in ("localhost", "127.0.0.1", "::1") or name.endswith(".localhost")


def registry_url(server: str) -> str:
    """The AppView base URL for a registry: as given, else https (http for loopback hosts)."""
    value = server.strip().rstrip("/")
    if "://" in value:
        parts = urlsplit(value)
        return f"{parts.scheme}://{parts.netloc}"
    host = registry_key(value)
    return ("http://" if _is_loopback(host) else "https://") + host


@dataclass
class Account:
    key: str  # DID for device logins, the username for `docker login` passwords
    secret: str
    did: str | None = None
    handle: str | None = None
    username: str | None = None
    device_id: str | None = None
    created: str = ""

    @property
    def login_name(self) -> str:
        """The Basic-auth user name: the handle (Basic forbids ':' in user names, and DIDs have them)."""
        return self.handle or self.username or self.did or self.key

    @property
    def label(self) -> str:
        if self.handle and self.did:
            return f"{self.handle} ({self.did})"
        return self.handle or self.did or self.username or self.key

    def matches(self, identity: str) -> bool:
        ident = identity.lower()
        return ident in {x.lower() for x in (self.did, self.handle, self.username, self.key) if x}

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "key"}


@dataclass
class Registry:
    key: str
    url: str
    accounts: dict[str, Account]
    active: str | None = None

    def current(self) -> Account | None:
        if self.active and self.active in self.accounts:
            return self.accounts[self.active]
        return next(iter(self.accounts.values()), None)

    def remove(self, key: str) -> Account | None:
        gone = self.accounts.pop(key, None)
        if self.active == key or self.active not in self.accounts:
            self.active = next(iter(self.accounts), None)
        return gone


class CredentialStore:
    """The credentials file: read whole, changed, written back atomically with mode 0600."""

    VERSION = 1

    def __init__(self, path: Path) -> None:
        self.path = path
        self.registries: dict[str, Registry] = {}
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            doc = json.loads(raw)
        except ValueError:
            raise HelperError(f"{self.path} is not valid JSON; fix or remove it") from None
        for key, reg in (doc.get("registries") or {}).items():
            accounts = {}
            for akey, acc in (reg.get("accounts") or {}).items():
                fields = {k: acc.get(k) for k in ("did", "handle", "username", "device_id")}
                accounts[akey] = Account(
                    key=akey, secret=str(acc.get("secret", "")), created=str(acc.get("created", "")), **fields
                )
            self.registries[key] = Registry(
                key=key, url=str(reg.get("url") or registry_url(key)), accounts=accounts, active=reg.get("active")
            )

    def save(self) -> None:
        doc = {
            "version": self.VERSION,
            "registries": {
                key: {
                    "url": reg.url,
                    "active": reg.active,
                    "accounts": {a.key: a.to_json() for a in reg.accounts.values()},
                }
                for key, reg in self.registries.items()
                if reg.accounts
            },
        }
        write_private(self.path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    def registry(self, server: str, *, create_url: str | None = None) -> Registry | None:
        key = registry_key(server)
        reg = self.registries.get(key)
        if reg is None and create_url is not None:
            reg = self.registries[key] = Registry(key=key, url=create_url, accounts={})
        return reg

    def put(self, server: str, url: str, account: Account, *, activate: bool = True) -> None:
        reg = self.registry(server, create_url=url)
        assert reg is not None
        reg.url = url
        reg.accounts[account.key] = account
        if activate or reg.active is None:
            reg.active = account.key


# --- choosing the account for `get` ------------------------------------------------------------


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def caller_commands(levels: int = 2) -> list[list[str]]:
    """Command lines of the process that ran us and its parent (Linux `/proc`; empty elsewhere)."""
    out = []
    pid: int | None = os.getppid()
    for _ in range(levels):
        if not pid or pid <= 1:
            break
        argv = _cmdline(pid)
        if argv:
            out.append(argv)
        pid = _parent_of(pid)
    return out


def identities_in(argv: Iterable[str], host: str) -> list[str]:
    """Identity parts of image references on `host` in a command line (`host/<identity>/repo...`)."""
    found = []
    prefix = host.lower() + "/"
    for arg in argv:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        for scheme in ("docker://", "oci://", "https://", "http://"):
            value = value.removeprefix(scheme)
        if not value.lower().startswith(prefix):
            continue
        ident = value[len(prefix) :].split("/", 1)[0]
        if ident and ident not in found:
            found.append(ident)
    return found


def pick_account(reg: Registry, commands: Sequence[Sequence[str]]) -> Account | None:
    for argv in commands:
        for ident in identities_in(argv, reg.key):
            for acc in reg.accounts.values():
                if acc.matches(ident):
                    return acc
    return reg.current()


# --- the Docker protocol -----------------------------------------------------------------------


def read_stdin(stream: IO[str], timeout: float = STDIN_TIMEOUT) -> str:
    """All of stdin, or HelperError when nothing arrives in `timeout` (never hang, §10.1)."""
    if stream.isatty():
        raise HelperError(
            f"`{PROG} get/store/erase` read from stdin (Docker calls them); to sign in run `{PROG} login`"
        )
    with contextlib.suppress(ValueError, OSError, AttributeError):
        ready, _, _ = select.select([stream], [], [], timeout)
        if not ready:
            raise HelperError(f"nothing on stdin within {timeout:g}s (expected the registry server URL)")
    return stream.read(1 << 20)


def cmd_get(
    store: CredentialStore,
    stdin: IO[str],
    out: IO[str],
    err: IO[str],
    commands: Callable[[], list[list[str]]] = caller_commands,
) -> int:
    server = read_stdin(stdin).strip()
    if not server:
        raise HelperError("no registry server URL on stdin")
    reg = store.registry(server)
    account = pick_account(reg, commands()) if reg is not None else None
    if account is None or not account.secret:
        # Docker's protocol answer, and nothing on stderr: clients ask on every anonymous pull too
        # (after `logout`, or for public images), where "not signed in" is noise. A push that
        # needs an account is answered by the registry with a hint to sign in.
        print(NOT_FOUND, file=out)
        return 1
    json.dump({"ServerURL": server, "Username": account.login_name, "Secret": account.secret}, out)
    out.write("\n")
    return 0


def cmd_store(store: CredentialStore, stdin: IO[str]) -> int:
    try:
        doc = json.loads(read_stdin(stdin))
        server, username, secret = str(doc["ServerURL"]), str(doc["Username"]), str(doc["Secret"])
    except (ValueError, KeyError, TypeError):
        raise HelperError('store expects {"ServerURL","Username","Secret"} on stdin') from None
    if not server or not secret:
        raise HelperError("store needs a ServerURL and a Secret")
    did = username if username.startswith("did:") else None
    account = Account(key=username, secret=secret, did=did, username=None if did else username, created=_now())
    store.put(server, registry_url(server), account)
    store.save()
    return 0


def cmd_erase(store: CredentialStore, stdin: IO[str]) -> int:
    server = read_stdin(stdin).strip()
    reg = store.registry(server)
    current = reg.current() if reg is not None else None
    if reg is None or current is None:
        raise HelperError(NOT_FOUND)
    reg.remove(current.key)
    store.save()
    return 0


def cmd_list(store: CredentialStore, out: IO[str]) -> int:
    listing = {}
    for reg in store.registries.values():
        current = reg.current()
        if current is not None:
            listing[reg.key] = current.login_name
    json.dump(listing, out)
    out.write("\n")
    return 0


# --- user commands -----------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _only_registry(store: CredentialStore, given: str | None) -> Registry:
    if given:
        reg = store.registry(given)
        if reg is None or not reg.accounts:
            raise HelperError(f"not signed in to {registry_key(given)}")
        return reg
    regs = [r for r in store.registries.values() if r.accounts]
    if not regs:
        raise HelperError(f"not signed in anywhere: run `{PROG} login <registry>`")
    if len(regs) > 1:
        raise HelperError("several registries are configured; name one: " + ", ".join(r.key for r in regs))
    return regs[0]


class Progress:
    """A one-line spinner on a terminal; sparse lines otherwise (CI logs)."""

    FRAMES = "|/-\\"

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._start = time.monotonic()
        self._n = 0
        self._last_line = 0.0

    def tick(self, note: str = "") -> None:
        elapsed = time.monotonic() - self._start
        self._n += 1
        if self._tty:
            frame = self.FRAMES[self._n % len(self.FRAMES)]
            self._stream.write(f"\r{frame} Waiting for approval in the browser... {elapsed:4.0f}s {note}   ")
            self._stream.flush()
        elif elapsed - self._last_line >= 30 or self._n == 1:
            self._last_line = elapsed
            self._stream.write(f"Waiting for approval... ({elapsed:.0f}s)\n")
            self._stream.flush()

    def done(self) -> None:
        if self._tty:
            self._stream.write("\r" + " " * 72 + "\r")
            self._stream.flush()


def _can_open_browser(environ: Mapping[str, str]) -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(environ.get("DISPLAY") or environ.get("WAYLAND_DISPLAY") or environ.get("BROWSER"))


def _error_of(resp: httpx.Response) -> tuple[str, str]:
    try:
        body = resp.json()
    except ValueError:
        return f"http_{resp.status_code}", resp.text[:200]
    if isinstance(body, dict):
        return str(body.get("error") or f"http_{resp.status_code}"), str(body.get("error_description") or "")
    return f"http_{resp.status_code}", ""


def cmd_login(
    store: CredentialStore,
    registry: str,
    *,
    err: IO[str],
    environ: Mapping[str, str],
    open_browser: bool = True,
    device_name: str | None = None,
    http: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    open_url: Callable[[str], bool] = webbrowser.open,
) -> int:
    url = registry_url(registry)
    key = registry_key(registry)
    client = http or httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False)
    name = device_name or f"{PROG} on {platform.node() or 'unknown host'}"
    try:
        try:
            resp = client.post(
                f"{url}/auth/device/code",
                data={"client_id": CLIENT_ID, "client_name": name},
                headers={"User-Agent": f"{PROG}/{__version__}"},
            )
        except httpx.HTTPError as exc:
            raise HelperError(f"cannot reach {url}: {type(exc).__name__}") from None
        if resp.status_code != 200:
            code, desc = _error_of(resp)
            raise HelperError(f"{url} refused the device login ({code}): {desc}")
        auth = resp.json()
        page, code = str(auth["verification_uri"]), str(auth["user_code"])
        complete = str(auth.get("verification_uri_complete") or "")
        if complete:
            # RFC 8628 §3.3.1: the URL that carries the code, and the code to compare with the page's.
            print(
                f"To sign in to {key}, open this page and approve:\n\n    {complete}\n\n"
                f"It shows the code {code}; check that it is the same.\n"
                f"(Or open {page} and enter the code.)\n",
                file=err,
            )
        else:
            print(f"To sign in to {key}, open:\n\n    {page}\n\nand enter the code:\n\n    {code}\n", file=err)
        if open_browser and _can_open_browser(environ):
            with contextlib.suppress(webbrowser.Error, OSError):
                if open_url(complete or page):
                    print("(A browser window was opened for you.)", file=err)
        interval = float(auth.get("interval") or 5)
        deadline = time.monotonic() + float(auth.get("expires_in") or 600)
        progress = Progress(err)
        while True:
            if time.monotonic() > deadline:
                progress.done()
                raise HelperError("the code expired before it was approved; run login again")
            sleep(interval)
            progress.tick()
            try:
                resp = client.post(
                    f"{url}/auth/device/token",
                    data={"grant_type": DEVICE_GRANT, "device_code": auth["device_code"], "client_id": CLIENT_ID},
                )
            except httpx.HTTPError:
                continue  # a blip: keep polling until the code expires
            if resp.status_code == 200:
                break
            code, desc = _error_of(resp)
            if code == "authorization_pending":
                continue
            if code == "slow_down":
                interval += 5
                continue
            progress.done()
            if code == "access_denied":
                raise HelperError("the request was denied in the browser")
            if code == "expired_token":
                raise HelperError("the code expired before it was approved; run login again")
            raise HelperError(f"device login failed ({code}): {desc}")
        progress.done()
    finally:
        if http is None:
            client.close()
    grant = resp.json()
    did = str(grant["did"])
    account = Account(
        key=did,
        secret=str(grant.get("device_secret") or grant["access_token"]),
        did=did,
        handle=grant.get("handle"),
        device_id=grant.get("device_id"),
        created=_now(),
    )
    store.put(key, url, account)
    store.save()
    print(f"Signed in to {key} as {account.label}.", file=err)
    if not _docker_configured(environ, key):
        print(f"To let docker use it, run: {PROG} configure-docker {key}", file=err)
    return 0


def _docker_configured(environ: Mapping[str, str], key: str) -> bool:
    try:
        doc = json.loads(Paths.from_env(environ).docker_config.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and (doc.get("credHelpers") or {}).get(key) == HELPER_NAME


def cmd_logout(
    store: CredentialStore,
    registry: str | None,
    account: str | None,
    *,
    everyone: bool,
    err: IO[str],
    http: httpx.Client | None = None,
) -> int:
    reg = _only_registry(store, registry)
    if everyone:
        targets = list(reg.accounts.values())
    else:
        chosen = next((a for a in reg.accounts.values() if a.matches(account)), None) if account else reg.current()
        if chosen is None:
            raise HelperError(f"no account {account!r} on {reg.key}")
        targets = [chosen]
    client = http or httpx.Client(timeout=HTTP_TIMEOUT)
    try:
        for acc in targets:
            if acc.secret.startswith("atcr_") and acc.did:
                try:  # tell the AppView, so the secret dies there too
                    client.post(f"{reg.url}/auth/device/revoke", auth=(acc.did, acc.secret))
                except httpx.HTTPError:
                    print(f"(could not reach {reg.url}; the device stays listed in your settings there)", file=err)
            reg.remove(acc.key)
            print(f"Signed out {acc.label} from {reg.key}.", file=err)
    finally:
        if http is None:
            client.close()
    store.save()
    return 0


def cmd_status(
    store: CredentialStore, registry: str | None, *, out: IO[str], offline: bool, http: httpx.Client | None = None
) -> int:
    regs = [store.registry(registry)] if registry else list(store.registries.values())
    regs = [r for r in regs if r is not None and r.accounts]
    if not regs:
        print(f"Not signed in. Run `{PROG} login <registry>`.", file=out)
        return 1
    client = http or httpx.Client(timeout=HTTP_TIMEOUT)
    broken: list[str] = []
    try:
        for reg in regs:
            print(f"{reg.key} ({reg.url})", file=out)
            current = reg.current()
            for acc in reg.accounts.values():
                mark = "*" if current is not None and acc.key == current.key else " "
                state = ""
                if not offline:
                    ok, state = _check(client, reg, acc)
                    state = f"  [{state}]"
                    if not ok:
                        broken.append(f"{acc.label} on {reg.key}")
                print(f"  {mark} {acc.label}{state}", file=out)
    finally:
        if http is None:
            client.close()
    if broken:
        print(f"\nNot working: {', '.join(broken)}.", file=out)
        return 1
    return 0


def _check(client: httpx.Client, reg: Registry, acc: Account) -> tuple[bool, str]:
    """(works, what to show): asks the registry for a token with the account's secret."""
    try:
        resp = client.get(f"{reg.url}/auth/token", params={"service": reg.key}, auth=(acc.login_name, acc.secret))
    except httpx.HTTPError:
        return False, "unreachable: could not ask the registry"
    if resp.status_code == 200:
        return True, "valid"
    try:
        errors = resp.json().get("errors") or [{}]
        message = str(errors[0].get("message") or "")
    except (ValueError, AttributeError, IndexError):
        message = ""
    if resp.status_code == 401 and acc.secret.startswith("atcr_") and "revoked" in message:
        return False, f"revoked: this device was signed out; sign in again with `{PROG} login {reg.key}`"
    return False, f"invalid: {message}" if message else f"invalid ({resp.status_code})"


def cmd_switch(
    store: CredentialStore, registry: str | None, account: str | None, *, out: IO[str], stdin: IO[str]
) -> int:
    reg = _only_registry(store, registry)
    accounts = list(reg.accounts.values())
    current = reg.current()
    if account:
        chosen = next((a for a in accounts if a.matches(account)), None)
        if chosen is None:
            raise HelperError(f"no account {account!r} on {reg.key}; see `{PROG} status`")
    elif len(accounts) == 1:
        chosen = accounts[0]
    elif len(accounts) == 2:
        chosen = accounts[1] if current is not None and accounts[0].key == current.key else accounts[0]
    elif stdin.isatty():
        for i, acc in enumerate(accounts, 1):
            print(f"  {i}) {acc.label}{'  (active)' if current and acc.key == current.key else ''}", file=out)
        print("Switch to which account? ", end="", file=out, flush=True)
        answer = stdin.readline().strip()
        if not answer.isdigit() or not 1 <= int(answer) <= len(accounts):
            raise HelperError("no account chosen")
        chosen = accounts[int(answer) - 1]
    else:
        raise HelperError("several accounts: name one: " + ", ".join(a.label for a in accounts))
    reg.active = chosen.key
    store.save()
    print(f"Active account on {reg.key}: {chosen.label}", file=out)
    return 0


def cmd_configure_docker(store: CredentialStore, registries: Sequence[str], paths: Paths, *, out: IO[str]) -> int:
    keys = [registry_key(r) for r in registries] or [r.key for r in store.registries.values()] or [DEFAULT_REGISTRY]
    path = paths.docker_config
    mode = 0o600
    try:
        raw = path.read_text()
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        raw = ""
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError:
        raise HelperError(f"{path} is not valid JSON; not touching it") from None
    if not isinstance(doc, dict):
        raise HelperError(f"{path} is not a JSON object; not touching it")
    helpers = doc.get("credHelpers")
    if helpers is None:
        helpers = doc["credHelpers"] = {}
    if not isinstance(helpers, dict):
        raise HelperError(f"{path}: credHelpers is not an object; not touching it")
    changed = [k for k in keys if helpers.get(k) != HELPER_NAME]
    for k in changed:
        helpers[k] = HELPER_NAME
    if changed:
        write_private(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=mode)
        print(f"Docker will use {PROG} for: {', '.join(changed)} ({path})", file=out)
    else:
        print(f"Docker already uses {PROG} for: {', '.join(keys)}", file=out)
    return 0


# --- entry point -------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Sign in to ATCR registries and hand their credentials to docker, podman, skopeo and oras.",
        epilog=f"Start with:\n  {PROG} login <registry>\n  {PROG} configure-docker <registry>",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    p = sub.add_parser("login", help="sign in with your ATProto account (opens a browser to approve)")
    p.add_argument("registry", nargs="?", default=None, help=f"registry host or URL (default {DEFAULT_REGISTRY})")
    p.add_argument("--no-browser", action="store_true", help="only print the URL and code")
    p.add_argument("--device-name", default=None, help="how this device is listed in your settings")
    p = sub.add_parser("logout", help="forget (and revoke) an account")
    p.add_argument("registry", nargs="?")
    p.add_argument("--account", help="handle or DID (default: the active one)")
    p.add_argument("--all", action="store_true", help="every account of the registry")
    p = sub.add_parser(
        "status",
        help="list accounts (* = active) and check them; exit status 1 when one does not work",
        description="List the accounts (* = active) and ask each registry whether they still work. "
        "Exit status 1 when an account was revoked, is refused, or its registry cannot be reached.",
    )
    p.add_argument("registry", nargs="?")
    p.add_argument("--offline", action="store_true", help="do not ask the registry whether they still work")
    p = sub.add_parser("switch", help="change the active account")
    p.add_argument("registry", nargs="?")
    p.add_argument("account", nargs="?")
    p = sub.add_parser("configure-docker", help="add credHelpers entries to ~/.docker/config.json")
    p.add_argument("registries", nargs="*")
    sub.add_parser("version", help="print the version")
    from atcr import verifycmd

    p = sub.add_parser(
        "verify",
        help="prove who published an image, from the publisher's ATProto repository",
        description=verifycmd.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verifycmd.add_arguments(p)
    for verb, text in (
        ("get", "Docker protocol: print credentials for the server URL on stdin"),
        ("store", "Docker protocol: store credentials given as JSON on stdin"),
        ("erase", "Docker protocol: forget credentials for the server URL on stdin"),
        ("list", "Docker protocol: print server URLs and user names"),
    ):
        sub.add_parser(verb, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = make_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    environ = os.environ
    out, err, stdin = sys.stdout, sys.stderr, sys.stdin
    if args.command is None:
        make_parser().print_help()
        raise SystemExit(0)
    if args.command == "version":
        print(f"{PROG} {__version__}")
        raise SystemExit(0)
    if args.command == "verify":
        from atcr import verifycmd

        raise SystemExit(verifycmd.run(args, environ, out, err))
    paths = Paths.from_env(environ)
    try:
        store = CredentialStore(paths.credentials)
        if args.command == "get":
            code = cmd_get(store, stdin, out, err)
        elif args.command == "store":
            code = cmd_store(store, stdin)
        elif args.command == "erase":
            code = cmd_erase(store, stdin)
        elif args.command == "list":
            code = cmd_list(store, out)
        elif args.command == "login":
            code = cmd_login(
                store,
                args.registry or DEFAULT_REGISTRY,
                err=err,
                environ=environ,
                open_browser=not args.no_browser,
                device_name=args.device_name,
            )
        elif args.command == "logout":
            code = cmd_logout(store, args.registry, args.account, everyone=args.all, err=err)
        elif args.command == "status":
            code = cmd_status(store, args.registry, out=out, offline=args.offline)
        elif args.command == "switch":
            code = cmd_switch(store, args.registry, args.account, out=out, stdin=stdin)
        else:
            code = cmd_configure_docker(store, args.registries, paths, out=out)
    except HelperError as exc:
        print(f"{PROG}: {exc}", file=err)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    raise SystemExit(code)


if __name__ == "__main__":
    main()
