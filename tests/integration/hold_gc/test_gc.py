"""Online garbage collection against real PDS accounts, on local disk and on (moto) S3.

Ordering between a push and a sweep is forced with events (a push paused inside its lease,
a deletion paused after its condemnation), never with sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from atcr.digest import Digest
from tests.integration.hold_gc.conftest import Image, MakeWorld, blob, digest_of

pytestmark = pytest.mark.integration


async def test_deleted_image_is_collected_shared_blobs_stay(make_world: MakeWorld) -> None:
    async with make_world() as w:
        alice, bob = w.account("alice"), w.account("bob")
        shared, reused, unique = blob("shared"), blob("reused"), blob("unique", 5000)
        app = Image(alice, "app", "latest", [shared, reused, unique], blob("cfg-app"))
        other = Image(alice, "other", "v1", [reused], blob("cfg-other"))
        tool = Image(bob, "tool", "latest", [shared, blob("bob-only")], blob("cfg-tool"))
        for image in (app, other, tool):
            await w.push(image)
        before = await w.quota(alice)
        assert before["totalSize"] == len(shared) + len(reused) + len(unique)

        await w.delete(app)  # the tag, then the manifest, at alice's PDS
        dry, text = await w.run_gc(dry_run=True)
        gone = {digest_of(unique), digest_of(app.config)}
        assert {d["digest"] for d in dry["deleted"]} == gone
        assert f"would delete {digest_of(unique)} {len(unique)}" in text
        assert all([await w.stored(d) for d in gone])  # a dry run deletes nothing

        report, text = await w.run_gc(grace=0)
        assert {d["digest"] for d in report["deleted"]} == gone
        assert report["bytes_reclaimed"] == len(unique) + len(app.config)
        assert f"2 blob(s), {len(unique) + len(app.config)} bytes reclaimed" in text
        for d in gone:
            assert not await w.stored(d)
        for d in other.blob_digests + tool.blob_digests:
            assert await w.stored(d), d
        # alice's layer records of the deleted manifest are gone, and her usage with them
        assert all(r["manifest"] != app.uri for r in await w.layer_records())
        assert report["records_removed"] == 3
        after = await w.quota(alice)
        assert after["totalSize"] == len(reused) and after["uniqueBlobs"] == 1
        assert (await w.quota(bob))["totalSize"] == len(shared) + len(tool.layers[1])

        # A re-push of the deleted image writes its layer records again and counts again.
        await w.push(app)
        assert (await w.quota(alice))["totalSize"] == before["totalSize"]
        report, _ = await w.run_gc(grace=0)
        assert report["blobs_deleted"] == 0 and all([await w.stored(d) for d in app.blob_digests])


async def test_grace_keeps_recently_unreferenced_blobs(make_world: MakeWorld) -> None:
    async with make_world() as w:
        alice = w.account("alice")
        image = Image(alice, "app", "latest", [blob("a")], blob("cfg"))
        await w.push(image)
        await w.delete(image)
        report, _ = await w.run_gc(grace=3600)
        assert report["blobs_deleted"] == 0 and report["kept_grace"] == 2
        assert all([await w.stored(d) for d in image.blob_digests])
        assert len(await w.layer_records()) == 1  # the stale record waits for the grace too


async def test_upload_in_flight_survives_and_push_completes(make_world: MakeWorld) -> None:
    async with make_world() as w:
        alice = w.account("alice")
        image = Image(alice, "app", "latest", [blob("layer")], blob("cfg"))
        for data in [*image.layers, image.config]:
            await w.upload(alice, data)  # uploaded; the manifest has not come yet
        report, _ = await w.run_gc(grace=0)
        assert report["blobs_deleted"] == 0 and report["kept_in_flight"] == 2
        await w.push(image, upload=False)  # the manifest arrives after the sweep
        report, _ = await w.run_gc(grace=0)
        assert report["blobs_deleted"] == 0 and report["kept_referenced"] == 2
        assert all([await w.stored(d) for d in image.blob_digests])


async def test_push_racing_the_sweep_keeps_its_blob(make_world: MakeWorld) -> None:
    """A push that reuses a blob nothing references any more (no upload: the blob is there)
    is inside notifyManifest, holding its lease, while the sweep runs: the blob stays."""
    async with make_world() as w:
        alice = w.account("alice")
        old = Image(alice, "app", "old", [blob("base")], blob("cfg-old"))
        await w.push(old)
        await w.delete(old)
        new = Image(alice, "app", "new", old.layers, blob("cfg-new"))
        await w.upload(alice, new.config)

        notifications = w.app.state.ledger.notifications
        inside, go_on = asyncio.Event(), asyncio.Event()
        size_of = notifications._size_of

        async def paused_size_of(digest: Digest) -> Any:
            inside.set()
            await go_on.wait()
            return await size_of(digest)

        notifications._size_of = paused_size_of
        push = asyncio.create_task(w.notify(new))
        await inside.wait()  # the push holds its lease and is checking storage
        report, _ = await w.run_gc(grace=0)
        notifications._size_of = size_of
        go_on.set()
        r = await push
        assert r.status_code == 200, r.text
        await w.write_records(new)
        base = digest_of(old.layers[0])
        assert base not in {d["digest"] for d in report["deleted"]}
        assert await w.stored(base)
        assert not await w.stored(digest_of(old.config))  # what the race did not touch still went
        report, _ = await w.run_gc(grace=0)
        assert report["blobs_deleted"] == 0 and await w.stored(base)


async def test_sweep_first_then_push_is_refused_and_retried(make_world: MakeWorld) -> None:
    """The opposite order: the sweep condemned the blob before the push leased it. The push
    waits for the deletion and is refused (LayerNotStored: no manifest names a missing blob);
    the client uploads the blob again and the push completes."""
    async with make_world() as w:
        alice = w.account("alice")
        old = Image(alice, "app", "old", [blob("base")], blob("cfg-old"))
        await w.push(old)
        await w.delete(old)
        new = Image(alice, "app", "new", old.layers, blob("cfg-new"))
        await w.upload(alice, new.config)

        store = w.hold.services.store
        condemned, go_on = asyncio.Event(), asyncio.Event()
        delete_many = store.delete_many

        async def paused_delete(digests: Sequence[Digest]) -> list[Digest]:
            if digest_of(old.layers[0]) in {str(d) for d in digests}:
                condemned.set()  # the sweep has condemned the blob and is about to delete it
                await go_on.wait()
            return await delete_many(digests)

        store.delete_many = paused_delete  # type: ignore[method-assign]
        sweep = asyncio.create_task(w.run_gc(grace=0))
        await condemned.wait()
        push = asyncio.create_task(w.notify(new))
        go_on.set()
        r = await push
        await sweep
        store.delete_many = delete_many  # type: ignore[method-assign]
        assert r.status_code == 400 and r.json()["error"] == "LayerNotStored", r.text
        await w.push(new)  # the retry uploads the layer again
        assert all([await w.stored(d) for d in new.blob_digests])
        report, _ = await w.run_gc(grace=0)
        assert report["blobs_deleted"] == 0


async def test_unreachable_pds_keeps_its_users_blobs(make_world: MakeWorld) -> None:
    async with make_world() as w:
        alice, bob = w.account("alice"), w.account("bob")
        a = Image(alice, "app", "latest", [blob("alice-layer")], blob("cfg-a"))
        b = Image(bob, "tool", "latest", [blob("bob-layer")], blob("cfg-b"))
        await w.push(a)
        await w.push(b)
        await w.delete(a)
        await w.delete(b)
        w.down.add(bob.did)
        report, text = await w.run_gc(grace=0)
        assert report["users_unreachable"] == [bob.did]
        assert f"{bob.did}'s PDS could not be asked" in text
        assert all([await w.stored(d) for d in b.blob_digests])  # nothing of bob's
        assert not await w.stored(digest_of(a.layers[0]))  # alice's layer: her PDS answered
        assert any(r["userDid"] == bob.did for r in await w.layer_records())
        w.down.clear()
        report, _ = await w.run_gc(grace=0)
        assert not report["users_unreachable"]
        for d in b.blob_digests + a.blob_digests:
            assert not await w.stored(d), d


async def test_one_sweeper_at_a_time_and_metrics(make_world: MakeWorld) -> None:
    async with make_world() as w:
        guard = w.gc.guard
        assert guard is not None
        token = await guard.lock(60)  # another process is sweeping
        assert token is not None
        report = await w.gc.run()
        assert report.skipped
        await guard.unlock(token)
        alice = w.account("alice")
        image = Image(alice, "app", "latest", [blob("x")], blob("cfg"))
        await w.push(image)
        await w.delete(image)
        await w.run_gc(grace=0)
        text = (await w.hold.client.get(f"{w.hold.url}/metrics")).text
        assert 'hold_gc_runs_total{outcome="skipped"} 1.0' in text
        assert "hold_gc_blobs_reclaimed_total 2.0" in text
        assert f"hold_gc_bytes_reclaimed_total {float(len(image.layers[0]) + len(image.config))}" in text
        assert "hold_gc_run_duration_seconds_count" in text


async def test_interrupted_run_is_finished_by_the_next(make_world: MakeWorld) -> None:
    """A run that crashed after condemning a blob: the next run deletes it first."""
    async with make_world() as w:
        alice = w.account("alice")
        image = Image(alice, "app", "latest", [blob("x")], blob("cfg"))
        await w.push(image)
        await w.delete(image)
        guard = w.gc.guard
        assert guard is not None
        victim = digest_of(image.layers[0])
        assert await guard.condemn(victim, snapshot=guard.now() + 1)
        report, _ = await w.run_gc(grace=3600)
        assert report["resumed"] == 1 and not await w.stored(victim)
        assert await guard.condemned() == []


@pytest.mark.parametrize("driver", ["filesystem"])  # one driver is enough for the CLI's in-process path
async def test_gc_runs_here_when_no_hold_is_running(make_world: MakeWorld, driver: str) -> None:
    from io import StringIO

    from hold.gc.cli import run_gc

    async with make_world() as w:
        alice = w.account("alice")
        image = Image(alice, "app", "latest", [blob("x")], blob("cfg"))
        await w.push(image)
        await w.delete(image)
        settings = w.hold.settings
    # The hold has stopped (its Valkey data flushed): an orphan on disk, nothing references it.
    out = StringIO()
    await run_gc(settings, dry_run=False, grace=0, out=out)
    assert "2 blob(s)" in out.getvalue(), out.getvalue()
    assert not (settings.storage_root_dir / Digest.parse(digest_of(image.config)).blob_path).exists()


async def test_push_naming_a_collected_config_is_refused(make_world: MakeWorld) -> None:
    """Configs have no layer record, so notifyManifest checks them in storage too: a manifest
    whose config the collector deleted is refused (the client uploads it again)."""
    async with make_world() as w:
        alice = w.account("alice")
        old = Image(alice, "app", "old", [blob("layer")], blob("cfg"))
        await w.push(old)
        await w.delete(old)
        await w.run_gc(grace=0)
        again = Image(alice, "app", "again", [blob("other")], old.config)
        await w.upload(alice, again.layers[0])
        r = await w.notify(again)
        assert r.status_code == 400 and r.json()["error"] == "LayerNotStored" and "config" in r.json()["message"]
        await w.push(again)  # uploads the config again
        assert all([await w.stored(d) for d in again.blob_digests])
