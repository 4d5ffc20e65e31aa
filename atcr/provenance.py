"""Provenance from the publisher's own repository: who published an image, proven by ATProto.

Every manifest the registry writes is an `io.atcr.manifest` record in the publisher's repo,
and every tag an `io.atcr.tag` record; every commit of that repo is signed with the `#atproto`
key of the publisher's DID document. `com.atproto.sync.getRecord` answers a CAR holding the
signed commit, the MST path from the commit's root to the record, and the record. From it:

1. the CAR's blocks hash to their CIDs and the root is a commit of *this* DID (`read_proof`);
2. the commit's signature verifies with the DID document's `#atproto` key, or with an
   earlier key the PLC audit log shows was the repo's key at the time the rev names
   (`check_key`; reported as `key_rotated`, which is not a pass);
3. the MST path holds the record at `<collection>/<rkey>` with the record's CID;
4. the tag record names the repository and tag and points at the manifest record, which
   names the repository and the image's digest (and whose `manifestBlob` is those bytes).

Each way this can fail has its own `Status` (and `ProvenanceError` subclass), so a moved
tag, a deleted record, a forged CAR, a record of another account, a wrong or rotated key,
a digest mismatch and an unreachable PDS are told apart. docs/provenance.md has the trust
model: what this proves and what it does not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final, Protocol

from atcr.dagcbor import Cid, CorruptRepo, DagCborError, decode, encode, read_car, to_json
from atcr.errors import AtcrError, IdentityError, NetworkError
from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver
from atcr.mst import MissingNode, lookup
from atcr.readmodel.keys import MANIFEST, TAG, manifest_rkey, repo_manifest_rkey, tag_rkey
from atcr.readmodel.records import parse_at_uri
from atcr.serviceauth import atproto_key_of
from atcr.tid import tid_datetime

SIGNATURE_ARTIFACT_TYPE: Final = "application/vnd.atproto.signature.v1+json"
"""artifactType of the referrer that carries a manifest record's proof (ATCR's design name)."""
CAR_MEDIA_TYPE: Final = "application/vnd.ipld.car"
MAX_PROOF_BYTES: Final = 2 * 1024 * 1024
MAX_LISTED_RECORDS: Final = 10_000


class Status(StrEnum):
    VERIFIED = "verified"
    KEY_ROTATED = "key_rotated"
    WRONG_KEY = "wrong_key"
    FORGED_PROOF = "forged_proof"
    WRONG_ACCOUNT = "wrong_account"
    RECORD_MISSING = "record_missing"
    RECORD_CHANGED = "record_changed"
    TAG_MOVED = "tag_moved"
    DIGEST_MISMATCH = "digest_mismatch"
    PDS_UNREACHABLE = "pds_unreachable"
    IDENTITY_UNRESOLVED = "identity_unresolved"
    REGISTRY_ERROR = "registry_error"


class ProvenanceError(AtcrError):
    """A check failed; `status` says which, the message says what was found."""

    status: Status = Status.FORGED_PROOF


class ForgedProof(ProvenanceError):
    """The CAR is not a valid proof: a block does not hash to its CID, the commit or a node on
    the path is missing or malformed, or the record block is not the one the tree names."""

    status = Status.FORGED_PROOF


class WrongAccount(ProvenanceError):
    """The proof is a commit of another repository (a record of another account substituted),
    or a tag points at a record outside the publisher's repository."""

    status = Status.WRONG_ACCOUNT


class WrongKey(ProvenanceError):
    """The commit signature does not verify with the publisher's key (nor, for did:plc, with
    any key the audit log shows for the time the commit's rev names)."""

    status = Status.WRONG_KEY


class KeyRotated(ProvenanceError):
    """Signed with an earlier key of the DID that was valid when the commit says it was made,
    but is no longer the DID's key. Reported, not passed: a leaked old key could sign a
    commit with a back-dated rev."""

    status = Status.KEY_ROTATED

    def __init__(self, message: str, verdict: KeyVerdict) -> None:
        super().__init__(message)
        self.verdict = verdict


class RecordMissing(ProvenanceError):
    """The signed tree holds no such record: deleted, or never published."""

    status = Status.RECORD_MISSING


class RecordChanged(ProvenanceError):
    """The record exists but says something else (another repository or digest)."""

    status = Status.RECORD_CHANGED


class TagMoved(ProvenanceError):
    """The tag record now points at another digest than the one asked about."""

    status = Status.TAG_MOVED


