"""Security: namespaces, private holds, registry and service tokens, CSRF, session fixation,
the SSRF guard, and secrets kept out of the logs. Against the running processes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from joserfc import jwt
from joserfc.jwk import ECKey

from appview.auth.device import parse_secret
from appview.auth.sessions import SessionCipher
from atcr.identity import did_web_for_url
from atcr.keys import load_or_create_ec_key, load_or_create_secret
from tests.reliability.stack import (
    OCI_MANIFEST,
    RelStack,
    User,
    bearer,
    digest_of,
    jwt_claims,
    push_image,
    token,
)
from tests.support.faultproxy import FaultProxy, Req, Rule, wait_until
from tests.support.services import free_port
from tests.support.stack import Service, start_service
from tests.support.ui_stack import csrf_of, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _code(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


# --- namespaces -----------------------------------------------------------------------------


def test_namespace_isolation_across_replicas(rel: RelStack) -> None:
    alice, mallory = rel.user("alice"), rel.user("mallory")
    digest, _, _ = push_image(rel.a.url, rel.service, alice, "app", "v1")
    victim = f"{alice.handle}/app"
    with httpx.Client(timeout=30) as client:
        # Mallory asks for push on Alice's repository: she gets pull only, and pushes are refused.
        tok = token(rel.a.url, rel.service, mallory, f"repository:{victim}:pull,push,delete")
        access = jwt_claims(tok)["access"]
        assert access == [{"type": "repository", "name": victim, "actions": ["pull"]}]
        for replica in rel.replicas:
            r = client.post(f"{replica.url}/v2/{victim}/blobs/uploads/", headers=bearer(tok))
            assert (r.status_code, _code(r)) == (403, "DENIED"), r.text
            r = client.put(f"{replica.url}/v2/{victim}/manifests/v1", content=b"{}",
                           headers={**bearer(tok), "Content-Type": OCI_MANIFEST})
            assert r.status_code == 403, r.text
            r = client.delete(f"{replica.url}/v2/{victim}/manifests/{digest}", headers=bearer(tok))
            assert r.status_code == 403, r.text
        # Alice's upload session cannot be continued by Mallory, not even through her own name.
        alice_tok = token(rel.b.url, rel.service, alice, f"repository:{victim}:pull,push")
        start = client.post(f"{rel.b.url}/v2/{victim}/blobs/uploads/", headers=bearer(alice_tok))
        upload_id = start.headers["Docker-Upload-UUID"]
        own = f"{mallory.handle}/app"
        mine = token(rel.a.url, rel.service, mallory, f"repository:{own}:pull,push")
        r = client.patch(f"{rel.a.url}/v2/{own}/blobs/uploads/{upload_id}", content=b"evil", headers=bearer(mine))
        assert (r.status_code, _code(r)) == (404, "BLOB_UPLOAD_UNKNOWN"), r.text
        r = client.put(f"{rel.a.url}/v2/{victim}/blobs/uploads/{upload_id}", params={"digest": digest_of(b"evil")},
                       content=b"evil", headers=bearer(mine))
        assert r.status_code == 403, r.text
        # Alice's tag is untouched.
        anon = token(rel.a.url, rel.service, None, f"repository:{victim}:pull")
        r = client.get(f"{rel.a.url}/v2/{victim}/manifests/v1", headers={**bearer(anon), "Accept": OCI_MANIFEST})
        assert r.headers["Docker-Content-Digest"] == digest


# --- registry tokens ------------------------------------------------------------------------


def _mint(key: ec.EllipticCurvePrivateKey | None, claims: dict[str, object], alg: str = "ES256",
          secret: bytes | None = None) -> str:
    if alg == "none":
        head = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        return (head + b"." + body + b".").decode()
    if alg == "HS256":  # the classic confusion: the public key used as an HMAC secret
        assert secret is not None
        head = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        mac = hmac.new(secret, head + b"." + body, hashlib.sha256).digest()
        return (head + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    assert key is not None
    return jwt.encode({"alg": alg, "typ": "JWT"}, claims, ECKey.import_key(key))


def test_registry_token_signature_audience_expiry_and_scope(rel: RelStack, rel_user: User) -> None:
    name = f"{rel_user.handle}/app"
    push_image(rel.a.url, rel.service, rel_user, "app", "v1")
    other = rel.user("other")
    key = load_or_create_ec_key(rel.work / "shared-keys" / "token-signing.pem")
    now = int(time.time())
    good = {
        "iss": rel.base_url, "sub": rel_user.did, "aud": rel.service, "exp": now + 300, "nbf": now - 5, "iat": now,
        "jti": "x", "access": [{"type": "repository", "name": name, "actions": ["pull", "push"]}],
        "auth_method": "app_password",
    }
    public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signed = _mint(key, good)
    tampered_body = base64.urlsafe_b64encode(json.dumps({**good, "sub": other.did}).encode()).rstrip(b"=").decode()
    bad = {
        "other key": _mint(ec.generate_private_key(ec.SECP256R1()), good),
        "wrong audience": _mint(key, {**good, "aud": "registry.example.com"}),
        "wrong issuer": _mint(key, {**good, "iss": "https://evil.example"}),
        "expired": _mint(key, {**good, "exp": now - 1}),
        "not yet valid": _mint(key, {**good, "nbf": now + 600}),
        "alg none": _mint(None, good, alg="none"),
        "HS256 keyed with the public key": _mint(None, good, alg="HS256", secret=public_pem),
        "tampered claims": f"{signed.split('.')[0]}.{tampered_body}.{signed.split('.')[2]}",
    }
    with httpx.Client(timeout=30) as client:
        ok = _mint(key, good)
        for replica in rel.replicas:
            assert client.get(f"{replica.url}/v2/{name}/tags/list", headers=bearer(ok)).status_code == 200
        for why, tok in bad.items():
            for replica in rel.replicas:
                r = client.get(f"{replica.url}/v2/{name}/tags/list", headers=bearer(tok))
                assert (r.status_code, _code(r)) == (401, "UNAUTHORIZED"), (why, r.text)
                assert 'error="invalid_token"' in r.headers["WWW-Authenticate"], why
        # Scope: a pull token cannot push; a token for one repository does not open another.
        pull_only = _mint(key, {**good, "access": [{"type": "repository", "name": name, "actions": ["pull"]}]})
        r = client.post(f"{rel.a.url}/v2/{name}/blobs/uploads/", headers=bearer(pull_only))
        assert r.status_code in (401, 403) and r.status_code != 201
        r = client.get(f"{rel.a.url}/v2/{rel_user.handle}/other/tags/list", headers=bearer(ok))
        assert r.status_code == 401 and "insufficient_scope" not in r.text or r.status_code in (401, 403)
        # A validly signed token whose subject is someone else still cannot push into this namespace.
        forged = _mint(key, {**good, "sub": other.did})
        r = client.post(f"{rel.b.url}/v2/{name}/blobs/uploads/", headers=bearer(forged))
        assert (r.status_code, _code(r)) == (403, "DENIED"), r.text
    print(f"\n[figure] {len(bad)} forged/expired/misdirected registry tokens x 2 replicas: all 401")


# --- service tokens at the hold ---------------------------------------------------------------


def test_service_token_replay_audience_and_method(rel: RelStack, rel_user: User) -> None:
    pds = rel.network.pds_url
    access = rel_user.account.access_jwt

    def service_token(aud: str, lxm: str) -> str:
        r = httpx.get(f"{pds}/xrpc/com.atproto.server.getServiceAuth", params={"aud": aud, "lxm": lxm},
                      headers={"Authorization": f"Bearer {access}"}, timeout=30)
        assert r.status_code == 200, r.text
        return str(r.json()["token"])

    url = f"{rel.hold.url}/xrpc/io.atcr.hold.initiateUpload"
    with httpx.Client(timeout=30) as client:
        tok = service_token(rel.hold_did, "io.atcr.hold.initiateUpload")
        first = client.post(url, json={}, headers=bearer(tok))
        assert first.status_code == 200, first.text
        replay = client.post(url, json={}, headers=bearer(tok))
        assert (replay.status_code, replay.json()["error"]) == (401, "JwtReplayed"), replay.text
        wrong_method = service_token(rel.hold_did, "io.atcr.hold.completeUpload")
        r = client.post(url, json={}, headers=bearer(wrong_method))
        assert (r.status_code, r.json()["error"]) == (401, "BadJwtLexiconMethod"), r.text
        elsewhere = service_token(did_web_for_url("http://localhost:1"), "io.atcr.hold.initiateUpload")
        r = client.post(url, json={}, headers=bearer(elsewhere))
        assert (r.status_code, r.json()["error"]) == (401, "BadJwtAudience"), r.text
        head, body, sig = service_token(rel.hold_did, "io.atcr.hold.initiateUpload").split(".")
        r = client.post(url, json={}, headers=bearer(f"{head}.{body}.{sig[::-1]}"))
        assert r.status_code == 401, r.text
    print("\n[figure] service tokens: replay, wrong lxm, wrong aud, bad signature -> 401 "
          "(JwtReplayed, BadJwtLexiconMethod, BadJwtAudience, BadJwtSignature)")


# --- a private hold -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_hold(rel: RelStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, str, User]]:
    work = tmp_path_factory.mktemp("private-hold")
    captain = rel.user("captain")
    port = free_port()
    env = {
        "VALKEY_URL": rel.valkey_url, "ATCR_ALLOW_PRIVATE_NETWORKS": "true", "ATCR_LOG_LEVEL": "debug",
        "ATCR_PLC_URL": rel.network.plc_url, "ATCR_HANDLE_RESOLVER_URL": rel.network.pds_url,
        "HOLD_HTTP_ADDR": f"127.0.0.1:{port}", "HOLD_PUBLIC_URL": f"http://localhost:{port}",
        "HOLD_PUBLIC": "false", "HOLD_ALLOW_ALL_CREW": "false", "HOLD_OWNER": captain.did,
        "HOLD_DATA_DIR": str(work / "hold"), "STORAGE_DRIVER": "filesystem",
        "STORAGE_ROOT_DIR": str(work / "hold" / "blobs"),
    }
    hold = start_service("private-hold", "hold", env, work, f"http://127.0.0.1:{port}")
    try:
        yield hold, did_web_for_url(f"http://localhost:{port}"), captain
    finally:
        hold.stop()


def test_private_hold_reads(rel: RelStack, private_hold: tuple[Service, str, User]) -> None:
    hold, hold_did, captain = private_hold
    # The captain stores images on the private hold (their profile's defaultHold).
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    r = httpx.post(f"{rel.network.pds_url}/xrpc/com.atproto.repo.putRecord", headers=captain.account.auth_headers,
                   json={"repo": captain.did, "collection": "io.atcr.sailor.profile", "rkey": "self",
                         "record": {"$type": "io.atcr.sailor.profile", "defaultHold": hold_did, "createdAt": now}},
                   timeout=30)
    assert r.status_code == 200, r.text
    digest, raw, blobs = push_image(rel.a.url, rel.service, captain, "secret", "v1")
    name = f"{captain.handle}/secret"
    stranger = rel.user("stranger")
    with httpx.Client(timeout=30) as client:
        anon = token(rel.b.url, rel.service, None, f"repository:{name}:pull")
        strangers = token(rel.b.url, rel.service, stranger, f"repository:{name}:pull")
        captains = token(rel.b.url, rel.service, captain, f"repository:{name}:pull")
        # Manifests are public records in the captain's PDS; the layers are not.
        r = client.get(f"{rel.b.url}/v2/{name}/manifests/v1", headers={**bearer(anon), "Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.content == raw
        # Anonymous gets 401 with a challenge (signing in may help); a signed-in stranger 403.
        for who, tok, answer in (("anonymous", anon, (401, "UNAUTHORIZED")), ("not crew", strangers, (403, "DENIED"))):
            for replica in rel.replicas:
                r = client.get(f"{replica.url}/v2/{name}/blobs/{blobs[1]}", headers=bearer(tok))
                assert (r.status_code, _code(r)) == answer, (who, r.text)
                if answer[0] == 401:
                    assert r.headers["WWW-Authenticate"].startswith("Bearer "), r.headers
        r = client.get(f"{rel.a.url}/v2/{name}/blobs/{blobs[1]}", headers=bearer(captains))
        assert r.status_code == 307, r.text
        assert digest_of(client.get(r.headers["Location"]).content) == blobs[1]
        # Straight at the hold: no token, or a stranger's token, is refused.
        r = client.get(f"{hold.url}/xrpc/com.atproto.sync.getBlob", params={"did": hold_did, "cid": blobs[1]})
        assert r.status_code == 401, r.text
        svc = httpx.get(f"{rel.network.pds_url}/xrpc/com.atproto.server.getServiceAuth",
                        params={"aud": hold_did, "lxm": "com.atproto.sync.getBlob"},
                        headers=stranger.account.auth_headers, timeout=30).json()["token"]
        r = client.get(f"{hold.url}/xrpc/com.atproto.sync.getBlob", params={"did": hold_did, "cid": blobs[1]},
                       headers=bearer(svc))
        assert r.status_code == 403, r.text
    print("\n[figure] private hold: anonymous blob reads 401, non-crew 403 on both replicas (401/403 at the hold); "
          "captain 307")


# --- browser sessions: CSRF and fixation ----------------------------------------------------


def test_csrf_and_session_fixation(rel: RelStack) -> None:
    owner, user, other = rel.user("csrfowner"), rel.user("csrfuser"), rel.user("csrfother")
    push_image(rel.a.url, rel.service, owner, "app", "v1")
    path = f"/r/{owner.handle}/app"
    fixed = "attacker-chosen-session-value-0123456789"
    with httpx.Client(base_url=rel.base_url, timeout=60, follow_redirects=False) as browser, \
            httpx.Client(base_url=rel.base_url, timeout=60, follow_redirects=False) as attacker:
        # Fixation: a session value planted before sign-in is replaced, and never becomes valid.
        browser.cookies.set("atcr_session", fixed, domain="127.0.0.1")
        sign_in(browser, user.account, next_path="/")
        issued = browser.cookies.get("atcr_session")
        assert issued and issued != fixed
        probe = httpx.get(f"{rel.base_url}/auth/session", cookies={"atcr_session": fixed}, timeout=30)
        assert probe.status_code == 401
        assert httpx.get(f"{rel.base_url}/auth/session", cookies={"atcr_session": issued},
                         timeout=30).status_code == 200
        sign_in(attacker, other.account, next_path="/")
        page = browser.get(rel.a.url + path)
        good = csrf_of(page.text)
        theirs = csrf_of(attacker.get(rel.b.url + path).text)
        star = {"Accept": "application/json"}
        attempts = {
            "no token": browser.post(rel.a.url + path + "/-/star", data={"star": "1"}, headers=star),
            "another session's token": browser.post(rel.b.url + path + "/-/star",
                                                    data={"star": "1", "csrf_token": theirs}, headers=star),
            "cross-site origin": browser.post(rel.a.url + path + "/-/star", data={"star": "1", "csrf_token": good},
                                              headers={**star, "Origin": "https://evil.example"}),
            "cross-site referer": browser.post(rel.b.url + path + "/-/star", data={"star": "1", "csrf_token": good},
                                               headers={**star, "Referer": "https://evil.example/page"}),
            "settings without token": browser.post(rel.a.url + "/settings/hold", data={"hold": "did:web:evil.example"}),
            "device approval without token": browser.post(rel.b.url + "/device/approve", data={"code": "BCDF-GHJK"}),
            "logout without token": browser.post(rel.a.url + "/auth/logout"),
        }
        for why, r in attempts.items():
            assert r.status_code == 403, (why, r.status_code, r.text[:300])
        # The same request with the right token from the same site works, on either replica.
        r = browser.post(rel.b.url + path + "/-/star", data={"star": "1", "csrf_token": good},
                         headers={**star, "Origin": rel.base_url})
        assert r.status_code == 200 and r.json()["starred"] is True
        # Signing in as someone else in the same browser replaces the session: the old one is dead.
        sign_in(browser, other.account, next_path="/")
        second = browser.cookies.get("atcr_session")
        assert second and second != issued
        assert httpx.get(f"{rel.base_url}/auth/session", cookies={"atcr_session": issued},
                         timeout=30).status_code == 401
    print(f"\n[figure] CSRF: {len(attempts)} forged state changes refused 403; planted and replaced session ids "
          "never valid")


# --- SSRF -----------------------------------------------------------------------------------


class Canary:
    """A TCP listener that counts connections: nothing may ever reach it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


