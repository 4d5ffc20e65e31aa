"""One image in many repositories (docs/records.md), against the real stack and the real PDS.

The model-based test drives pushes, re-tags, tag and manifest deletes and pushes of one digest
into other repositories, across three repositories of one user and a second user, and after
every step checks what a client would see: every tag the model holds pulls the exact bytes by
tag and by digest, everything deleted answers MANIFEST_UNKNOWN. A rule flushes Valkey, so the
same checks also run on a cold cache; at the end the Jetstream consumer rebuilds the read model
from the PDS's event stream and must agree with the model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from atcr.readmodel import keys, read
from tests.support.fixtures_stack import Pusher, RegistryStack, token_for
from tests.support.pdsnet import create_account, create_app_password

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = b"record-model layer " * 64


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def image(n: int) -> bytes:
    """Distinct manifests over the same two blobs (pushed once for the whole module)."""
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(CONFIG),
                   "size": len(CONFIG)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(LAYER),
                    "size": len(LAYER)}],
        "annotations": {"org.example.image": str(n)},
    }, indent=1).encode()


IMAGES = [image(n) for n in range(3)]


class Registry:
    """A small OCI client for one account: a token per repository, re-made after a flush."""

    def __init__(self, stack: RegistryStack, pusher: Pusher) -> None:
        self.stack, self.pusher = stack, pusher
        self.http = httpx.Client(timeout=60)
        self._tokens: dict[str, str] = {}

    def close(self) -> None:
        self.http.close()

    def forget_tokens(self) -> None:
        self._tokens.clear()

    def _auth(self, repo: str) -> dict[str, str]:
        if repo not in self._tokens:
            scope = f"repository:{self.pusher.handle}/{repo}:pull,push,delete"
            self._tokens[repo] = token_for(self.stack, self.pusher, scope)
        return {"Authorization": f"Bearer {self._tokens[repo]}"}

    def url(self, repo: str, path: str) -> str:
        return f"{self.stack.url}/v2/{self.pusher.handle}/{repo}/{path}"

    def upload(self, repo: str, data: bytes) -> None:
        d = digest_of(data)
        if self.http.head(self.url(repo, f"blobs/{d}"), headers=self._auth(repo)).status_code == 200:
            return
        r = self.http.post(self.url(repo, "blobs/uploads/"), params={"digest": d}, content=data,
                           headers={**self._auth(repo), "Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text

    def put(self, repo: str, ref: str, raw: bytes) -> httpx.Response:
        return self.http.put(self.url(repo, f"manifests/{ref}"), content=raw,
                             headers={**self._auth(repo), "Content-Type": OCI_MANIFEST})

    def get(self, repo: str, ref: str) -> httpx.Response:
        return self.http.get(self.url(repo, f"manifests/{ref}"), headers={**self._auth(repo), "Accept": OCI_MANIFEST})

    def delete(self, repo: str, ref: str) -> httpx.Response:
        return self.http.delete(self.url(repo, f"manifests/{ref}"), headers=self._auth(repo))

    def tags(self, repo: str) -> httpx.Response:
        return self.http.get(self.url(repo, "tags/list"), headers=self._auth(repo))


def error_code(r: httpx.Response) -> str:
    return str(r.json()["errors"][0]["code"])


@dataclass
class Repo:
    manifests: set[int] = field(default_factory=set)
    tags: dict[str, int] = field(default_factory=dict)
    ever: bool = False


# --- examples --------------------------------------------------------------------------------


@pytest.fixture
def registry(registry_stack: RegistryStack, pusher: Pusher) -> Any:
    client = Registry(registry_stack, pusher)
    client.upload("shared", CONFIG)
    client.upload("shared", LAYER)
    yield client
    client.close()


def _records(stack: RegistryStack, did: str, collection: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{stack.network.pds_url}/xrpc/com.atproto.repo.listRecords",
                  params={"repo": did, "collection": collection, "limit": 100}, timeout=30)
    r.raise_for_status()
    return list(r.json()["records"])


def test_same_image_in_two_repositories_both_pull_and_delete_is_per_repository(
    registry: Registry, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    raw = IMAGES[0]
    d = digest_of(raw)
    assert registry.put("first", "1", raw).status_code == 201
    assert registry.put("second", "1", raw).status_code == 201
    for repo in ("first", "second"):
        for ref in ("1", d):
            r = registry.get(repo, ref)
            assert r.status_code == 200 and r.content == raw, (repo, ref, r.text)
    # Two records: the digest hex for the first repository, the suffix key for the second.
    held = {rec["value"]["repository"]: rec["uri"].rsplit("/", 1)[-1]
            for rec in _records(registry_stack, pusher.did, keys.MANIFEST)}
    assert held == {"first": keys.manifest_rkey(d), "second": keys.repo_manifest_rkey("second", d)}
    # Pushing the first repository again breaks nothing either.
    assert registry.put("first", "1", raw).status_code == 201
    assert registry.get("second", d).content == raw
    # Deleting the manifest from one repository leaves the other whole.
    assert registry.delete("first", d).status_code == 202
    assert error_code(registry.get("first", d)) == "MANIFEST_UNKNOWN"
    assert error_code(registry.get("first", "1")) == "MANIFEST_UNKNOWN"
    for ref in ("1", d):
        assert registry.get("second", ref).content == raw
    assert registry.tags("second").json()["tags"] == ["1"]
    # ... and the emptied repository takes the image back into its own record.
    assert registry.put("first", "2", raw).status_code == 201
    assert registry.get("first", "2").content == raw and registry.get("second", "1").content == raw


def test_retag_keeps_the_manifest_record(registry: Registry, registry_stack: RegistryStack, pusher: Pusher) -> None:
    raw = IMAGES[1]
    assert registry.put("retag", "a", raw).status_code == 201
    before = {r["uri"]: r["cid"] for r in _records(registry_stack, pusher.did, keys.MANIFEST)}
    assert registry.put("retag", "b", raw).status_code == 201
    assert registry.put("retag", "a", raw).status_code == 201
    after = {r["uri"]: r["cid"] for r in _records(registry_stack, pusher.did, keys.MANIFEST)}
    assert after == before  # not rewritten: a re-tag writes only the tag
    assert sorted(registry.tags("retag").json()["tags"]) == ["a", "b"]


def test_a_retag_writes_again_a_record_deleted_behind_the_model(
    registry: Registry, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    """A re-tag answers once its tag is written, trusting the read model's record, and checks
    that record at the PDS right after. One another client deleted (no Jetstream consumer runs
    here, so the model still shows it) is written again, and both tags pull."""
    raw = image(40)
    d = digest_of(raw)
    assert registry.put("healed", "a", raw).status_code == 201
    pds = httpx.Client(base_url=registry_stack.network.pds_url, headers=pusher.account.auth_headers, timeout=30)
    with pds:
        where = {"repo": pusher.did, "collection": keys.MANIFEST, "rkey": keys.manifest_rkey(d)}
        assert pds.post("/xrpc/com.atproto.repo.deleteRecord", json=where).status_code == 200
        assert pds.get("/xrpc/com.atproto.repo.getRecord", params=where).status_code == 400
        assert registry.put("healed", "b", raw).status_code == 201
        deadline = time.monotonic() + 30
        while (found := pds.get("/xrpc/com.atproto.repo.getRecord", params=where)).status_code != 200:
            assert time.monotonic() < deadline, f"the record was not written again: {found.text}"
            time.sleep(0.05)
        assert found.json()["value"]["repository"] == "healed" and found.json()["value"]["digest"] == d
    registry.forget_tokens()
    for ref in ("a", "b", d):
        r = registry.get("healed", ref)
        assert r.status_code == 200 and r.content == raw, (ref, r.text)


def test_a_new_manifest_and_tag_go_in_one_commit_and_a_wrong_guess_is_read_after_all(
    registry: Registry, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    """Once the account's manifests are listed, a new manifest under a new tag is created in
    one commit without reading its record keys first. A record another client wrote at the
    digest hex for another repository, which the read model has not seen, makes that commit
    fail as a whole; the push then reads the keys and writes this repository's own record,
    leaving the other one as it was."""
    from atcr.oci import parse_manifest

    assert registry.put("one", "a", image(50)).status_code == 201  # lists the account's manifests
    _wait_until_manifests_listed(registry_stack, pusher.did)
    raw2 = image(51)
    pds_url, did = registry_stack.network.pds_url, pusher.did
    rev = _latest_rev(pds_url, did)
    assert registry.put("one", "b", raw2).status_code == 201
    assert registry.get("one", "b").content == raw2
    assert _commits_since(pds_url, did, rev) == 1  # the manifest record and its tag, together

    raw3 = image(52)
    d3 = digest_of(raw3)
    pds = httpx.Client(base_url=registry_stack.network.pds_url, headers=pusher.account.auth_headers, timeout=30)
    with pds:
        blob = pds.post("/xrpc/com.atproto.repo.uploadBlob", content=raw3, headers={"Content-Type": OCI_MANIFEST})
        assert blob.status_code == 200, blob.text
        record = parse_manifest(raw3, OCI_MANIFEST).to_record(
            repository="other", hold_did=registry_stack.hold_did, manifest_blob=blob.json()["blob"],
            created_at="2026-01-01T00:00:00Z")
        r = pds.post("/xrpc/com.atproto.repo.putRecord", json={
            "repo": pusher.did, "collection": keys.MANIFEST, "rkey": keys.manifest_rkey(d3),
            "record": {"$type": keys.MANIFEST, **record}})
        assert r.status_code == 200, r.text
        before = pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": pusher.did, "collection": keys.MANIFEST, "rkey": keys.manifest_rkey(d3)}).json()["cid"]
        assert registry.put("one", "c", raw3).status_code == 201
        logs = registry_stack.appview.logs().splitlines()
        assert any(d3 in line and "one commit refused" in line for line in logs)
        at_hex = pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": pusher.did, "collection": keys.MANIFEST, "rkey": keys.manifest_rkey(d3)}).json()
        assert at_hex["cid"] == before and at_hex["value"]["repository"] == "other"
        own = pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": pusher.did, "collection": keys.MANIFEST, "rkey": keys.repo_manifest_rkey("one", d3)})
        assert own.status_code == 200 and own.json()["value"]["repository"] == "one"
    for ref in ("c", d3):
        r = registry.get("one", ref)
        assert r.status_code == 200 and r.content == raw3, (ref, r.text)


def _wait_until_manifests_listed(stack: RegistryStack, did: str) -> None:
    """Until the read model has listed the account's manifests (the first push starts that in
    the background), which is what lets a push create a new manifest in one commit."""
    deadline = time.monotonic() + 30
    while asyncio.run(_valkey_get(stack, keys.sync(did), read.marker_field(keys.MANIFEST))) is None:
        assert time.monotonic() < deadline, "the account's manifests were never listed"
        time.sleep(0.05)


def _write_tag_behind_the_model(pds: httpx.Client, did: str, repository: str, tag: str, digest: str) -> None:
    """Another client writes a tag record at the PDS pointing at the record at `digest`'s hex."""
    r = pds.post("/xrpc/com.atproto.repo.putRecord", json={
        "repo": did, "collection": keys.TAG, "rkey": keys.tag_rkey(repository, tag),
        "record": {"$type": keys.TAG, "repository": repository, "tag": tag,
                   "manifest": f"at://{did}/{keys.MANIFEST}/{keys.manifest_rkey(digest)}",
                   "manifestDigest": digest, "createdAt": "2026-01-01T00:00:00Z"}})
    assert r.status_code == 200, r.text


