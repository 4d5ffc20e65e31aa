"""A small prefix search over handles, repository names and repository descriptions.

Sorted sets hold ``<token>\\0<doc id>`` members at score 0, one per first character of the
token (``keys.search_terms``: spread over a cluster's shards), so a prefix lookup is one
ZRANGEBYLEX on one key. Doc ids are a DID (a user) or ``<did>/<repository>``. Each doc keeps its token
set, so an update removes exactly the tokens it no longer has. It is an index only: rebuilt from
what the model sees (loads, Jetstream, write-through); nothing authoritative lives here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import valkey.asyncio as avalkey

from atcr.readmodel import keys
from atcr.readmodel._compat import done
from atcr.readmodel.models import SearchResults

_WORD: Final = re.compile(r"[a-z0-9]+")
MAX_TOKEN: Final = 48
MAX_DOC_TOKENS: Final = 200
MAX_QUERY_TOKENS: Final = 5
PER_TOKEN_LIMIT: Final = 500


def tokenize(text: str, *, limit: int = MAX_DOC_TOKENS) -> list[str]:
    """Lowercase alphanumeric words of 2+ chars, in order, without repeats."""
    out: list[str] = []
    seen: set[str] = set()
    for found in _WORD.findall(text.lower()):
        word = found[:MAX_TOKEN]
        if len(word) < 2 or word in seen:
            continue
        seen.add(word)
        out.append(word)
        if len(out) >= limit:
            break
    return out


def _member(token: str, doc_id: str) -> bytes:
    return token.encode() + b"\x00" + doc_id.encode()


def queue_name_tokens(pipe: Any, doc_id: str, repository: str) -> None:
    """Add a repository's name tokens (idempotent; queued on a pipeline, no read needed)."""
    tokens = tokenize(repository)
    if not tokens:
        return
    pipe.sadd(keys.search_doc(doc_id), *tokens)
    for key, group in _by_key(tokens).items():
        pipe.zadd(key, {_member(t, doc_id): 0 for t in group})


def _by_key(tokens: Iterable[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for t in tokens:
        out.setdefault(keys.search_terms(t), []).append(t)
    return out


async def _set_doc(v: avalkey.Valkey, doc_id: str, tokens: set[str]) -> None:
    current = {t.decode() if isinstance(t, bytes) else str(t) for t in await done(v.smembers(keys.search_doc(doc_id)))}
    drop, add = current - tokens, tokens - current
    if not drop and not add:
        return
    pipe = v.pipeline(transaction=False)
    if drop:
        pipe.srem(keys.search_doc(doc_id), *drop)
        for key, group in _by_key(sorted(drop)).items():
            pipe.zrem(key, *[_member(t, doc_id) for t in group])
    if add:
        pipe.sadd(keys.search_doc(doc_id), *add)
        for key, group in _by_key(sorted(add)).items():
            pipe.zadd(key, {_member(t, doc_id): 0 for t in group})
    await pipe.execute()


async def index_repository(v: avalkey.Valkey, did: str, repository: str, description: str | None) -> None:
    """(Re)index a repository; `description` None removes it (the repository is gone)."""
    if description is None:
        await _set_doc(v, f"{did}/{repository}", set())
        return
    await _set_doc(v, f"{did}/{repository}", set(tokenize(repository)) | set(tokenize(description)))


async def index_user(v: avalkey.Valkey, did: str, handle: str | None) -> None:
    await _set_doc(v, did, set(tokenize(handle)) if handle else set())


async def search(v: avalkey.Valkey, query: str, limit: int = 25) -> SearchResults:
    """Users whose handle, and repositories whose name, description or owner's handle, match
    every query word as a prefix. Ordered by id; at most `limit` of each."""
    tokens = tokenize(query, limit=MAX_QUERY_TOKENS)
    if not tokens:
        return SearchResults()
    pipe = v.pipeline(transaction=False)
    for t in tokens:
        pipe.zrangebylex(keys.search_terms(t), b"[" + t.encode(), b"[" + t.encode() + b"\xff", 0, PER_TOKEN_LIMIT)
    rows = await pipe.execute()
    users_by: list[set[str]] = []
    repos_by: list[set[str]] = []
    for row in rows:
        users: set[str] = set()
        repos: set[str] = set()
        for raw in row:
            doc_id = raw.split(b"\x00", 1)[1].decode()
            (repos if "/" in doc_id else users).add(doc_id)
        users_by.append(users)
        repos_by.append(repos)
    all_users = set.intersection(*users_by)
    candidates = set.union(*repos_by)
    owners = sorted(all_users | set.union(*users_by))[:50]
    if owners:
        pipe = v.pipeline(transaction=False)
        for did in owners:
            pipe.zrange(keys.repositories(did), 0, 99)
        for did, names in zip(owners, await pipe.execute(), strict=True):
            candidates |= {f"{did}/{n.decode()}" for n in names}
    matched = [
        doc
        for doc in sorted(candidates)
        if all(doc in repos_by[i] or doc.split("/", 1)[0] in users_by[i] for i in range(len(tokens)))
    ]
    return SearchResults(users=sorted(all_users)[:limit], repositories=matched[:limit])
