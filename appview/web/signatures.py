"""Who signed a manifest, as its signature and attestation referrers say it.

For each signature or attestation a user pushed as a referrer (cosign, Notation, in-toto /
DSSE), the manifest page shows "signed" and what the artifact itself states about the signer:
the certificate's subject, e-mail or URI and (Fulcio) issuer, a key id, and the payload's
claims (the signed image reference, a predicate type). Nothing here *verifies* a signature:
that needs the signer's trust policy, which the registry does not have; the page says
"signed", not "verified". Blobs are fetched from the hold like config blobs (size-capped,
digest-checked, through the SSRF-guarded client), at most MAX_REFERRERS per page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from atcr.errors import AtcrError
from atcr.http import SafeHttpClient

log = logging.getLogger("appview.web.signatures")

MAX_REFERRERS: Final = 10
MAX_BLOB: Final = 1024 * 1024
WAIT: Final = 3.0
COSIGN_SIMPLESIGNING: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_CERT: Final = "dev.sigstore.cosign/certificate"
NOTATION_TYPE: Final = "application/vnd.cncf.notary.signature"
JWS: Final = "application/jose+json"
DSSE: Final = "application/vnd.dsse.envelope.v1+json"
IN_TOTO: Final = "application/vnd.in-toto+json"
FULCIO_ISSUER_V1: Final = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
FULCIO_ISSUER_V2: Final = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")


class BlobUrls(Protocol):
    async def blob_url(self, hold_did: str, digest: str, *, user_did: str | None = None) -> str | None: ...


@dataclass
class SignatureInfo:
    digest: str
    scheme: str  # cosign | notation | in-toto | signature
    signer: str | None = None
    claims: list[tuple[str, str]] = field(default_factory=list)


def describe_certificate(cert: x509.Certificate) -> str:
    """`alice@example.com (issuer https://accounts.google.com)`, else the subject DN."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(v) for v in san.get_values_for_type(x509.RFC822Name)]
        names += [str(v) for v in san.get_values_for_type(x509.UniformResourceIdentifier)]
    except x509.ExtensionNotFound:
        pass
    who = ", ".join(names) or cert.subject.rfc4514_string() or "unnamed certificate"
    issuer = None
    for oid in (FULCIO_ISSUER_V2, FULCIO_ISSUER_V1):
        try:
            raw = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        value = getattr(raw, "value", b"")
        if oid == FULCIO_ISSUER_V2 and len(value) > 2:
            value = value[2:]  # a DER UTF8String: tag and (short) length
        issuer = value.decode("utf-8", "replace")
        break
    if issuer is None:
        issuer = cert.issuer.rfc4514_string()
    return f"{who} (issuer {issuer})" if issuer else who


def _pem_certificate(text: str) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(text.encode())
    except ValueError:
        return None