def _latest_rev(pds_url: str, did: str) -> str:
    r = httpx.get(f"{pds_url}/xrpc/com.atproto.sync.getLatestCommit", params={"did": did}, timeout=30)
    assert r.status_code == 200, r.text
    return str(r.json()["rev"])


def _commits_since(pds_url: str, did: str, rev: str) -> int:
    """How many commits the account's repository has made after `rev` (from the PDS's own CAR
    of everything newer: every commit block is in it)."""
    from atcr import dagcbor

    r = httpx.get(f"{pds_url}/xrpc/com.atproto.sync.getRepo", params={"did": did, "since": rev}, timeout=30)
    assert r.status_code == 200, r.text
    _, blocks = dagcbor.read_car(r.content)
    commits = [
        node for node in map(dagcbor.decode, blocks.values())
        if isinstance(node, dict) and {"did", "rev", "data", "sig"} <= node.keys() and node["rev"] > rev
    ]
    return len(commits)


def test_a_fresh_push_under_a_tag_the_model_has_not_seen_moves_it(
    registry: Registry, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    """A fresh push does not read the tags the read model does not know (so the hold's check
    runs beside the manifest's upload). A tag another client wrote, unseen by the model, makes
    the one-commit create fail; the push then reads the tag and moves it, as a client expects."""
    assert registry.put("seen", "first", image(60)).status_code == 201
    _wait_until_manifests_listed(registry_stack, pusher.did)
    old = digest_of(image(60))
    pds = httpx.Client(base_url=registry_stack.network.pds_url, headers=pusher.account.auth_headers, timeout=30)
    with pds:
        _write_tag_behind_the_model(pds, pusher.did, "seen", "behind", old)
        raw = image(61)
        assert registry.put("seen", "behind", raw).status_code == 201
        tag = pds.get("/xrpc/com.atproto.repo.getRecord", params={
            "repo": pusher.did, "collection": keys.TAG, "rkey": keys.tag_rkey("seen", "behind")})
        assert tag.status_code == 200 and tag.json()["value"]["manifestDigest"] == digest_of(raw), tag.text
    assert any(digest_of(raw) in line and "one commit refused" in line
               for line in registry_stack.appview.logs().splitlines())
    for ref in ("behind", digest_of(raw)):
        got = registry.get("seen", ref)
        assert got.status_code == 200 and got.content == raw, (ref, got.text)


async def _valkey_get(stack: RegistryStack, key: str, field: str) -> Any:
    from atcr.readmodel._compat import done
    from atcr.valkey import connect

    client = connect(stack.appview.env["VALKEY_URL"])
    try:
        return await done(client.hget(key, field))
    finally:
        await client.aclose()


def test_records_written_the_old_way_serve_both_tags(
    registry: Registry, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    """The old scheme: `app` pushed, then `app-staging` overwrote the one record at the digest
    hex. The tag of `app` points at a record naming `app-staging`: it still pulls (same owner,
    same bytes), by tag and by digest, and shows in the UI."""
    raw = IMAGES[2]
    d = digest_of(raw)
    assert registry.put("app-staging", "1", raw).status_code == 201  # record <hex>, repository app-staging
    pds = httpx.Client(base_url=registry_stack.network.pds_url, headers=pusher.account.auth_headers, timeout=30)
    with pds:
        _write_tag_behind_the_model(pds, pusher.did, "app", "1", d)
    for repo in ("app", "app-staging"):
        for ref in ("1", d):
            r = registry.get(repo, ref)
            assert r.status_code == 200 and r.content == raw, (repo, ref, r.text)
    page = httpx.get(f"{registry_stack.url}/r/{pusher.handle}/app", timeout=30)
    assert page.status_code == 200 and "unknown" not in page.text.split("Tags", 1)[-1][:4000].lower()
    # Deleting it from `app` removes app's tag only: the record is app-staging's.
    assert registry.delete("app", d).status_code == 202
    assert error_code(registry.get("app", "1")) == "MANIFEST_UNKNOWN"
    assert registry.get("app-staging", "1").content == raw


def test_hold_layer_records_name_each_repository(
    registry: Registry, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    raw = IMAGES[0]
    d = digest_of(raw)
    assert registry.put("layers-a", "1", raw).status_code == 201
    assert registry.put("layers-b", "1", raw).status_code == 201
    expected = {
        ("layers-a", f"at://{pusher.did}/{keys.MANIFEST}/{keys.manifest_rkey(d)}"),
        ("layers-b", f"at://{pusher.did}/{keys.MANIFEST}/{keys.repo_manifest_rkey('layers-b', d)}"),
    }

    def layer_records() -> set[tuple[str, str]]:
        r = httpx.get(f"{registry_stack.hold.url}/xrpc/com.atproto.repo.listRecords",
                      params={"repo": registry_stack.hold_did, "collection": "io.atcr.hold.layer", "limit": 100},
                      timeout=30)
        r.raise_for_status()
        return {(rec["value"].get("repository"), rec["value"]["manifest"]) for rec in r.json()["records"]
                if rec["value"]["userDid"] == pusher.did}

    deadline = time.monotonic() + 20  # notifyManifest runs after the push's answer
    while layer_records() != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert layer_records() == expected
    quota = httpx.get(f"{registry_stack.hold.url}/xrpc/io.atcr.hold.getQuota", params={"userDid": pusher.did},
                      timeout=30)
    if quota.status_code == 200:  # usage counts unique digests: the second repository adds nothing
        assert quota.json()["totalSize"] == len(LAYER)


def test_auto_remove_untagged_removes_from_one_repository_only(
    registry: Registry, registry_stack: RegistryStack, pusher: Pusher
) -> None:
    old, new = IMAGES[0], IMAGES[1]
    pds = httpx.Client(base_url=registry_stack.network.pds_url, headers=pusher.account.auth_headers, timeout=30)
    with pds:
        r = pds.post("/xrpc/com.atproto.repo.putRecord", json={
            "repo": pusher.did, "collection": keys.PROFILE, "rkey": "self",
            "record": {"$type": keys.PROFILE, "autoRemoveUntagged": True, "createdAt": "2026-01-01T00:00:00Z"}})
        assert r.status_code == 200, r.text
    registry_stack_flush_profile(registry_stack, pusher.did)
    assert registry.put("auto", "latest", old).status_code == 201
    assert registry.put("auto-copy", "latest", old).status_code == 201
    assert registry.put("auto", "latest", new).status_code == 201  # `old` is now untagged in `auto`
    assert error_code(registry.get("auto", digest_of(old))) == "MANIFEST_UNKNOWN"
    assert registry.get("auto", "latest").content == new
    assert registry.get("auto-copy", "latest").content == old
    assert registry.get("auto-copy", digest_of(old)).content == old


def registry_stack_flush_profile(stack: RegistryStack, did: str) -> None:
    """Forget the cached profile, as a Jetstream event would (the stack runs no consumer)."""
    import valkey

    client = valkey.Valkey.from_url(stack_valkey_url(stack))
    try:
        client.delete(keys.single(did, "profile"))
        client.hdel(keys.sync(did), f"{keys.PROFILE}|at")
        client.hdel(keys.records(did, keys.PROFILE), "self")
    finally:
        client.close()


def stack_valkey_url(stack: RegistryStack) -> str:
    return str(stack.appview.env["VALKEY_URL"])


# --- the model-based test -----------------------------------------------------------------------


USERS = ("alice", "bob")
REPOS = {"alice": ("r1", "r2", "r3"), "bob": ("r1",)}
TAGS = ("a", "b")


@dataclass
class Final:
    """What one example left behind, for the Jetstream rebuild check."""

    did: str
    repos: dict[str, Repo]


class RecordModel(RuleBasedStateMachine):
    stack: RegistryStack
    finals: list[Final]

    def __init__(self) -> None:
        super().__init__()
        self.clients: dict[str, Registry] = {}
        for user in USERS:
            account = create_account(self.stack.network.pds_url, f"sm{user}")
            pusher = Pusher(account=account, app_password=create_app_password(account, "docker"))
            self.clients[user] = Registry(self.stack, pusher)
        self.model = {user: {repo: Repo() for repo in REPOS[user]} for user in USERS}
        self.steps = 0

    users = st.sampled_from(USERS)
    images = st.integers(0, len(IMAGES) - 1)

    def _repo(self, user: str, pick: int) -> str:
        repos = REPOS[user]
        return repos[pick % len(repos)]

    @rule(user=users, pick=st.integers(0, 2), n=images, tag=st.sampled_from((*TAGS, None)))
    def push(self, user: str, pick: int, n: int, tag: str | None) -> None:
        repo = self._repo(user, pick)
        raw = IMAGES[n]
        r = self.clients[user].put(repo, tag or digest_of(raw), raw)
        assert r.status_code == 201, r.text
        assert r.headers["Docker-Content-Digest"] == digest_of(raw)
        state = self.model[user][repo]
        state.manifests.add(n)
        state.ever = True
        if tag:
            state.tags[tag] = n

    @rule(user=users, n=images, tag=st.sampled_from(TAGS), data=st.data())
    def push_into_another_repository(self, user: str, n: int, tag: str, data: st.DataObject) -> None:
        """The same digest as a repository of the same user already holds, into another one."""
        holders = [r for r, s in self.model[user].items() if n in s.manifests]
        others = [r for r in REPOS[user] if r not in holders]
        if not holders or not others:
            return self.push(user, 0, n, tag)
        self.push(user, REPOS[user].index(data.draw(st.sampled_from(others))), n, tag)
        return None

    @rule(user=users, pick=st.integers(0, 2), tag=st.sampled_from(TAGS))
    def delete_tag(self, user: str, pick: int, tag: str) -> None:
        repo = self._repo(user, pick)
        state = self.model[user][repo]
        r = self.clients[user].delete(repo, tag)
        if tag in state.tags:
            assert r.status_code == 202, r.text
            del state.tags[tag]
        else:
            assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN", r.text

    @rule(user=users, pick=st.integers(0, 2), n=images)
    def delete_manifest(self, user: str, pick: int, n: int) -> None:
        repo = self._repo(user, pick)
        state = self.model[user][repo]
        r = self.clients[user].delete(repo, digest_of(IMAGES[n]))
        if n in state.manifests:
            assert r.status_code == 202, r.text
            state.manifests.discard(n)
            state.tags = {t: m for t, m in state.tags.items() if m != n}
        else:
            assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN", r.text

    @precondition(lambda self: self.steps > 2)
    @rule()
    def flush_cache(self) -> None:
        """FLUSHALL: from here on every read is a cold miss served from the PDS."""
        import valkey

        client = valkey.Valkey.from_url(stack_valkey_url(self.stack))
        try:
            client.flushall()
        finally:
            client.close()
        for c in self.clients.values():
            c.forget_tokens()  # the PDS sessions lived in Valkey: log in again

    @invariant()
    def every_tag_and_digest_pulls_exactly(self) -> None:
        self.steps += 1
        for user, repos in self.model.items():
            client = self.clients[user]
            for repo, state in repos.items():
                for tag, n in state.tags.items():
                    r = client.get(repo, tag)
                    assert r.status_code == 200 and r.content == IMAGES[n], (user, repo, tag, r.text)
                for n, raw in enumerate(IMAGES):
                    r = client.get(repo, digest_of(raw))
                    if n in state.manifests:
                        assert r.status_code == 200 and r.content == raw, (user, repo, n, r.text)
                        assert r.headers["Docker-Content-Digest"] == digest_of(raw)
                    else:
                        assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN", (user, repo, n, r.text)
                listed = client.tags(repo)
                if state.tags:
                    assert listed.status_code == 200 and sorted(listed.json()["tags"]) == sorted(state.tags)
                elif state.ever:  # emptied: [] while remembered, NAME_UNKNOWN after a flush
                    assert listed.status_code in (200, 404), listed.text
                    assert listed.status_code == 404 or listed.json()["tags"] == []
                else:
                    assert listed.status_code == 404 and error_code(listed) == "NAME_UNKNOWN"

    def teardown(self) -> None:
        for user, client in self.clients.items():
            self.finals.append(Final(did=client.pusher.did, repos=self.model[user]))
            client.close()


async def _rebuilt_by_jetstream(stack: RegistryStack, finals: list[Final], valkey_client: Any) -> float:
    """FLUSHALL, then a consumer replays the PDS's firehose from its first event; returns the
    seconds until the read model agrees with every example's final state."""
    from atcr.runtime import Runtime
    from jetstream.consumer import Consumer
    from jetstream.cursor import cursor_key
    from jetstream.metrics import Metrics
    from jetstream.sources import firehose_source_name
    from tests.integration.jetstream.helpers import consumer_settings

    pds = stack.network.pds_url
    await valkey_client.flushall()
    await valkey_client.set(cursor_key(firehose_source_name(pds)), "0")
    settings = consumer_settings(
        valkey_url=stack_valkey_url(stack), plc_url=stack.network.plc_url, pds_url=pds, jetstream_url="",
        relay_url=pds, ATCR_FIREHOSE_URLS=pds, ATCR_BACKFILL_ENABLED="false",
    )
    rt = Runtime.from_settings(settings)
    assert rt.valkey is not None
    consumer = Consumer(settings, rt.valkey, rt.http, rt.resolver, metrics=Metrics())
    await consumer.start()
    started = time.monotonic()
    try:
        while True:
            mismatches = []
            for final in finals:
                for repo, state in final.repos.items():
                    tags, _ = await read.read_tags(valkey_client, final.did, repo)
                    manifests, _ = await read.read_manifests(valkey_client, final.did, repo)
                    got_tags = {t: e.digest for t, e in tags.items()}
                    want_tags = {t: digest_of(IMAGES[n]) for t, n in state.tags.items()}
                    got = {m.digest for m in manifests}
                    want = {digest_of(IMAGES[n]) for n in state.manifests}
                    if got_tags != want_tags or got != want:
                        mismatches.append((final.did, repo, got_tags, want_tags, got, want))
            if not mismatches:
                return time.monotonic() - started
            if time.monotonic() - started > 90:
                raise AssertionError(f"the consumer's model disagrees: {mismatches[:3]}")
            await asyncio.sleep(0.2)
    finally:
        await consumer.stop()
        await rt.aclose()


async def test_record_model_state_machine(registry_stack: RegistryStack, pusher: Pusher, valkey: Any) -> None:
    """Model-based: push / re-tag / delete tag / delete manifest / same digest into another
    repository, two users, checked after every step, warm and cold; then rebuilt by Jetstream."""
    setup = Registry(registry_stack, pusher)
    setup.upload("setup", CONFIG)
    setup.upload("setup", LAYER)
    setup.close()
    RecordModel.stack = registry_stack
    RecordModel.finals = []
    run = settings(
        max_examples=4, stateful_step_count=14, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck), print_blob=False,
    )
    started = time.monotonic()
    await asyncio.to_thread(run_state_machine_as_test, RecordModel, settings=run)
    ran = time.monotonic() - started
    finals = list(RecordModel.finals)
    assert finals
    took = await _rebuilt_by_jetstream(registry_stack, finals, valkey)
    print(f"\n[figure] record model: {len(finals) // 2} examples in {ran:.1f} s, every step checked warm and after "
          f"FLUSHALL; Jetstream replay from seq 0 agreed after {took:.1f} s")
