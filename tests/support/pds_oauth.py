"""Sign in at the reference PDS's OAuth provider without a browser (its pages' JSON API).

TEST-NETWORK.md: the authorize page sets `dev-id`, `ses-id` and `csrf-token` cookies (marked
Secure, so over http they are carried by hand); `~api/sign-in` and `~api/consent` then answer
JSON, the consent with the URL the browser would be redirected to (code, state, iss). The
helpers here turn that into the AppView callback URL a browser would have followed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

API = "/@atproto/oauth-provider/~api"


@dataclass
class ProviderSession:
    authorize_url: str
    cookies: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        parts = urlsplit(self.authorize_url)
        return f"{parts.scheme}://{parts.netloc}"

    def absorb(self, resp: httpx.Response) -> None:
        for raw in resp.headers.get_list("set-cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel.value:
                    self.cookies[name] = morsel.value
                else:
                    self.cookies.pop(name, None)

    def headers(self) -> dict[str, str]:
        return {
            "Origin": self.origin,
            "Referer": self.authorize_url,
            "Sec-Fetch-Site": "same-origin",
            "Sec-Fetch-Mode": "same-origin",
            "Sec-Fetch-Dest": "empty",
            "x-csrf-token": self.cookies.get("csrf-token", ""),
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
            "Content-Type": "application/json",
        }


def open_authorize(client: httpx.Client, authorize_url: str) -> ProviderSession:
    resp = client.get(
        authorize_url,
        headers={
            "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-Dest": "document",
            "Sec-Fetch-Site": "cross-site",
            "Accept": "text/html",
        },
    )
    if resp.status_code != 200:
        raise RuntimeError(f"authorize page answered {resp.status_code}: {resp.text[:300]}")
    session = ProviderSession(authorize_url)
    session.absorb(resp)
    return session


def sign_in(client: httpx.Client, session: ProviderSession, username: str, password: str) -> dict[str, object]:
    resp = client.post(
        session.origin + API + "/sign-in",
        json={"locale": "en", "username": username, "password": password, "remember": True},
        headers=session.headers(),
    )
    session.absorb(resp)
    if resp.status_code != 200:
        raise RuntimeError(f"sign-in answered {resp.status_code}: {resp.text[:300]}")
    body: dict[str, object] = resp.json()
    return body


def _redirect_target(provider_url: str) -> str:
    """The client redirect the provider's `/oauth/authorize/redirect?...` URL stands for."""
    parts = urlsplit(provider_url)
    params = dict(parse_qsl(parts.query))
    redirect_uri = params.pop("redirect_uri")
    mode = params.pop("redirect_mode", "query")
    if mode != "query":
        raise RuntimeError(f"unexpected redirect mode {mode}")
    return redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(params)


def callback_of(provider_url: str) -> str:
    """The AppView callback URL the provider's redirect page (`/oauth/authorize/redirect?...`) sends a browser to."""
    return _redirect_target(provider_url)


def consent(client: httpx.Client, session: ProviderSession, did: str, scope: str | None = None) -> str:
    body: dict[str, str] = {"did": did}
    if scope is not None:
        body["scope"] = scope
    resp = client.post(session.origin + API + "/consent", json=body, headers=session.headers())
    session.absorb(resp)
    if resp.status_code != 200:
        raise RuntimeError(f"consent answered {resp.status_code}: {resp.text[:300]}")
    return _redirect_target(str(resp.json()["url"]))


def reject(client: httpx.Client, session: ProviderSession) -> str:
    resp = client.post(session.origin + API + "/reject", json={}, headers=session.headers())
    if resp.status_code != 200:
        raise RuntimeError(f"reject answered {resp.status_code}: {resp.text[:300]}")
    return _redirect_target(str(resp.json()["url"]))


def approve_sign_in(authorize_url: str, username: str, password: str, did: str) -> str:
    """Sign in and consent; returns the AppView callback URL (with code, state, iss)."""
    with httpx.Client(timeout=30, trust_env=False, follow_redirects=False) as client:
        session = open_authorize(client, authorize_url)
        sign_in(client, session, username, password)
        return consent(client, session, did)


def deny_sign_in(authorize_url: str) -> str:
    with httpx.Client(timeout=30, trust_env=False, follow_redirects=False) as client:
        session = open_authorize(client, authorize_url)
        return reject(client, session)