def _der_certificate(b64: str) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(base64.b64decode(b64))
    except ValueError:
        return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _b64json(text: str) -> Any:
    padded = text + "=" * (-len(text) % 4)
    try:
        return json.loads(base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_")))
    except ValueError:
        return None


def read_layer(info: SignatureInfo, media_type: str, annotations: dict[str, Any], blob: bytes | None) -> None:
    """Fill `info` from one layer of a signature artifact (its annotations and bytes)."""
    cert_text = annotations.get(COSIGN_CERT)
    if isinstance(cert_text, str) and info.signer is None:
        cert = _pem_certificate(cert_text)
        if cert is not None:
            info.signer = describe_certificate(cert)
    predicate = annotations.get("predicateType")
    if isinstance(predicate, str):
        info.claims.append(("predicate", predicate))
    doc: Any = None
    if blob is not None:
        try:
            doc = json.loads(blob)
        except ValueError:
            doc = None
    if not isinstance(doc, dict):
        return
    if media_type == COSIGN_SIMPLESIGNING:
        info.scheme = "cosign"
        ident = _obj(_obj(doc.get("critical")).get("identity"))
        if isinstance(ident.get("docker-reference"), str):
            info.claims.append(("image", ident["docker-reference"]))
        optional = _obj(doc.get("optional"))
        for k, v in list(optional.items())[:5]:
            info.claims.append((str(k)[:40], str(v)[:200]))
        if info.signer is None:
            info.signer = "a key (no certificate attached)"
    elif media_type == JWS:
        info.scheme = "notation"
        header = _obj(doc.get("header"))
        chain = header.get("x5c")
        if isinstance(chain, list) and chain and isinstance(chain[0], str):
            cert = _der_certificate(chain[0])
            if cert is not None:
                info.signer = describe_certificate(cert)
        protected = _b64json(doc["protected"]) if isinstance(doc.get("protected"), str) else None
        if isinstance(protected, dict) and isinstance(protected.get("io.cncf.notary.signingTime"), str):
            info.claims.append(("signed at", protected["io.cncf.notary.signingTime"]))
    elif media_type in (DSSE, IN_TOTO):
        info.scheme = "in-toto"
        statement: Any = doc
        if media_type == DSSE:
            statement = _b64json(doc["payload"]) if isinstance(doc.get("payload"), str) else None
            sigs = doc.get("signatures")
            keyid = sigs[0].get("keyid") if isinstance(sigs, list) and sigs and isinstance(sigs[0], dict) else None
            if info.signer is None and isinstance(keyid, str) and keyid:
                info.signer = f"key {keyid[:80]}"
        if isinstance(statement, dict):
            predicate_type = statement.get("predicateType")
            if isinstance(predicate_type, str) and ("predicate", predicate_type) not in info.claims:
                info.claims.append(("predicate", predicate_type))
            subjects = statement.get("subject")
            if isinstance(subjects, list):
                names = [str(s.get("name")) for s in subjects[:3] if isinstance(s, dict) and s.get("name")]
                if names:
                    info.claims.append(("subject", ", ".join(names)))


class Signatures:
    def __init__(self, http: SafeHttpClient, holds: BlobUrls) -> None:
        self._http = http
        self._holds = holds

    async def _blob(self, hold_did: str | None, digest: str, size: int) -> bytes | None:
        if not hold_did or size > MAX_BLOB or not digest.startswith("sha256:"):
            return None
        try:
            url = await self._holds.blob_url(hold_did, digest)
            if url is None:
                return None
            resp = await self._http.request("GET", url, max_bytes=MAX_BLOB, timeout=WAIT)
        except (AtcrError, TimeoutError) as exc:
            log.info("signature blob %s: %s", digest[:19], type(exc).__name__)
            return None
        if resp.status_code != 200 or "sha256:" + hashlib.sha256(resp.content).hexdigest() != digest:
            return None
        return resp.content

    async def describe(self, digest: str, raw: bytes, artifact_type: str | None, hold_did: str | None,
                       scheme: str) -> SignatureInfo:
        info = SignatureInfo(digest, "notation" if artifact_type == NOTATION_TYPE else scheme)
        try:
            doc = json.loads(raw)
        except ValueError:
            return info
        layers = doc.get("layers") if isinstance(doc, dict) else None
        for layer in (layers if isinstance(layers, list) else [])[:3]:
            if not isinstance(layer, dict):
                continue
            media_type = str(layer.get("mediaType", ""))
            found = layer.get("annotations")
            annotations: dict[str, Any] = found if isinstance(found, dict) else {}
            wanted = media_type in (COSIGN_SIMPLESIGNING, JWS, DSSE, IN_TOTO)
            declared = layer.get("size")
            size = declared if isinstance(declared, int) else MAX_BLOB + 1
            blob = await self._blob(hold_did, str(layer.get("digest", "")), size) if wanted else None
            read_layer(info, media_type, annotations, blob)
        return info


async def signature_infos(signatures: Signatures | None, loader: Any, did: str, repository: str,
                          referrers: list[Any]) -> list[SignatureInfo]:
    """One SignatureInfo per signature/attestation referrer (at most MAX_REFERRERS), bounded in time."""
    if signatures is None:
        return []
    wanted = [r for r in referrers if r.category in ("signature", "attestation")][:MAX_REFERRERS]

    async def one(ref: Any) -> SignatureInfo:
        scheme = "signature" if ref.category == "signature" else "in-toto"
        try:
            async with asyncio.timeout(WAIT):
                entry = await loader.manifest_in(did, repository, ref.digest)
                if entry is None or not entry.raw:
                    return SignatureInfo(ref.digest, scheme)
                return await signatures.describe(ref.digest, entry.raw, ref.artifact_type, entry.hold_did, scheme)
        except Exception as exc:  # a slow PDS or hold: the row still says "signed"
            log.info("signature %s: not read (%s)", ref.digest[:19], type(exc).__name__)
            return SignatureInfo(ref.digest, scheme)

    return list(await asyncio.gather(*(one(r) for r in wanted)))
