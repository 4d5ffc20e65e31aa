"""What `atcr verify` runs (atcr/verifycmd.py parses the command): the registry side of the
check (anonymous pulls of the manifest and of the proof referrer), the verifier, the report."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any
from urllib.parse import quote

from atcr.config import NetworkSettings
from atcr.errors import NetworkError
from atcr.http import SafeHttpClient, policy_from
from atcr.identity import build_resolver
from atcr.provenance import (
    CAR_MEDIA_TYPE,
    SIGNATURE_ARTIFACT_TYPE,
    RegistryFailed,
    Status,
    Verification,
    build_verifier,
    verify_car,
)
from atcr.verifycmd import ImageRef

ACCEPT = ", ".join((
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
))


def _registry_url(ref: ImageRef, plain_http: bool) -> str:
    host = ref.registry
    local = host.startswith(("localhost", "127.0.0.1", "[::1]"))
    return f"{'http' if plain_http or local else 'https'}://{host}"


def _challenge_params(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


class RegistryReader:
    """Anonymous pulls from the registry: the token challenge, manifests, referrers, blobs."""

    def __init__(self, http: SafeHttpClient, base: str, name: str, timeout: float) -> None:
        self._http = http
        self._base = base
        self._name = name
        self._timeout = timeout
        self._token: str | None = None

    async def _get(self, path: str, *, accept: str | None = None) -> Any:
        headers = {"Accept": accept} if accept else {}
        url = f"{self._base}/v2/{self._name}/{path}"
        for _ in range(2):
            if self._token:
                headers["Authorization"] = f"Bearer {self._token}"
            try:
                resp = await self._http.get(url, headers=headers, timeout=self._timeout, max_bytes=8 * 1024 * 1024)
            except NetworkError as exc:
                raise RegistryFailed(f"the registry {self._base} is unreachable: {exc}") from None
            if resp.status_code == 401 and self._token is None:
                await self._authenticate(resp.headers.get("www-authenticate", ""))
                continue
            return resp
        return resp

    async def _authenticate(self, header: str) -> None:
        params = _challenge_params(header)
        realm = params.get("realm")
        if not realm:
            raise RegistryFailed("the registry asks for credentials without a token realm")
        query = {"service": params.get("service", ""), "scope": f"repository:{self._name}:pull"}
        try:
            resp = await self._http.get(realm, params=query, timeout=self._timeout)
        except NetworkError as exc:
            raise RegistryFailed(f"the registry's token endpoint is unreachable: {exc}") from None
        if resp.status_code != 200:
            raise RegistryFailed(f"the registry's token endpoint answered {resp.status_code}")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not isinstance(token, str):
            raise RegistryFailed("the registry's token endpoint gave no token")
        self._token = token

    async def manifest_digest(self, reference: str) -> str:
        resp = await self._get(f"manifests/{quote(reference, safe=':@')}", accept=ACCEPT)
        if resp.status_code != 200:
            raise RegistryFailed(f"the registry answered {resp.status_code} for {self._name}:{reference}")
        algorithm = "sha512" if reference.startswith("sha512:") else "sha256"
        return f"{algorithm}:{hashlib.new(algorithm, resp.content).hexdigest()}"

    async def signature_proof(self, digest: str) -> tuple[bytes, str | None]:
        """(CAR bytes, the record's AT-URI) of the signature referrer of `digest`."""
        resp = await self._get(f"referrers/{digest}?artifactType={quote(SIGNATURE_ARTIFACT_TYPE, safe='')}")
        if resp.status_code != 200:
            raise RegistryFailed(f"the registry answered {resp.status_code} for the referrers of {digest}")
        found = [
            d for d in resp.json().get("manifests") or []
            if isinstance(d, dict) and d.get("artifactType") == SIGNATURE_ARTIFACT_TYPE
        ]
        if not found:
            raise RegistryFailed(f"the registry offers no {SIGNATURE_ARTIFACT_TYPE} referrer of {digest}")
        desc = found[0]
        resp = await self._get(f"manifests/{desc['digest']}", accept=str(desc.get("mediaType") or ACCEPT))
        if resp.status_code != 200:
            raise RegistryFailed(f"the registry answered {resp.status_code} for the proof manifest")
        manifest = resp.json()
        layers = [
            x for x in manifest.get("layers") or [] if isinstance(x, dict) and x.get("mediaType") == CAR_MEDIA_TYPE
        ]
        if not layers:
            raise RegistryFailed("the proof manifest has no CAR layer")
        blob = await self._get(f"blobs/{layers[0]['digest']}")
        if blob.status_code != 200:
            raise RegistryFailed(f"the registry answered {blob.status_code} for the proof CAR")
        data = bytes(blob.content)
        if "sha256:" + hashlib.sha256(data).hexdigest() != layers[0]["digest"]:
            raise RegistryFailed("the proof CAR the registry served does not match its digest")
        annotations = manifest.get("annotations") or {}
        uri = annotations.get("io.atcr.provenance.uri") if isinstance(annotations, dict) else None
        return data, uri if isinstance(uri, str) else None


async def verify_image(
    ref: ImageRef,
    *,
    settings: NetworkSettings,
    use_registry: bool = True,
    from_registry: bool = False,
    plain_http: bool = False,
    timeout: float | None = None,
) -> Verification:
    """Everything `atcr verify` checks, as one verdict."""
    wait = timeout or settings.http_timeout
    policy = policy_from(settings.allow_private_networks, settings.allowed_hosts)
    async with SafeHttpClient(policy=policy, timeout=wait) as http:
        resolver = build_resolver(
            http, plc_url=settings.plc_url, handle_resolver_url=settings.handle_resolver_url,
            allow_private=settings.allow_private_networks,
        )
        verifier = build_verifier(http, resolver, plc_url=settings.plc_url, timeout=wait)
        image_digest: str | None = None
        try:
            if use_registry or from_registry:
                reader = RegistryReader(http, _registry_url(ref, plain_http), ref.name, wait)
                image_digest = await asyncio.wait_for(reader.manifest_digest(ref.reference), wait * 2)
                if from_registry:
                    car, uri = await asyncio.wait_for(reader.signature_proof(image_digest), wait * 3)
                    result = await verify_car(
                        verifier, car, identifier=ref.identity, repository=ref.repository, digest=image_digest, uri=uri
                    )
                    result.tag = ref.tag
                    if ref.tag is not None and ref.digest is None and result.ok:
                        result.message += f"; tag {ref.tag} was resolved by the registry (the proof covers the digest)"
                    if ref.digest is not None and ref.digest != image_digest and result.ok:
                        result.status = Status.DIGEST_MISMATCH
                        result.message = f"the registry serves {image_digest}, not {ref.digest}"
                    return result
        except RegistryFailed as exc:
            return Verification(Status.REGISTRY_ERROR, str(exc), repository=ref.repository, tag=ref.tag,
                                digest=ref.digest)
        except TimeoutError:
            return Verification(Status.REGISTRY_ERROR, f"the registry did not answer within {wait:g} s",
                                repository=ref.repository, tag=ref.tag, digest=ref.digest)
        return await verifier.check(
            ref.identity, ref.repository, tag=ref.tag, digest=ref.digest, image_digest=image_digest
        )


def render(result: Verification) -> str:
    lines = [("VERIFIED" if result.ok else f"NOT VERIFIED ({result.status})") + f": {result.message}"]
    rows = [
        ("publisher", result.did),
        ("handle", result.handle),
        ("repository", result.repository),
        ("tag", result.tag),
        ("digest", result.digest),
        ("repo rev", result.rev),
        ("commit time", result.commit_time),
        ("commit", result.commit),
        ("key", None if result.key is None else result.key + ("" if result.key_current else " (not current)")),
        ("manifest record", result.manifest_uri),
        ("tag record", result.tag_uri),
        ("proof from", result.source),
    ]
    lines += [f"  {label + ':':<17}{value}" for label, value in rows if value]
    return "\n".join(lines)