def test_ssrf_guard_refuses_private_destinations(rel: RelStack, tmp_path: Path) -> None:
    """An AppView in production mode (ATCR_ALLOW_PRIVATE_NETWORKS=false, only its PLC mirror
    allowed) meets DID documents and did:web names that point at loopback, link-local and
    private addresses: it never connects to any of them."""
    canary = Canary()
    docs = {
        "did:plc:loopbackaaaaaaaaaaaaaaaa": f"http://127.0.0.1:{canary.port}",
        "did:plc:localhostaaaaaaaaaaaaaaa": f"http://localhost:{canary.port}",
        "did:plc:metadataaaaaaaaaaaaaaaaa": "http://169.254.169.254",
        "did:plc:privateaaaaaaaaaaaaaaaaa": "http://10.0.0.1",
        "did:plc:ipvsixaaaaaaaaaaaaaaaaaa": f"http://[::1]:{canary.port}",
        "did:plc:mappedaaaaaaaaaaaaaaaaaa": f"http://[::ffff:127.0.0.1]:{canary.port}",
    }

    def plc(req: Req) -> tuple[int, dict[str, str], bytes]:
        if req.path.endswith("com.atproto.identity.resolveHandle"):
            return 200, {"content-type": "application/json"}, b'{"did":"did:plc:loopbackaaaaaaaaaaaaaaaa"}'
        did = req.path.lstrip("/")
        if did not in docs:
            return 404, {"content-type": "application/json"}, b'{"message":"DID not registered"}'
        doc = {
            "@context": ["https://www.w3.org/ns/did/v1"], "id": did, "alsoKnownAs": ["at://evil.test"],
            "verificationMethod": [{"id": f"{did}#atproto", "type": "Multikey", "controller": did,
                                    "publicKeyMultibase": "zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"}],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer", "serviceEndpoint": docs[did]}],
        }
        return 200, {"content-type": "application/json"}, json.dumps(doc).encode()

    fake_plc = FaultProxy("http://127.0.0.1:9").start()
    fake_plc.add(Rule(lambda _r: True, respond=plc))
    port = free_port()
    env = {
        "VALKEY_URL": rel.valkey_url, "ATCR_LOG_LEVEL": "debug",
        "ATCR_ALLOW_PRIVATE_NETWORKS": "false", "ATCR_ALLOWED_HOSTS": f"127.0.0.1:{fake_plc.port}",
        "ATCR_PLC_URL": fake_plc.url, "ATCR_HANDLE_RESOLVER_URL": fake_plc.url,
        "ATCR_HTTP_ADDR": f"127.0.0.1:{port}", "ATCR_BASE_URL": f"http://127.0.0.1:{port}",
        "ATCR_DEFAULT_HOLD_DID": rel.hold_did, "ATCR_DATA_DIR": str(tmp_path / "appview"),
        "ATCR_RATE_LIMIT_ADDRESS": "0",
    }
    app = start_service("ssrf-appview", "appview", env, tmp_path, f"http://127.0.0.1:{port}")
    try:
        names = [*docs, "evil.test", f"did:web:127.0.0.1%3A{canary.port}", "did:web:169.254.169.254",
                 "did:web:10.1.2.3", f"did:web:localhost%3A{canary.port}"]
        statuses = []
        with httpx.Client(timeout=30) as client:
            for name in names:
                tok = token(app.url, f"127.0.0.1:{port}", None, f"repository:{unquote(name)}/app:pull")
                t0 = time.monotonic()
                r = client.get(f"{app.url}/v2/{name}/app/manifests/latest", headers=bearer(tok))
                assert r.status_code in (404, 503), (name, r.status_code, r.text)
                assert time.monotonic() - t0 < 15  # refused before any fetch, not after a timeout
                statuses.append(r.status_code)
                # A login with such a name is refused too, without a call to the "PDS".
                r = client.get(f"{app.url}/auth/token", params={"scope": f"repository:{name}/app:push"},
                               auth=(name.replace("%3A", ":"), "password-123"))
                assert r.status_code in (401, 503), (name, r.text)
            page = client.get(f"{app.url}/auth/login")
            r = client.post(f"{app.url}/auth/login", data={"handle": "evil.test", "csrf_token": csrf_of(page.text)})
            assert r.status_code < 500 or r.status_code == 503, r.text[:300]
        assert canary.hits == 0
        refused = app.logs().count("non-public address")
        assert refused > 0
        # The canary does count what reaches it.
        socket.create_connection(("127.0.0.1", canary.port)).close()
        wait_until(lambda: canary.hits == 1, 10, "the canary to count a connection")
    finally:
        app.stop()
        fake_plc.stop()
        canary.close()
    print(f"\n[figure] SSRF: {len(names)} names pointing at loopback/link-local/private (PDS endpoints, did:web, "
          f"handle, login): 0 connections made, {refused} refusals logged; answers {sorted(set(statuses))}")


