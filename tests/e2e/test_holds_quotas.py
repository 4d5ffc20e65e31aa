"""Several holds behind one AppView, quotas, and holds that fail (docs/hold.md).

The deployment people run: a private, closed hold is the AppView's default; a private hold
that anyone may join has a 3 MB tier; a public hold keeps its blobs on S3. Users choose their
hold with `defaultHold`; skopeo pushes must land there, quotas must refuse cleanly and never
lock anyone out, and a hung hold must cost seconds, not minutes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from atcr.identity import did_web_for_url
from atcr.readmodel import keys
from tests.support.fixtures_stack import Pusher
from tests.support.ocilayout import Layout
from tests.support.pdsnet import TestNetwork, create_account, create_app_password
from tests.support.services import S3Endpoint
from tests.support.stack import Service, appview_env, free_port, hold_env, network_env, start_service

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MB = 1_000_000
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@dataclass
class Hold:
    service: Service
    did: str
    root: Path | None = None  # filesystem storage
    bucket: str | None = None  # S3 storage
    s3: S3Endpoint | None = None

    def stores(self, digest: str) -> bool:
        """Whether the blob is in this hold's storage (looked at directly, not through the hold)."""
        key = f"blobs/sha256/{digest[7:9]}/{digest[7:]}/data"
        if self.root is not None:
            return (self.root / key).exists()
        assert self.s3 is not None and self.bucket is not None
        listed = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix=key)
        return bool(listed.get("KeyCount"))

    @property
    def url(self) -> str:
        return self.service.url


@dataclass
class Holds:
    appview: Service
    closed: Hold  # private, closed crew: the AppView's default
    tiny: Hold  # private, anyone may join, 3 MB tier
    public: Hold  # public, S3
    network: TestNetwork
    bucket: str

    @property
    def host(self) -> str:
        return self.appview.url.removeprefix("http://")


def _hold(name: str, work: Path, env: dict[str, str], *, public: bool, extra: dict[str, str],
          s3: S3Endpoint | None = None, bucket: str | None = None) -> Hold:
    port = free_port()
    hold_dir = work / name
    hold_dir.mkdir()
    s3_env = dict(s3.hold_env(bucket)) if s3 is not None and bucket is not None else None
    service = start_service(
        name, "hold", {**env, **hold_env(hold_dir, port, s3=s3_env, public=public), **extra}, hold_dir,
        f"http://127.0.0.1:{port}",
    )
    did = did_web_for_url(f"http://localhost:{port}")
    if s3_env is None:
        return Hold(service, did, root=hold_dir / "hold" / "blobs")
    return Hold(service, did, bucket=bucket, s3=s3)


# Long enough that "did not wait for the hung hold" is told apart from "a busy machine was slow"
# with room to spare (it was 1.5 s, against stopwatch bounds of 0.5 s).
HOLD_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def holds(
    tmp_path_factory: pytest.TempPathFactory, valkey_url: str, pds_network: TestNetwork, s3_endpoint: S3Endpoint
) -> Iterator[Holds]:
    work: Path = tmp_path_factory.mktemp("holds")
    env = network_env(valkey_url, pds_network.plc_url, pds_network.pds_url)
    quotas = work / "quotas.yaml"
    quotas.write_text("tiers:\n  tiny: 3MB\ndefaults:\n  new_crew_tier: tiny\n")
    bucket = f"public-{uuid.uuid4().hex[:10]}"
    s3_endpoint.client().create_bucket(Bucket=bucket)
    started: list[Service] = []
    captain = create_account(pds_network.pds_url, "captain").did  # holds publish their captain record
    try:
        closed = _hold("closed", work, env, public=False, extra={"HOLD_ALLOW_ALL_CREW": "false", "HOLD_OWNER": captain})
        started.append(closed.service)
        tiny = _hold("tiny", work, env, public=False, extra={"HOLD_QUOTAS_PATH": str(quotas), "HOLD_OWNER": captain})
        started.append(tiny.service)
        public = _hold("public", work, env, public=True, extra={}, s3=s3_endpoint, bucket=bucket)
        started.append(public.service)
        port = free_port()
        (work / "av").mkdir()
        appview = start_service(
            "appview", "appview",
            {**env, **appview_env(work / "av", port, closed.did), "ATCR_HOLD_TIMEOUT": str(HOLD_TIMEOUT)},
            work / "av", f"http://127.0.0.1:{port}",
        )
        started.append(appview)
        yield Holds(appview, closed, tiny, public, pds_network, bucket)
    finally:
        for svc in reversed(started):
            with_cont(svc)
            svc.stop()


def with_cont(svc: Service) -> None:
    if svc.proc.poll() is None:
        os.kill(svc.proc.pid, signal.SIGCONT)


