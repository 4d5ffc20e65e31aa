"""The firehose source against the real PDS's subscribeRepos: decode, verify, apply."""

from __future__ import annotations

import asyncio
from typing import Any

import libipld
import pytest
from websockets.asyncio.client import connect

from atcr.readmodel import keys, read
from jetstream.cbor import read_car
from jetstream.errors import MalformedEvent, VerificationFailed
from jetstream.events import CommitEvent
from jetstream.firehose import CommitVerifier, parse_frame
from tests.integration.jetstream.conftest import ConsumerFactory
from tests.integration.jetstream.helpers import Writer, eventually
from tests.support.pdsnet import TestNetwork

pytestmark = pytest.mark.integration


async def _frames_of(pds_url: str, did: str, count: int) -> list[bytes]:
    """The first `count` #commit frames of `did` with io.atcr ops, replayed from seq 0."""
    out: list[bytes] = []
    url = pds_url.replace("http://", "ws://") + "/xrpc/com.atproto.sync.subscribeRepos?cursor=0"
    async with connect(url, proxy=None, max_size=None) as ws:
        while len(out) < count:
            frame = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(frame, bytes)
            header, body = libipld.decode_dag_cbor_multi(frame)
            ours = header.get("t") == "#commit" and body.get("repo") == did
            if ours and any(op["path"].startswith("io.atcr.") for op in body["ops"]):
                out.append(frame)
    return out


async def test_firehose_consumer_applies_verified_commits(
    make_consumer: ConsumerFactory, writer: Writer, valkey: Any, pds_network: TestNetwork
) -> None:
    consumer = await make_consumer(
        JETSTREAM_URL="", ATCR_FIREHOSE_URLS=pds_network.pds_url, ATCR_BACKFILL_ENABLED="false"
    )

    async def up() -> bool:
        return all(s.status.connected for s in consumer.sources)

    await eventually(up)
    digest = await writer.push("fh", "latest")

    async def tagged() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "fh")
        return tags.get("latest") is not None and tags["latest"].digest == digest

    await eventually(tagged)
    await writer.delete(keys.TAG, keys.tag_rkey("fh", "latest"))

    async def untagged() -> bool:
        tags, _ = await read.read_tags(valkey, writer.did, "fh")
        return "latest" not in tags

    await eventually(untagged)
    source = consumer.sources[0]
    assert source.name.startswith("fh:")
    assert source.status.malformed == 0  # every commit verified
    assert consumer.checkpoints[source.name].applied is not None


async def test_verification_rejects_tampered_commits(
    make_consumer: ConsumerFactory, writer: Writer, pds_network: TestNetwork
) -> None:
    consumer = await make_consumer(start=False)
    await writer.push("proof", "v1")
    await writer.delete(keys.TAG, keys.tag_rkey("proof", "v1"))
    frames = await _frames_of(pds_network.pds_url, writer.did, 3)
    verifier = CommitVerifier(consumer._signing_key)

    # The genuine frames verify: create, create, delete.
    kinds = []
    for frame in frames:
        msg = parse_frame(frame, ("io.atcr.*",))
        assert msg.proof is not None
        await verifier.verify(msg.proof)
        kinds += [e.operation for e in msg.events if isinstance(e, CommitEvent)]
    assert kinds == ["create", "create", "delete"]

    header, body = libipld.decode_dag_cbor_multi(frames[0])

    # A signature that is not the repository key's.
    msg = parse_frame(frames[0], ("io.atcr.*",))
    assert msg.proof is not None
    commit = libipld.decode_dag_cbor(msg.proof.blocks[msg.proof.commit_cid])
    commit["sig"] = bytes(64)
    msg.proof.blocks[msg.proof.commit_cid] = libipld.encode_dag_cbor(commit)
    with pytest.raises(VerificationFailed):
        await verifier.verify(msg.proof)

    # An op that claims a record the signed tree does not hold.
    msg = parse_frame(frames[0], ("io.atcr.*",))
    other = parse_frame(frames[1], ("io.atcr.*",))
    assert msg.proof is not None and other.proof is not None
    action, path, _ = msg.proof.ops[0]
    msg.proof.ops[0] = (action, path, other.proof.ops[0][2])
    with pytest.raises(VerificationFailed):
        await verifier.verify(msg.proof)

    # A record block whose bytes do not match its CID never gets past the CAR reader.
    _, blocks = read_car(body["blocks"])
    assert blocks
    tampered = bytearray(body["blocks"])
    tampered[-1] ^= 0xFF
    body["blocks"] = bytes(tampered)
    with pytest.raises(MalformedEvent):
        parse_frame(libipld.encode_dag_cbor(header) + libipld.encode_dag_cbor(body), ("io.atcr.*",))