class DigestMismatch(ProvenanceError):
    """The image's digest is not the digest the publisher's record names."""

    status = Status.DIGEST_MISMATCH


class PdsUnreachable(ProvenanceError):
    """The publisher's PDS did not answer (in time, or at all)."""

    status = Status.PDS_UNREACHABLE


class IdentityUnresolved(ProvenanceError):
    """The handle or DID does not resolve, or the DID document has no PDS or no key."""

    status = Status.IDENTITY_UNRESOLVED


class RegistryFailed(ProvenanceError):
    """The registry did not serve the image (or its proof) to compare against."""

    status = Status.REGISTRY_ERROR


# --- one record's proof --------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordProof:
    """A parsed `sync.getRecord` CAR. The signature is *not* checked yet (`check_key` does)."""

    did: str
    collection: str
    rkey: str
    rev: str
    commit_cid: str
    signed_bytes: bytes
    sig: bytes
    record_cid: str | None  # None: the signed tree proves the record absent
    record: dict[str, Any] | None  # JSON data model (`$link`, `$bytes`)
    car: bytes

    @property
    def uri(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"

    @property
    def commit_time(self) -> datetime | None:
        try:
            return tid_datetime(self.rev)
        except ValueError:
            return None


def read_proof(car: bytes, did: str, collection: str, rkey: str) -> RecordProof:
    """Parse and check a record proof CAR against the repository `did` and path it should prove."""
    try:
        roots, blocks = read_car(car)
    except (CorruptRepo, DagCborError, ValueError) as exc:
        raise ForgedProof(f"the proof CAR is not valid: {exc}") from None
    if len(roots) != 1:
        raise ForgedProof("the proof CAR must have exactly one root (the signed commit)")
    commit_block = blocks.get(roots[0])
    if commit_block is None:
        raise ForgedProof(f"the proof CAR does not hold its root commit {roots[0]}")
    try:
        commit = decode(commit_block)
    except DagCborError as exc:
        raise ForgedProof(f"the commit block is not DAG-CBOR: {exc}") from None
    if not isinstance(commit, dict):
        raise ForgedProof("the commit block is not a commit")
    sig, data, rev, commit_did = commit.get("sig"), commit.get("data"), commit.get("rev"), commit.get("did")
    if commit.get("version") != 3 or not isinstance(sig, bytes) or not isinstance(data, Cid):
        raise ForgedProof("the commit block is not a signed v3 commit")
    if not isinstance(rev, str) or not isinstance(commit_did, str):
        raise ForgedProof("the commit has no rev or DID")
    if commit_did != did:
        raise WrongAccount(f"the proof is a commit of {commit_did}, not of the publisher {did}")
    signed = encode({k: v for k, v in commit.items() if k != "sig"})
    path = f"{collection}/{rkey}"
    try:
        held = lookup(blocks, data, path)
    except MissingNode as exc:
        raise ForgedProof(f"the proof does not carry the tree path to {path}: {exc}") from None
    except CorruptRepo as exc:
        raise ForgedProof(f"the proof's tree is malformed: {exc}") from None
    record: dict[str, Any] | None = None
    if held is not None:
        block = blocks.get(held)
        if block is None:
            raise ForgedProof(f"the proof does not carry the record block {held}")
        try:
            value = decode(block)
        except DagCborError as exc:
            raise ForgedProof(f"the record block is not DAG-CBOR: {exc}") from None
        if not isinstance(value, dict):
            raise ForgedProof("the record is not an object")
        record = to_json(value)
    return RecordProof(
        did=did, collection=collection, rkey=rkey, rev=rev, commit_cid=str(roots[0]), signed_bytes=signed,
        sig=sig, record_cid=str(held) if held is not None else None, record=record, car=bytes(car),
    )


# --- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyWindow:
    """A `#atproto` key of a did:plc and when the audit log shows it in force."""

    key: str  # did:key:...
    valid_from: datetime
    valid_until: datetime | None  # None: still the DID's key

    def covers(self, when: datetime) -> bool:
        return self.valid_from <= when and (self.valid_until is None or when < self.valid_until)


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def key_windows(audit_log: Sequence[Mapping[str, Any]]) -> list[KeyWindow]:
    """The `#atproto` keys a PLC audit log (`GET <plc>/<did>/log/audit`) shows, with their windows.

    Nullified operations never took effect and are skipped. `plc_operation` carries
    `verificationMethods.atproto`; the legacy `create` op carries `signingKey`; a tombstone
    ends the last window. Entries must be in log order (the PLC directory answers them so).
    """
    out: list[KeyWindow] = []
    current: tuple[str, datetime] | None = None
    for entry in audit_log:
        if entry.get("nullified"):
            continue
        when = _parse_time(entry.get("createdAt"))
        op = entry.get("operation")
        if when is None or not isinstance(op, Mapping):
            continue
        key: str | None = None
        if op.get("type") == "plc_operation":
            methods = op.get("verificationMethods")
            value = methods.get("atproto") if isinstance(methods, Mapping) else None
            key = value if isinstance(value, str) else None
        elif op.get("type") == "create":
            value = op.get("signingKey")
            key = value if isinstance(value, str) else None
        if current is not None and current[0] != key:
            out.append(KeyWindow(current[0], current[1], when))
            current = None
        if key is not None and current is None:
            current = (key, when)
    if current is not None:
        out.append(KeyWindow(current[0], current[1], None))
    return out


def _b64url(text: str) -> bytes:
    import base64
    import binascii

    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return b""


def _rotation_keys(op: Mapping[str, Any]) -> list[str]:
    if op.get("type") == "create":  # the legacy genesis: its recovery and signing keys rotate
        return [k for k in (op.get("recoveryKey"), op.get("signingKey")) if isinstance(k, str)]
    keys = op.get("rotationKeys")
    return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []


def check_plc_log(did: str, audit_log: Sequence[Mapping[str, Any]]) -> None:
    """Check a did:plc audit log as a chain, so the key history does not rest on the directory's word.

    Over the operations that took effect (nullified ones skipped): the genesis operation hashes to
    the DID (`did:plc:` + base32(sha256(signed genesis))[:24]) and is signed by one of its own
    rotation keys; every later one names the previous one's CID as `prev` and is signed by one of
    the previous one's rotation keys; each entry's `cid` is its operation's. Raises
    IdentityUnresolved naming the first operation that does not hold.
    """
    import base64
    import hashlib

    prev_cid: str | None = None
    rotation: list[str] = []
    for n, entry in enumerate(e for e in audit_log if not e.get("nullified")):
        op = entry.get("operation")
        if not isinstance(op, Mapping) or not isinstance(op.get("sig"), str):
            raise IdentityUnresolved(f"{did}: PLC operation {n} is malformed")
        try:
            signed = encode(dict(op))
            unsigned = encode({k: v for k, v in op.items() if k != "sig"})
        except DagCborError:
            raise IdentityUnresolved(f"{did}: PLC operation {n} is not in the data model") from None
        cid = str(Cid.for_block(signed))
        if entry.get("cid") not in (None, cid):
            raise IdentityUnresolved(f"{did}: PLC operation {n} does not hash to the CID the log gives")
        if prev_cid is None:
            derived = "did:plc:" + base64.b32encode(hashlib.sha256(signed).digest()).decode().lower()[:24]
            if op.get("prev") is not None or derived != did:
                raise IdentityUnresolved(f"{did}: the PLC log's genesis operation is not this DID's")
            rotation = _rotation_keys(op)
        elif op.get("prev") != prev_cid:
            raise IdentityUnresolved(f"{did}: PLC operation {n} does not follow the one before it")
        sig = _b64url(op["sig"])
        if not any(_verifies(key, unsigned, sig) for key in rotation):
            raise IdentityUnresolved(f"{did}: PLC operation {n} is not signed by a rotation key in force")
        rotation = _rotation_keys(op)
        prev_cid = cid


def _verifies(did_key: str, data: bytes, sig: bytes) -> bool:
    from atproto_crypto.verify import verify_signature

    try:
        return bool(verify_signature(did_key, data, sig))
    except Exception:  # unsupported or malformed key: not a valid signature either way
        return False


@dataclass(frozen=True)
class KeyVerdict:
    key: str
    current: bool
    window: KeyWindow | None = None


def check_key(
    proof: RecordProof, current_key: str | None, windows: Sequence[KeyWindow] | None
) -> KeyVerdict:
    """Which key signed the commit. Raises WrongKey, or KeyRotated with the window it was valid in."""
    if current_key is not None and _verifies(current_key, proof.signed_bytes, proof.sig):
        return KeyVerdict(current_key, True)
    when = proof.commit_time
    for window in windows or ():
        if window.key == current_key or not _verifies(window.key, proof.signed_bytes, proof.sig):
            continue
        until = window.valid_until.isoformat() if window.valid_until else "now"
        span = f"{window.valid_from.isoformat()} to {until}"
        if when is not None and window.covers(when):
            raise KeyRotated(
                f"commit {proof.rev} ({when.isoformat()}) is signed with {window.key}, the DID's key from "
                f"{span} per the PLC audit log; the DID's key is now {current_key}",
                KeyVerdict(window.key, False, window),
            )
        raise WrongKey(
            f"commit {proof.rev} is signed with {window.key}, which was the DID's key only from {span}, "
            f"not when the commit says it was made ({when.isoformat() if when else 'unknown'})"
        )
    if current_key is None:
        raise WrongKey(f"{proof.did}'s DID document names no usable #atproto key to check commit {proof.rev} with")
    raise WrongKey(f"commit {proof.rev} of {proof.did} is not signed by the DID's key {current_key}")


# --- fetching proofs -----------------------------------------------------------------------------


class ProofSource(Protocol):
    """Where proofs and record listings come from (the PDS; tests wrap it to tamper)."""

    async def record_proof(self, pds: str, did: str, collection: str, rkey: str) -> bytes: ...

    async def list_records(self, pds: str, did: str, collection: str) -> list[tuple[str, dict[str, Any]]]: ...


class AuditLogSource(Protocol):
    async def audit_log(self, did: str) -> list[dict[str, Any]] | None: ...


def _unreachable(pds: str, exc: Exception) -> PdsUnreachable:
    return PdsUnreachable(f"the publisher's PDS {pds} is unreachable: {exc}")


class PdsProofSource:
    """Fetches proofs with `com.atproto.sync.getRecord` and listings with `repo.listRecords`."""

    def __init__(self, http: SafeHttpClient, *, timeout: float = 10.0) -> None:
        self._http = http
        self._timeout = timeout

    async def record_proof(self, pds: str, did: str, collection: str, rkey: str) -> bytes:
        url = f"{pds.rstrip('/')}/xrpc/com.atproto.sync.getRecord"
        try:
            resp = await self._http.get(
                url, params={"did": did, "collection": collection, "rkey": rkey},
                max_bytes=MAX_PROOF_BYTES, timeout=self._timeout,
            )
        except NetworkError as exc:
            raise _unreachable(pds, exc) from None
        if resp.status_code == 200:
            return resp.content
        error = _xrpc_error(resp)
        if error == "RecordNotFound":
            raise RecordMissing(f"{pds} has no record at at://{did}/{collection}/{rkey}")
        if error in ("RepoNotFound", "RepoTakendown", "RepoDeactivated", "RepoSuspended"):
            raise RecordMissing(f"{pds} does not serve the repository {did} ({error})")
        raise PdsUnreachable(f"the publisher's PDS {pds} answered {resp.status_code} {error or ''}".rstrip())

    async def list_records(self, pds: str, did: str, collection: str) -> list[tuple[str, dict[str, Any]]]:
        url = f"{pds.rstrip('/')}/xrpc/com.atproto.repo.listRecords"
        out: list[tuple[str, dict[str, Any]]] = []
        cursor: str | None = None
        while len(out) < MAX_LISTED_RECORDS:
            params = {"repo": did, "collection": collection, "limit": "100"}
            if cursor:
                params["cursor"] = cursor
            try:
                resp = await self._http.get(url, params=params, timeout=self._timeout)
            except NetworkError as exc:
                raise _unreachable(pds, exc) from None
            if resp.status_code != 200:
                raise PdsUnreachable(f"the publisher's PDS {pds} answered {resp.status_code} to listRecords")
            try:
                body = resp.json()
            except ValueError:
                raise PdsUnreachable(f"the publisher's PDS {pds} answered listRecords with no JSON") from None
            for item in body.get("records") or []:
                parsed = parse_at_uri(item.get("uri")) if isinstance(item, dict) else None
                if parsed is not None and isinstance(item.get("value"), dict):
                    out.append((parsed[2], item["value"]))
            cursor = body.get("cursor") if isinstance(body.get("cursor"), str) else None
            if not cursor or not body.get("records"):
                break
        return out


def _xrpc_error(resp: Any) -> str | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


class PlcAuditLog:
    """The audit log of a did:plc from the PLC directory; None for other DID methods."""

    def __init__(self, http: SafeHttpClient, plc_url: str, *, timeout: float = 10.0) -> None:
        self._http = http
        self._plc = plc_url.rstrip("/")
        self._timeout = timeout

    async def audit_log(self, did: str) -> list[dict[str, Any]] | None:
        if not did.startswith("did:plc:"):
            return None
        try:
            resp = await self._http.get(f"{self._plc}/{did}/log/audit", timeout=self._timeout)
        except NetworkError as exc:
            raise IdentityUnresolved(f"the PLC directory is unreachable: {exc}") from None
        if resp.status_code != 200:
            raise IdentityUnresolved(f"the PLC directory answered {resp.status_code} for {did}'s audit log")
        try:
            body = resp.json()
        except ValueError:
            raise IdentityUnresolved("the PLC audit log is not JSON") from None
        return [e for e in body if isinstance(e, dict)] if isinstance(body, list) else None


# --- the verdict ---------------------------------------------------------------------------------


@dataclass
class Verification:
    """What was proven (or which check failed). `ok` only for `Status.VERIFIED`."""

    status: Status
    message: str
    did: str | None = None
    handle: str | None = None
    pds: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    rev: str | None = None
    commit_time: str | None = None
    commit: str | None = None
    key: str | None = None
    key_current: bool | None = None
    manifest_uri: str | None = None
    manifest_cid: str | None = None
    tag_uri: str | None = None
    tag_cid: str | None = None
    tag_rev: str | None = None
    source: str = "pds"
    elapsed_ms: float | None = None
    proofs: dict[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status is Status.VERIFIED

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok, "status": str(self.status), "message": self.message}
        for name in (
            "did", "handle", "pds", "repository", "tag", "digest", "rev", "commit_time", "commit", "key",
            "key_current", "manifest_uri", "manifest_cid", "tag_uri", "tag_cid", "tag_rev", "source", "elapsed_ms",
        ):
            out[name] = getattr(self, name)
        return out

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=False)