def user(holds: Holds, name: str, default_hold: str | None) -> Pusher:
    account = create_account(holds.network.pds_url, name)
    pusher = Pusher(account=account, app_password=create_app_password(account, "docker"))
    if default_hold:
        r = httpx.post(
            f"{holds.network.pds_url}/xrpc/com.atproto.repo.putRecord", headers=account.auth_headers, timeout=30,
            json={"repo": account.did, "collection": keys.PROFILE, "rkey": "self",
                  "record": {"$type": keys.PROFILE, "defaultHold": default_hold,
                             "createdAt": "2026-01-01T00:00:00Z"}},
        )
        assert r.status_code == 200, r.text
    return pusher


def image(tmp: Path, sizes: list[int]) -> Path:
    layout = Layout(tmp / f"img-{uuid.uuid4().hex[:8]}")
    layout.tag(layout.image(layers=[layout.add_blob(os.urandom(n)) for n in sizes]), "v1")
    return layout.root


def skopeo_push(holds: Holds, pusher: Pusher, layout: Path, dest: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--preserve-digests", "--dest-tls-verify=false",
         f"--dest-creds={pusher.handle}:{pusher.app_password}", f"oci:{layout}:v1",
         f"docker://{holds.host}/{pusher.handle}/{dest}"],
        capture_output=True, text=True, timeout=300,
    )


def blob_digests(layout: Path) -> list[str]:
    """The layers and config of the layout's image (every blob but the manifest itself)."""
    import json

    index = json.loads((layout / "index.json").read_text())
    raw = (layout / "blobs" / "sha256" / str(index["manifests"][0]["digest"])[7:]).read_bytes()
    manifest = json.loads(raw)
    return [manifest["config"]["digest"], *(x["digest"] for x in manifest["layers"])]


def layer_of_size(layout: Path, size: int) -> str:
    return next(d for d in blob_digests(layout) if (layout / "blobs" / "sha256" / d[7:]).stat().st_size == size)


def quota(hold: Hold, pusher: Pusher) -> dict[str, int]:
    r = httpx.get(f"{hold.url}/xrpc/io.atcr.hold.getQuota", params={"userDid": pusher.did}, timeout=10)
    r.raise_for_status()
    return dict(r.json())


def manifest_records(holds: Holds, pusher: Pusher) -> list[dict[str, object]]:
    r = httpx.get(f"{holds.network.pds_url}/xrpc/com.atproto.repo.listRecords",
                  params={"repo": pusher.did, "collection": keys.MANIFEST, "limit": 100}, timeout=30)
    r.raise_for_status()
    return list(r.json()["records"])


def test_push_goes_to_the_hold_the_user_chose(holds: Holds, tmp_path: Path) -> None:
    """The AppView's default hold is private and closed: a user who chose the public hold
    pushes anyway, and every blob lands there (none on the default)."""
    sailor = user(holds, "pubuser", holds.public.did)
    layout = image(tmp_path, [300_000, 200_000])
    done = skopeo_push(holds, sailor, layout, "app:1")
    assert done.returncode == 0, done.stderr
    pushed = blob_digests(layout)  # two layers and the config (the manifest bytes live in the PDS)
    assert len(pushed) == 3 and all(holds.public.stores(d) for d in pushed)
    assert not any(holds.closed.stores(d) or holds.tiny.stores(d) for d in pushed)
    (record,) = manifest_records(holds, sailor)
    assert record["value"]["holdDid"] == holds.public.did  # type: ignore[index]


def test_crew_of_an_open_hold_pushes_there_and_a_stranger_is_told_why(holds: Holds, tmp_path: Path) -> None:
    member = user(holds, "crewuser", holds.tiny.did)
    layout = image(tmp_path, [200_000])
    done = skopeo_push(holds, member, layout, "app:1")
    assert done.returncode == 0, done.stderr
    pushed = blob_digests(layout)
    assert all(holds.tiny.stores(d) for d in pushed) and not any(holds.closed.stores(d) for d in pushed)
    (record,) = manifest_records(holds, member)
    assert record["value"]["holdDid"] == holds.tiny.did  # type: ignore[index]
    # A stranger without a defaultHold goes to the closed default hold: refused, and told why.
    stranger = user(holds, "stranger", None)
    done = skopeo_push(holds, stranger, image(tmp_path, [1000]), "app:1")
    assert done.returncode != 0
    assert "private" in done.stderr and "closed" in done.stderr and "localhost" in done.stderr, done.stderr