# --- secrets never in logs ------------------------------------------------------------------


def _device_login(rel: RelStack, user: User) -> tuple[str, str, str]:
    """Sign in through the PDS, then run the device flow as docker-credential-atcr would;
    returns (web session cookie, device secret, the CSRF token)."""
    with httpx.Client(base_url=rel.base_url, timeout=60, follow_redirects=False) as browser:
        sign_in(browser, user.account, next_path="/")
        cookie = str(browser.cookies.get("atcr_session"))
        start = httpx.post(f"{rel.a.url}/auth/device/code", data={"client_id": "docker-credential-atcr",
                                                                  "device_name": "laptop"}, timeout=30).json()
        page = browser.get(rel.b.url + "/device", params={"code": start["user_code"]})
        csrf = csrf_of(page.text)
        r = browser.post(rel.b.url + "/device/approve", data={"code": start["user_code"], "csrf_token": csrf})
        assert r.status_code == 200, r.text[:300]
        grant = httpx.post(f"{rel.a.url}/auth/device/token",
                           data={"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                                 "device_code": start["device_code"]}, timeout=30)
        assert grant.status_code == 200, grant.text
        return cookie, str(grant.json()["device_secret"]), csrf


def test_secrets_never_appear_in_logs(rel: RelStack) -> None:
    """After a push with an app password, a browser sign-in, a device login and a push with the
    device secret, the logs of every process (at debug level) hold none of the secrets."""
    user = rel.user("secretive")
    name = f"{user.handle}/app"
    reg_tokens = [token(rel.a.url, rel.service, user, f"repository:{name}:pull,push")]
    push_image(rel.a.url, rel.service, user, "app", "v1", tok=reg_tokens[0])
    cipher = SessionCipher(load_or_create_secret(rel.work / "shared-keys" / "session-secret.key"))
    client = rel.valkey_client()
    try:
        app_session = cipher.open(client.get(f"av:pdssess:{user.did}"), user.did) or {}
        cookie, device_secret, csrf = _device_login(rel, user)
        oauth_session = cipher.open(client.get(f"av:pdssess:{user.did}"), user.did) or {}
    finally:
        client.close()
    r = httpx.get(f"{rel.b.url}/auth/token", params={"service": rel.service, "scope": f"repository:{name}:pull,push"},
                  auth=(user.did, device_secret), timeout=30)
    assert r.status_code == 200, r.text
    reg_tokens.append(r.json()["token"])
    push_image(rel.b.url, rel.service, user, "app", "v2", tok=reg_tokens[1])
    secrets = {
        "app password": user.app_password,
        "account password": user.account.password,
        "PDS access JWT": app_session.get("accessJwt", ""),
        "PDS refresh JWT": app_session.get("refreshJwt", ""),
        "OAuth access token": oauth_session.get("access_token", ""),
        "OAuth refresh token": oauth_session.get("refresh_token", ""),
        "device secret": device_secret,
        "device secret (random part)": (parse_secret(device_secret) or ("", ""))[1],
        "web session cookie": cookie,
        "CSRF token": csrf,
        **{f"registry token {i}": t for i, t in enumerate(reg_tokens)},
        **{f"registry token {i} signature": t.rsplit(".", 1)[-1] for i, t in enumerate(reg_tokens)},
    }
    assert all(len(v) >= 16 for v in secrets.values()), {k for k, v in secrets.items() if len(v) < 16}
    logs = {svc.name: svc.logs() for svc in rel.services()}
    assert sum(len(text) for text in logs.values()) > 0
    for service, text in logs.items():
        for what, value in secrets.items():
            assert value not in text, f"{what} found in the {service} log"
            encoded = base64.b64encode(f"{user.handle}:{user.app_password}".encode()).decode()
            assert encoded not in text, f"Basic credentials found in the {service} log"
    lines = sum(text.count("\n") for text in logs.values())
    print(f"\n[figure] {len(secrets)} secrets (app/account passwords, PDS + OAuth tokens, device secret, session "
          f"cookie, registry JWTs) searched in {lines} debug log lines of {len(logs)} processes: 0 found")


def test_hold_rejects_pull_counts_from_untrusted_senders(rel: RelStack, rel_user: User) -> None:
    """Pull counts are public numbers: only the AppView's signed notifications move them
    (HOLD_TRUST_PULL_NOTIFICATIONS=false, HOLD_TRUSTED_APPVIEWS = the AppView's did:web)."""
    body = {"repository": "app", "userDid": rel_user.did, "manifestDigest": "sha256:" + "a" * 64,
            "operation": "pull", "count": 1000}
    url = f"{rel.hold.url}/xrpc/io.atcr.hold.notifyManifest"
    r = httpx.post(url, json=body, timeout=30)
    assert r.status_code == 401, r.text
    svc = httpx.get(f"{rel.network.pds_url}/xrpc/com.atproto.server.getServiceAuth",
                    params={"aud": rel.hold_did, "lxm": "io.atcr.hold.notifyManifest"},
                    headers=rel_user.account.auth_headers, timeout=30).json()["token"]
    r = httpx.post(url, json=body, headers=bearer(svc), timeout=30)
    assert r.status_code == 403, r.text
    assert re.search("trusted", r.text, re.I)