def _holds(record: Mapping[str, Any] | None, repository: str, digest: str | None) -> bool:
    if record is None or record.get("repository") != repository:
        return False
    return digest is None or record.get("digest") == digest


def _blob_digest(record: Mapping[str, Any]) -> str | None:
    """The sha256 digest the record's `manifestBlob` CID names (raw codec, sha2-256), else None."""
    blob = record.get("manifestBlob")
    ref = blob.get("ref") if isinstance(blob, Mapping) else None
    link = ref.get("$link") if isinstance(ref, Mapping) else None
    if not isinstance(link, str):
        return None
    try:
        cid = Cid.parse(link)
    except ValueError:
        return None
    if cid.raw[2:4] != bytes((0x12, 32)):
        return None
    return "sha256:" + cid.raw[4:].hex()


class Verifier:
    """Checks an image's provenance against the publisher's own repository."""

    def __init__(
        self,
        resolver: IdentityResolver,
        source: ProofSource,
        audit: AuditLogSource | None = None,
        *,
        timeout: float = 15.0,
    ) -> None:
        self.resolver = resolver
        self.source = source
        self.audit = audit
        self.timeout = timeout

    async def check(
        self,
        identifier: str,
        repository: str,
        *,
        tag: str | None = None,
        digest: str | None = None,
        image_digest: str | None = None,
    ) -> Verification:
        """Verify, never raise for a failed check: the verdict says which check failed."""
        result = Verification(Status.VERIFIED, "", repository=repository, tag=tag, digest=digest)
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self.timeout):
                await self._verify(result, identifier, repository, tag, digest, image_digest)
        except ProvenanceError as exc:
            result.status = exc.status
            result.message = str(exc)
        except TimeoutError:
            result.status = Status.PDS_UNREACHABLE
            result.message = f"verification did not finish within {self.timeout:g} s (the PDS or PLC hangs)"
        result.elapsed_ms = round((loop.time() - started) * 1000, 1)
        return result

    async def _identity(self, result: Verification, identifier: str) -> str:
        try:
            ident = await self.resolver.resolve(identifier)
        except (IdentityError, NetworkError) as exc:
            raise IdentityUnresolved(f"{identifier} does not resolve: {exc}") from None
        result.did, result.handle, result.pds = ident.did, ident.handle, ident.pds_endpoint
        return ident.pds_endpoint

    async def _verify(
        self,
        result: Verification,
        identifier: str,
        repository: str,
        tag: str | None,
        digest: str | None,
        image_digest: str | None,
    ) -> None:
        if tag is None and digest is None:
            raise ValueError("a tag or a digest is needed")
        pds = await self._identity(result, identifier)
        did = result.did
        assert did is not None
        keys = _KeyCache(self, did)
        manifest_rkey_hint: str | None = None
        tag_commit: str | None = None
        asked = digest
        target: str | None = None
        if tag is not None:
            tag_proof = await self._find_tag(pds, did, repository, tag, keys, result)
            await keys.check(tag_proof, result)
            target, hint = self._tag_target(tag_proof, did)
            result.tag_uri, result.tag_cid, result.tag_rev = tag_proof.uri, tag_proof.record_cid, tag_proof.rev
            tag_commit = tag_proof.commit_cid
            if digest is not None and target is not None and target != digest:
                raise TagMoved(
                    f"{repository}:{tag} now points at {target}, not {digest} (tag record {tag_proof.uri} "
                    f"at rev {tag_proof.rev})"
                )
            digest = digest or target
            manifest_rkey_hint = hint
        manifest_proof = await self._find_manifest(pds, did, repository, digest, manifest_rkey_hint, keys, result)
        record = manifest_proof.record
        assert record is not None
        await keys.check(manifest_proof, result)
        record_digest = record.get("digest")
        if digest is not None and record_digest != digest:
            if tag is not None and target is None and asked is not None:
                # The tag names its record only by key: the record says where it points now.
                raise TagMoved(
                    f"{repository}:{tag} now points at {manifest_proof.uri}, which holds {record_digest}, not {asked}"
                )
            if tag is not None and manifest_rkey_hint is not None:
                raise RecordChanged(
                    f"{repository}:{tag} points at {manifest_proof.uri}, which now holds {record_digest}, not {digest}"
                )
            raise DigestMismatch(f"{manifest_proof.uri} names {record_digest}, not {digest}")
        if record.get("repository") != repository:
            raise RecordChanged(
                f"{manifest_proof.uri} holds {record_digest} for repository {record.get('repository')!r}, "
                f"not {repository!r}"
            )
        if not isinstance(record_digest, str):
            raise RecordChanged(f"{manifest_proof.uri} names no digest")
        blob_digest = _blob_digest(record)
        if blob_digest is not None and record_digest.startswith("sha256:") and blob_digest != record_digest:
            raise DigestMismatch(f"{manifest_proof.uri}'s manifestBlob is {blob_digest}, not {record_digest}")
        if image_digest is not None and image_digest != record_digest:
            raise DigestMismatch(
                f"the registry serves {image_digest}, but the publisher's record names {record_digest}"
            )
        result.digest = record_digest
        result.manifest_uri, result.manifest_cid = manifest_proof.uri, manifest_proof.record_cid
        result.rev = max(manifest_proof.rev, result.tag_rev or "")
        result.commit = manifest_proof.commit_cid if result.rev == manifest_proof.rev else tag_commit
        when = tid_time(result.rev)
        result.commit_time = when.isoformat().replace("+00:00", "Z") if when else None
        result.proofs["manifest"] = manifest_proof.car
        if keys.rotated is not None:
            raise keys.rotated
        published = f"{result.handle or did}/{repository}" + (f":{tag}" if tag else "")
        result.message = f"{published} {record_digest} was published by {did} (rev {result.rev})"

    def _tag_target(self, proof: RecordProof, did: str) -> tuple[str | None, str | None]:
        """(digest the tag points at or None, manifest rkey the tag names or None)."""
        from atcr.readmodel.records import tag_digest

        record = proof.record or {}
        parsed = parse_at_uri(record.get("manifest"))
        if parsed is not None:
            authority, collection, _rkey = parsed
            if authority != did:
                raise WrongAccount(f"tag record {proof.uri} points at a record of {authority}, outside {did}")
            if collection != MANIFEST:
                raise RecordChanged(f"tag record {proof.uri} points at {record.get('manifest')}, not a manifest")
        digest, _ = tag_digest(record)
        return digest or None, parsed[2] if parsed is not None else None

    async def _proof(self, pds: str, did: str, collection: str, rkey: str) -> RecordProof:
        car = await self.source.record_proof(pds, did, collection, rkey)
        return read_proof(car, did, collection, rkey)

    async def _find_tag(
        self, pds: str, did: str, repository: str, tag: str, keys: _KeyCache | None = None,
        result: Verification | None = None,
    ) -> RecordProof:
        rkey = tag_rkey(repository, tag)
        first: RecordProof | None = None
        try:
            first = await self._proof(pds, did, TAG, rkey)
        except RecordMissing:
            first = None
        if first is not None and first.record is not None and _is_tag(first.record, repository, tag):
            return first
        # Other AppViews key tags differently: find the record by what it says.
        for other, value in await self.source.list_records(pds, did, TAG):
            if other != rkey and _is_tag(value, repository, tag):
                proof = await self._proof(pds, did, TAG, other)
                if proof.record is not None and _is_tag(proof.record, repository, tag):
                    return proof
        if first is not None and first.record is not None:
            raise RecordChanged(f"{first.uri} is not the tag {repository}:{tag} any more")
        where = ""
        if first is not None and keys is not None and result is not None:
            await keys.check(first, result)  # the absence is signed by the publisher too
            where = f" (the signed tree at rev {first.rev} has no {first.uri})"
        raise RecordMissing(f"{did} has no tag record for {repository}:{tag}{where}")

    async def _find_manifest(
        self, pds: str, did: str, repository: str, digest: str | None, hint: str | None,
        keys: _KeyCache | None = None, result: Verification | None = None,
    ) -> RecordProof:
        candidates: list[str] = []
        if hint is not None:
            candidates.append(hint)
        elif digest is not None:
            candidates += [manifest_rkey(digest), repo_manifest_rkey(repository, digest)]
        proofs = await asyncio.gather(
            *(self._maybe_proof(pds, did, MANIFEST, rkey) for rkey in candidates)
        )
        for proof in proofs:
            if proof is not None and proof.record is not None and _holds(proof.record, repository, digest):
                return proof
        if hint is not None:
            # The tag names this record: whatever it holds now is the answer (checked by the caller).
            proof = proofs[0]
            if proof is None or proof.record is None:
                if proof is not None and keys is not None and result is not None:
                    await keys.check(proof, result)  # the absence is signed by the publisher too
                raise RecordMissing(f"the manifest record at://{did}/{MANIFEST}/{hint} the tag points at is gone")
            return proof
        for other, value in await self.source.list_records(pds, did, MANIFEST):
            if other not in candidates and _holds(value, repository, digest):
                proof = await self._proof(pds, did, MANIFEST, other)
                if proof.record is not None and _holds(proof.record, repository, digest):
                    return proof
        absent = next((p for p in proofs if p is not None), None)
        if absent is not None and keys is not None and result is not None:
            await keys.check(absent, result)  # the absence is signed by the publisher too
        raise RecordMissing(f"{did} has no manifest record of {digest} in {repository}")

    async def manifest_proof(self, pds: str, did: str, repository: str, digest: str) -> RecordProof:
        """The current proof of the manifest record holding `digest` in `repository` (not yet
        signature-checked: `verify_car` does that for whoever receives it)."""
        return await self._find_manifest(pds, did, repository, digest, None)

    async def _maybe_proof(self, pds: str, did: str, collection: str, rkey: str) -> RecordProof | None:
        try:
            return await self._proof(pds, did, collection, rkey)
        except RecordMissing:
            return None

    async def key_material(self, did: str) -> tuple[str | None, list[KeyWindow] | None]:
        """The DID's current `#atproto` key (`did:key:`) and, for did:plc, its key history."""
        try:
            doc = await self.resolver.resolve_did(did)
        except (IdentityError, NetworkError) as exc:
            raise IdentityUnresolved(f"{did} does not resolve: {exc}") from None
        multikey = atproto_key_of(doc.raw, did)
        current = "did:key:" + multikey if multikey else None
        windows: list[KeyWindow] | None = None
        if self.audit is not None:
            log = await self.audit.audit_log(did)
            if log is not None:
                check_plc_log(did, log)
                windows = key_windows(log)
        return current, windows


