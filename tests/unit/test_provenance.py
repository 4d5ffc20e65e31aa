"""atcr/provenance.py without a network: proofs built here with the hold's MST and signing code,
the verifier run over fakes of the resolver, the PDS and the PLC audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from atcr.dagcbor import Cid, encode, from_json, write_car
from atcr.errors import DidNotFound
from atcr.identity import DidDocument, Identity
from atcr.mst import MissingNode, lookup
from atcr.provenance import (
    ForgedProof,
    IdentityUnresolved,
    KeyRotated,
    KeyWindow,
    RecordMissing,
    Status,
    Verifier,
    WrongAccount,
    WrongKey,
    check_key,
    check_plc_log,
    key_windows,
    read_proof,
    verify_car,
)
from atcr.readmodel.keys import MANIFEST, TAG, manifest_rkey, repo_manifest_rkey, tag_rkey
from atcr.serviceauth import did_key_of, multikey_of, sign_low_s
from atcr.tid import encode_tid, tid_datetime
from atcr.verifycmd import BadReference, parse_reference
from hold.repo.mst import MST, NodeCache, NodeStore

pytestmark = pytest.mark.unit

DID = "did:plc:alice000000000000000000"
OTHER = "did:plc:mallory0000000000000000"
DIGEST = "sha256:" + "ab" * 32
T0 = datetime(2026, 6, 1, tzinfo=UTC)


def rev_at(when: datetime) -> str:
    return encode_tid(int(when.timestamp() * 1_000_000), 7)


class Repo:
    """A signed repository snapshot: records, one commit, proofs as sync.getRecord serves them."""

    def __init__(self, did: str, key: ec.EllipticCurvePrivateKey, records: Mapping[str, dict[str, Any]], when: datetime):
        self.did = did
        self.blocks: dict[Cid, bytes] = {}
        mst = MST.empty(NodeStore(self.blocks.get, NodeCache()))
        for path, record in records.items():
            data = encode(from_json(record))
            cid = Cid.for_block(data)
            self.blocks[cid] = data
            mst = mst.put(path, cid)
        root, new = mst.finalize()
        self.blocks.update(new)
        self.mst = MST.load(NodeStore(self.blocks.get, NodeCache()), root)
        self.rev = rev_at(when)
        unsigned = {"did": did, "version": 3, "data": root, "rev": self.rev, "prev": None}
        commit = encode({**unsigned, "sig": sign_low_s(key, encode(unsigned))})
        self.commit = Cid.for_block(commit)
        self.blocks[self.commit] = commit

    def proof(self, path: str) -> bytes:
        blocks = [(self.commit, self.blocks[self.commit])]
        blocks += [(c, self.blocks[c]) for c in self.mst.path_cids(path)]
        value = self.mst.get(path)
        if value is not None:
            blocks.append((value, self.blocks[value]))
        return write_car(self.commit, blocks)


def manifest_record(repository: str = "app", digest: str = DIGEST) -> dict[str, Any]:
    return {"$type": MANIFEST, "repository": repository, "digest": digest, "mediaType": "x", "schemaVersion": 2}


def tag_record(repository: str = "app", tag: str = "1", rkey: str | None = None, did: str = DID) -> dict[str, Any]:
    target = rkey or manifest_rkey(DIGEST)
    return {"$type": TAG, "repository": repository, "tag": tag, "manifest": f"at://{did}/{MANIFEST}/{target}"}


def standard_records(did: str = DID) -> dict[str, dict[str, Any]]:
    records = {
        f"{MANIFEST}/{manifest_rkey(DIGEST)}": manifest_record(),
        f"{TAG}/{tag_rkey('app', '1')}": tag_record(did=did),
    }
    for i in range(40):  # enough keys for a tree of several layers
        records[f"io.example.filler/{encode_tid(1_700_000_000_000_000 + i * 7919, 1)}"] = {"n": i}
    return records


KEY = ec.generate_private_key(ec.SECP256K1())


# --- read_proof / MST lookup -------------------------------------------------------------------


def test_read_proof_of_present_and_absent_records() -> None:
    repo = Repo(DID, KEY, standard_records(), T0)
    rkey = manifest_rkey(DIGEST)
    proof = read_proof(repo.proof(f"{MANIFEST}/{rkey}"), DID, MANIFEST, rkey)
    assert proof.record is not None and proof.record["digest"] == DIGEST
    assert proof.rev == repo.rev and proof.commit_cid == str(repo.commit)
    assert proof.commit_time is not None and abs(proof.commit_time - T0) < timedelta(milliseconds=1)
    absent = read_proof(repo.proof(f"{MANIFEST}/nothere"), DID, MANIFEST, "nothere")
    assert absent.record is None and absent.record_cid is None


def test_read_proof_refuses_another_repos_commit_and_a_missing_path() -> None:
    repo = Repo(OTHER, KEY, standard_records(), T0)
    rkey = manifest_rkey(DIGEST)
    with pytest.raises(WrongAccount):
        read_proof(repo.proof(f"{MANIFEST}/{rkey}"), DID, MANIFEST, rkey)
    # A CAR holding the signed commit but not the tree path proves nothing.
    ours = Repo(DID, KEY, standard_records(), T0)
    bare = write_car(ours.commit, [(ours.commit, ours.blocks[ours.commit])])
    with pytest.raises(ForgedProof, match="tree path"):
        read_proof(bare, DID, MANIFEST, rkey)


def test_every_single_byte_change_is_a_forged_proof() -> None:
    repo = Repo(DID, KEY, standard_records(), T0)
    rkey = manifest_rkey(DIGEST)
    car = repo.proof(f"{MANIFEST}/{rkey}")
    for mask in (0x01, 0x10, 0x80, 0xFF):
        for i in range(len(car)):
            bad = car[:i] + bytes([car[i] ^ mask]) + car[i + 1 :]
            with pytest.raises(ForgedProof):
                read_proof(bad, DID, MANIFEST, rkey)
    for cut in range(len(car)):  # and every truncation
        with pytest.raises(ForgedProof):
            read_proof(car[:cut], DID, MANIFEST, rkey)


def test_lookup_needs_every_node_on_the_path() -> None:
    repo = Repo(DID, KEY, standard_records(), T0)
    path = f"{MANIFEST}/{manifest_rkey(DIGEST)}"
    root = repo.mst.root_cid
    held = {c: repo.blocks[c] for c in repo.mst.path_cids(path)}
    assert lookup(held, root, path) == repo.mst.get(path)
    with pytest.raises(MissingNode):
        lookup({}, root, path)


# --- keys and the audit log --------------------------------------------------------------------


def plc_entry(when: datetime, key: str | None, *, nullified: bool = False, kind: str = "plc_operation") -> dict[str, Any]:
    if kind == "create":
        op: dict[str, Any] = {"type": "create", "signingKey": key}
    elif kind == "plc_tombstone":
        op = {"type": "plc_tombstone"}
    else:
        op = {"type": "plc_operation", "verificationMethods": {"atproto": key} if key else {}}
    return {"did": DID, "operation": op, "nullified": nullified, "createdAt": when.isoformat().replace("+00:00", "Z")}


def test_key_windows_follow_the_log_skip_nullified_and_end_at_a_tombstone() -> None:
    a, b, c = (did_key_of(ec.generate_private_key(ec.SECP256K1())) for _ in range(3))
    t = [T0 + timedelta(days=i) for i in range(6)]
    log = [
        plc_entry(t[0], a, kind="create"),
        plc_entry(t[1], a),  # a handle change: same key, the window goes on
        plc_entry(t[2], c, nullified=True),  # never took effect
        plc_entry(t[3], b),
        plc_entry(t[4], None, kind="plc_tombstone"),
    ]
    assert key_windows(log) == [KeyWindow(a, t[0], t[3]), KeyWindow(b, t[3], t[4])]
    assert key_windows(log[:4]) == [KeyWindow(a, t[0], t[3]), KeyWindow(b, t[3], None)]


def test_check_key_current_rotated_and_wrong() -> None:
    old, new, stranger = (ec.generate_private_key(ec.SECP256K1()) for _ in range(3))
    rotated_at = T0 + timedelta(days=10)
    windows = [KeyWindow(did_key_of(old), T0, rotated_at), KeyWindow(did_key_of(new), rotated_at, None)]
    path = f"{MANIFEST}/{manifest_rkey(DIGEST)}"

    def proof(key: ec.EllipticCurvePrivateKey, when: datetime) -> Any:
        repo = Repo(DID, key, standard_records(), when)
        return read_proof(repo.proof(path), DID, MANIFEST, manifest_rkey(DIGEST))

    current = check_key(proof(new, rotated_at + timedelta(days=1)), did_key_of(new), windows)
    assert current.current and current.key == did_key_of(new)
    with pytest.raises(KeyRotated) as rotated:
        check_key(proof(old, T0 + timedelta(days=1)), did_key_of(new), windows)
    assert rotated.value.verdict.key == did_key_of(old) and rotated.value.verdict.window == windows[0]
    with pytest.raises(WrongKey, match="only from"):
        check_key(proof(old, rotated_at + timedelta(days=1)), did_key_of(new), windows)  # signed after rotation
    with pytest.raises(WrongKey):
        check_key(proof(stranger, T0 + timedelta(days=1)), did_key_of(new), windows)
    with pytest.raises(WrongKey):
        check_key(proof(old, T0 + timedelta(days=1)), did_key_of(new), None)  # did:web: no history


# --- the verifier over fakes -------------------------------------------------------------------


class FakeResolver:
    def __init__(self, key: ec.EllipticCurvePrivateKey, did: str = DID) -> None:
        self.key = key
        self.did = did

    def doc(self) -> DidDocument:
        raw = {
            "id": self.did,
            "verificationMethod": [
                {"id": "#atproto", "type": "Multikey", "controller": self.did, "publicKeyMultibase": multikey_of(self.key)}
            ],
        }
        return DidDocument(self.did, "alice.test", "http://pds.invalid", multikey_of(self.key), {}, raw)

    async def resolve(self, identifier: str) -> Identity:
        if identifier not in (self.did, "alice.test"):
            raise DidNotFound(identifier)
        return Identity(self.did, "alice.test", "http://pds.invalid", multikey_of(self.key))

    async def resolve_did(self, did: str) -> DidDocument:
        return self.doc()


class FakePds:
    def __init__(self, repo: Repo, records: Mapping[str, dict[str, Any]]) -> None:
        self.repo = repo
        self.records = records
        self.calls: list[str] = []

    async def record_proof(self, pds: str, did: str, collection: str, rkey: str) -> bytes:
        self.calls.append(f"{collection}/{rkey}")
        return self.repo.proof(f"{collection}/{rkey}")

    async def list_records(self, pds: str, did: str, collection: str) -> list[tuple[str, dict[str, Any]]]:
        return [(p.split("/", 1)[1], v) for p, v in self.records.items() if p.startswith(collection + "/")]


class FakeAudit:
    def __init__(self, log: list[dict[str, Any]]) -> None:
        self.log = log

    async def audit_log(self, did: str) -> list[dict[str, Any]] | None:
        return self.log


def verifier_for(records: dict[str, dict[str, Any]], *, key: ec.EllipticCurvePrivateKey = KEY,
                 doc_key: ec.EllipticCurvePrivateKey | None = None, audit: list[dict[str, Any]] | None = None,
                 when: datetime = T0) -> tuple[Verifier, FakePds]:
    pds = FakePds(Repo(DID, key, records, when), records)
    resolver = FakeResolver(doc_key or key)
    return Verifier(resolver, pds, FakeAudit(audit or []), timeout=5), pds  # type: ignore[arg-type]


def check(verifier: Verifier, **kw: Any) -> Any:
    return asyncio.run(verifier.check("alice.test", "app", **kw))


def test_verified_by_tag_and_by_digest() -> None:
    verifier, pds = verifier_for(standard_records())
    by_tag = check(verifier, tag="1")
    assert by_tag.status is Status.VERIFIED, by_tag.message
    assert by_tag.digest == DIGEST and by_tag.did == DID and by_tag.handle == "alice.test"
    assert by_tag.key == did_key_of(KEY) and by_tag.key_current
    assert by_tag.commit_time == T0.isoformat().replace("+00:00", "Z")
    assert check(verifier, digest=DIGEST).status is Status.VERIFIED
    assert check(verifier, tag="1", digest=DIGEST, image_digest=DIGEST).status is Status.VERIFIED
    assert by_tag.to_json()["ok"] is True and "proofs" not in by_tag.to_json()


def test_distinct_failures() -> None:
    other = "sha256:" + "cd" * 32
    verifier, _ = verifier_for(standard_records())
    assert check(verifier, tag="1", digest=other).status is Status.TAG_MOVED
    assert check(verifier, tag="2").status is Status.RECORD_MISSING
    assert check(verifier, digest=other).status is Status.RECORD_MISSING
    assert check(verifier, tag="1", image_digest=other).status is Status.DIGEST_MISMATCH
    wrong, _ = verifier_for(standard_records(), doc_key=ec.generate_private_key(ec.SECP256K1()))
    assert check(wrong, tag="1").status is Status.WRONG_KEY
    unknown = asyncio.run(verifier.check("bob.test", "app", tag="1"))
    assert unknown.status is Status.IDENTITY_UNRESOLVED


def test_tag_pointing_at_a_changed_or_foreign_record() -> None:
    records = standard_records()
    records[f"{MANIFEST}/{manifest_rkey(DIGEST)}"] = manifest_record(repository="elsewhere")
    changed, _ = verifier_for(records)
    assert check(changed, tag="1").status is Status.RECORD_CHANGED
    records = standard_records()
    records[f"{TAG}/{tag_rkey('app', '1')}"] = tag_record(did=OTHER)
    foreign, _ = verifier_for(records)
    assert check(foreign, tag="1").status is Status.WRONG_ACCOUNT


def test_records_under_other_keys_are_found_by_what_they_say() -> None:
    """ATCR-style tag keys and TID manifest keys (other AppViews), and our suffix keys."""
    records = {
        f"{MANIFEST}/3lbuzkd4gqs2c": manifest_record(),
        f"{TAG}/app_1": tag_record(rkey="3lbuzkd4gqs2c"),
        f"{MANIFEST}/{repo_manifest_rkey('two', DIGEST)}": manifest_record(repository="two"),
    }
    verifier, _ = verifier_for(records)
    by_tag = check(verifier, tag="1")
    assert by_tag.status is Status.VERIFIED, by_tag.message
    assert by_tag.manifest_uri == f"at://{DID}/{MANIFEST}/3lbuzkd4gqs2c" and by_tag.tag_uri == f"at://{DID}/{TAG}/app_1"
    assert check(verifier, digest=DIGEST).status is Status.VERIFIED
    two = asyncio.run(verifier.check("alice.test", "two", digest=DIGEST))
    assert two.status is Status.VERIFIED and two.manifest_uri.endswith(repo_manifest_rkey("two", DIGEST))


def signed_log(rotation: ec.EllipticCurvePrivateKey, keys: list[tuple[str, datetime]]) -> tuple[str, list[dict[str, Any]]]:
    """(did, audit log) of a did:plc whose `#atproto` key was each of `keys` from its time on,
    every operation signed with `rotation` as the PLC directory requires."""
    import base64
    import hashlib

    entries: list[dict[str, Any]] = []
    prev: str | None = None
    did = ""
    for key, when in keys:
        op = {"type": "plc_operation", "rotationKeys": [did_key_of(rotation)], "verificationMethods": {"atproto": key},
              "alsoKnownAs": ["at://alice.test"], "services": {}, "prev": prev}
        op["sig"] = base64.urlsafe_b64encode(sign_low_s(rotation, encode(op))).decode().rstrip("=")
        cid = str(Cid.for_block(encode(op)))
        if prev is None:
            did = "did:plc:" + base64.b32encode(hashlib.sha256(encode(op)).digest()).decode().lower()[:24]
        entries.append({"did": did, "operation": op, "cid": cid, "nullified": False,
                        "createdAt": when.isoformat().replace("+00:00", "Z")})
        prev = cid
    return did, entries


def test_plc_log_chain_is_checked() -> None:
    rotation = ec.generate_private_key(ec.SECP256K1())
    a, b = (did_key_of(ec.generate_private_key(ec.SECP256K1())) for _ in range(2))
    did, log = signed_log(rotation, [(a, T0), (b, T0 + timedelta(days=1))])
    check_plc_log(did, log)
    with pytest.raises(IdentityUnresolved, match="genesis"):
        check_plc_log(OTHER, log)
    forged = [log[0], {**log[1], "cid": None, "operation": {**log[1]["operation"], "verificationMethods": {"atproto": a}}}]
    with pytest.raises(IdentityUnresolved, match="not signed"):
        check_plc_log(did, forged)
    with pytest.raises(IdentityUnresolved, match="CID"):
        check_plc_log(did, [log[0], {**log[1], "cid": log[0]["cid"]}])
    with pytest.raises(IdentityUnresolved, match="follow"):
        check_plc_log(did, [log[0], log[1], log[1]])
    stranger = ec.generate_private_key(ec.SECP256K1())
    _, theirs = signed_log(stranger, [(a, T0), (b, T0 + timedelta(days=1))])
    with pytest.raises(IdentityUnresolved):
        check_plc_log(did, [log[0], {**theirs[1], "operation": {**theirs[1]["operation"], "prev": log[0]["cid"]}}])
    # A nullified operation is not part of the chain.
    check_plc_log(did, [log[0], {**forged[1], "nullified": True}, log[1]])


def test_tag_naming_its_record_only_by_key_moved() -> None:
    """A tag whose AT-URI has a TID rkey and no manifestDigest: where it points is what the record
    it names holds, so asking for another digest is TAG_MOVED, not a changed record."""
    records = {f"{MANIFEST}/3lbuzkd4gqs2c": manifest_record(), f"{TAG}/app_1": tag_record(rkey="3lbuzkd4gqs2c")}
    verifier, _ = verifier_for(records)
    assert check(verifier, tag="1", digest=DIGEST).status is Status.VERIFIED
    moved = check(verifier, tag="1", digest="sha256:" + "cd" * 32)
    assert moved.status is Status.TAG_MOVED, moved.message


def test_rotated_key_is_reported_with_its_window() -> None:
    old, new = ec.generate_private_key(ec.SECP256K1()), ec.generate_private_key(ec.SECP256K1())
    rotated_at = T0 + timedelta(days=1)
    did, log = signed_log(ec.generate_private_key(ec.SECP256K1()),
                          [(did_key_of(old), T0 - timedelta(days=1)), (did_key_of(new), rotated_at)])

    def verifier(when: datetime, audit: list[dict[str, Any]]) -> Verifier:
        records = standard_records(did)
        return Verifier(FakeResolver(new, did), FakePds(Repo(did, old, records, when), records),  # type: ignore[arg-type]
                        FakeAudit(audit), timeout=5)

    result = check(verifier(T0, log), tag="1")
    assert result.status is Status.KEY_ROTATED, result.message
    assert did_key_of(old) in result.message and "PLC audit log" in result.message
    assert result.key == did_key_of(old) and result.key_current is False
    assert check(verifier(rotated_at + timedelta(hours=1), log), tag="1").status is Status.WRONG_KEY
    # A directory that invents an operation (giving the old key back, unsigned by a rotation
    # key) is caught by the chain check. (The times it gives are its word: they are not signed.)
    forged = {**log[1], "cid": None, "createdAt": (rotated_at + timedelta(days=1)).isoformat(),
              "operation": {**log[1]["operation"], "verificationMethods": {"atproto": did_key_of(old)},
                            "prev": log[1]["cid"]}}
    late = rotated_at + timedelta(days=2)
    assert check(verifier(late, [*log, forged]), tag="1").status is Status.IDENTITY_UNRESOLVED


def test_a_hanging_pds_times_out() -> None:
    class Hanging(FakePds):
        async def record_proof(self, pds: str, did: str, collection: str, rkey: str) -> bytes:
            await asyncio.Event().wait()  # never answers
            raise AssertionError

    records = standard_records()
    verifier = Verifier(FakeResolver(KEY), Hanging(Repo(DID, KEY, records, T0), records), timeout=0.2)  # type: ignore[arg-type]
    result = check(verifier, tag="1")
    assert result.status is Status.PDS_UNREACHABLE and "did not finish" in result.message


def test_verify_car_offline() -> None:
    repo = Repo(DID, KEY, standard_records(), T0)
    car = repo.proof(f"{MANIFEST}/{manifest_rkey(DIGEST)}")
    verifier, _ = verifier_for(standard_records())
    ok = asyncio.run(verify_car(verifier, car, identifier=DID, repository="app", digest=DIGEST))
    assert ok.status is Status.VERIFIED and ok.source == "proof", ok.message
    uri = f"at://{OTHER}/{MANIFEST}/{manifest_rkey(DIGEST)}"
    foreign = asyncio.run(verify_car(verifier, car, identifier=DID, repository="app", digest=DIGEST, uri=uri))
    assert foreign.status is Status.WRONG_ACCOUNT
    other = "sha256:" + "cd" * 32
    missing = asyncio.run(verify_car(verifier, car, identifier=DID, repository="app", digest=other))
    assert missing.status is Status.RECORD_MISSING


def test_record_missing_is_an_error_type() -> None:
    assert RecordMissing.status is Status.RECORD_MISSING


# --- references and TIDs -----------------------------------------------------------------------


def test_parse_reference() -> None:
    ref = parse_reference("atcr.io/alice.bsky.social/team/app:1.2@sha256:" + "a" * 64)
    assert (ref.registry, ref.identity, ref.repository, ref.tag, ref.digest) == (
        "atcr.io", "alice.bsky.social", "team/app", "1.2", "sha256:" + "a" * 64
    )
    assert parse_reference("localhost:5000/did:plc:abc/app").tag == "latest"
    assert parse_reference("127.0.0.1:5000/did:plc:abc/app@sha256:" + "b" * 64).tag is None
    for bad in ("atcr.io/app:1", "atcr.io/alice/app@sha256:xyz", "atcr.io/alice/App:1", "atcr.io/alice/app:-x"):
        with pytest.raises(BadReference):
            parse_reference(bad)


def test_tid_time_round_trips() -> None:
    when = datetime(2026, 12, 6, 18, 0, 0, 123456, tzinfo=UTC)
    assert tid_datetime(rev_at(when)) == when
    with pytest.raises(ValueError):
        tid_datetime("not-a-tid")