def test_anonymous_pull_of_a_private_blob_is_challenged(holds: Holds, tmp_path: Path) -> None:
    member = user(holds, "privpull", holds.tiny.did)
    layout = image(tmp_path, [1000])
    assert skopeo_push(holds, member, layout, "secret:1").returncode == 0
    layer = layer_of_size(layout, 1000)
    r = httpx.get(f"{holds.appview.url}/v2/{member.handle}/secret/blobs/{layer}", timeout=10)
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer realm=")
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"


def test_quota_refusal_changes_nothing_and_locks_nobody_out(holds: Holds, tmp_path: Path) -> None:
    member = user(holds, "quotauser", holds.tiny.did)
    before = quota(holds.tiny, member)
    assert before["totalSize"] == 0 and before["limit"] == 3 * MB
    # 4 x 1 MB against 3 MB: refused partway; nothing counted, nothing reserved, no record.
    done = skopeo_push(holds, member, image(tmp_path, [MB, MB, MB, MB]), "big:1")
    assert done.returncode != 0
    assert "quota" in done.stderr.lower(), done.stderr
    after = quota(holds.tiny, member)
    assert after["totalSize"] == 0 and after.get("reservedSize", 0) == 0, after
    assert manifest_records(holds, member) == []
    # ... and the next small push succeeds at once.
    small = image(tmp_path, [MB])
    done = skopeo_push(holds, member, small, "small:1")
    assert done.returncode == 0, done.stderr
    got = quota(holds.tiny, member)
    assert got["totalSize"] == MB and got["uniqueBlobs"] == 1 and got.get("reservedSize", 0) == 0, got


def test_layers_the_hold_already_has_still_count(holds: Holds, tmp_path: Path) -> None:
    """A user near their quota pushes an image whose big layer another user already stored
    (skopeo finds it and skips the upload): refused before the manifest record is written."""
    other = user(holds, "sharer", holds.tiny.did)
    layout = Layout(tmp_path / "shared")
    big = os.urandom(2 * MB)
    layer = layout.add_blob(big)
    layout.tag(layout.image(layers=[layer]), "v1")
    assert skopeo_push(holds, other, layout.root, "base:1").returncode == 0
    near = user(holds, "nearuser", holds.tiny.did)
    assert skopeo_push(holds, near, image(tmp_path, [int(1.5 * MB)]), "mine:1").returncode == 0
    used = quota(holds.tiny, near)["totalSize"]
    mounted = Layout(tmp_path / "mounted")
    mounted.tag(mounted.image(layers=[mounted.add_blob(big), mounted.add_blob(os.urandom(100))]), "v1")
    done = skopeo_push(holds, near, mounted.root, "mounted:1")
    assert done.returncode != 0 and "quota" in done.stderr.lower(), done.stderr
    assert [r["value"]["repository"] for r in manifest_records(holds, near)] == ["mine"]  # type: ignore[index]
    assert quota(holds.tiny, near)["totalSize"] == used


def test_a_hung_hold_costs_seconds(holds: Holds, tmp_path: Path) -> None:
    sailor = user(holds, "hunguser", holds.public.did)
    layout = image(tmp_path, [5000])
    assert skopeo_push(holds, sailor, layout, "app:1").returncode == 0
    layer = layer_of_size(layout, 5000)
    url = f"{holds.appview.url}/v2/{sailor.handle}/app/blobs/{layer}"
    token = httpx.get(f"{holds.appview.url}/auth/token", timeout=30, params={
        "service": holds.host, "scope": f"repository:{sailor.handle}/app:pull"}).json()["token"]
    auth = {"Authorization": f"Bearer {token}"}
    os.kill(holds.public.service.proc.pid, signal.SIGSTOP)
    try:
        timings = []
        for _ in range(4):
            started = time.monotonic()
            r = httpx.get(url, headers=auth, timeout=30)
            timings.append(time.monotonic() - started)
            assert r.status_code == 503 and r.json()["errors"][0]["code"] == "UNAVAILABLE", r.text
        # The first waits out the hold timeout (the AppView's 503, not the client's 30 s, ends it).
        assert timings[0] < HOLD_TIMEOUT + 10, timings
        # Given up on: the next requests fail fast, i.e. well within the 10 s timeout. One a
        # second may go through as a probe (and wait it out again); on a stalled machine that
        # could be any one of them.
        assert sorted(timings[1:])[1] < HOLD_TIMEOUT / 2, timings
        started = time.monotonic()
        page = httpx.get(f"{holds.appview.url}/r/{sailor.handle}/app", timeout=30)
        assert page.status_code == 200
        # The page does not wait for the hung hold either (it gives its status HOLD_WAIT, 0.4 s:
        # tests/unit/web/test_holdhealth.py).
        assert time.monotonic() - started < HOLD_TIMEOUT / 2
    finally:
        os.kill(holds.public.service.proc.pid, signal.SIGCONT)