def tid_time(rev: str | None) -> datetime | None:
    if not rev:
        return None
    try:
        return tid_datetime(rev)
    except ValueError:
        return None


def _is_tag(record: Mapping[str, Any], repository: str, tag: str) -> bool:
    return record.get("repository") == repository and record.get("tag") == tag


class _KeyCache:
    """Checks each commit once; the key material is fetched once, and the audit log only when
    the current key does not verify."""

    def __init__(self, verifier: Verifier, did: str) -> None:
        self._verifier = verifier
        self._did = did
        self._current: str | None = None
        self._resolved = False
        self._checked: dict[str, KeyVerdict] = {}
        self.rotated: KeyRotated | None = None

    async def check(self, proof: RecordProof, result: Verification) -> None:
        verdict = self._checked.get(proof.commit_cid)
        if verdict is None:
            verdict = await self._check(proof)
            self._checked[proof.commit_cid] = verdict
        if result.key is None or proof.rev >= (result.tag_rev or ""):
            result.key, result.key_current = verdict.key, verdict.current

    async def _check(self, proof: RecordProof) -> KeyVerdict:
        if not self._resolved:
            doc = await self._verifier.resolver.resolve_did(self._did)
            multikey = atproto_key_of(doc.raw, self._did)
            self._current = "did:key:" + multikey if multikey else None
            self._resolved = True
        if self._current is not None and _verifies(self._current, proof.signed_bytes, proof.sig):
            return KeyVerdict(self._current, True)
        _, windows = await self._verifier.key_material(self._did) if self._verifier.audit else (None, None)
        try:
            return check_key(proof, self._current, windows)
        except KeyRotated as exc:
            if self.rotated is None:
                self.rotated = exc
            return exc.verdict


# --- offline: a proof CAR alone (the registry's referrer) -----------------------------------------


async def verify_car(
    verifier: Verifier,
    car: bytes,
    *,
    identifier: str,
    repository: str,
    digest: str,
    uri: str | None = None,
) -> Verification:
    """Verify a manifest record proof obtained elsewhere (e.g. the registry's signature referrer).

    Only identity resolution (PLC or did:web) is needed, not the PDS. `uri` (the record's
    AT-URI, from the referrer's annotations) names the rkey; without it the digest's hex and
    suffix keys are tried.
    """
    result = Verification(Status.VERIFIED, "", repository=repository, digest=digest, source="proof")
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(verifier.timeout):
            await verifier._identity(result, identifier)
            did = result.did
            assert did is not None
            rkeys = [manifest_rkey(digest), repo_manifest_rkey(repository, digest)]
            if uri is not None:
                parsed = parse_at_uri(uri)
                if parsed is None or parsed[1] != MANIFEST:
                    raise ForgedProof(f"{uri!r} is not a manifest record URI")
                if parsed[0] != did:
                    raise WrongAccount(f"the proof names {parsed[0]}, not the publisher {did}")
                rkeys = [parsed[2]]
            proof: RecordProof | None = None
            last: ProvenanceError | None = None
            for rkey in rkeys:
                try:
                    candidate = read_proof(car, did, MANIFEST, rkey)
                except ForgedProof as exc:
                    last = exc
                    continue
                if candidate.record is not None:
                    proof = candidate
                    break
            if proof is None:
                raise last or RecordMissing(f"the proof holds no manifest record of {digest}")
            record = proof.record
            assert record is not None
            keys = _KeyCache(verifier, did)
            await keys.check(proof, result)
            if record.get("digest") != digest:
                raise DigestMismatch(f"{proof.uri} names {record.get('digest')}, not {digest}")
            if record.get("repository") != repository:
                raise RecordChanged(f"{proof.uri} holds the digest for {record.get('repository')!r}")
            result.manifest_uri, result.manifest_cid, result.rev = proof.uri, proof.record_cid, proof.rev
            result.commit = proof.commit_cid
            when = tid_time(proof.rev)
            result.commit_time = when.isoformat().replace("+00:00", "Z") if when else None
            if keys.rotated is not None:
                raise keys.rotated
            result.message = f"{result.handle or did}/{repository} {digest} was published by {did} (rev {proof.rev})"
    except ProvenanceError as exc:
        result.status, result.message = exc.status, str(exc)
    except TimeoutError:
        result.status = Status.IDENTITY_UNRESOLVED
        result.message = f"identity resolution did not finish within {verifier.timeout:g} s"
    result.elapsed_ms = round((loop.time() - started) * 1000, 1)
    return result


def build_verifier(
    http: SafeHttpClient, resolver: IdentityResolver, *, plc_url: str, timeout: float = 10.0
) -> Verifier:
    """The verifier over the real network: proofs from PDSes, key history from the PLC directory."""
    return Verifier(
        resolver,
        PdsProofSource(http, timeout=timeout),
        PlcAuditLog(http, plc_url, timeout=timeout),
        timeout=timeout * 1.5,
    )

