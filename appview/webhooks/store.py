"""Webhooks and their deliveries in Valkey.

Keys (all under the ``{wh}`` hash tag, so the queue scripts touch one slot of a Valkey Cluster):

* ``{wh}:hook:<id>``: a hash: did, url, events (JSON list), repository, sealed secret, createdAt,
  failing (0/1), lastError.
* ``{wh}:user:<did>``: a hash id -> ``{"e": events, "r": repository}``: what `emit` reads to fan an
  event out, in the same script call that queues it.
* ``{wh}:msg:<message id>``: one pending delivery: hook id, body, attempts, first (when queued).
* ``{wh}:due``: a sorted set message id -> when it is next due (unix seconds). Claiming a delivery
  moves its score forward by the lease (a visibility timeout), so a worker that dies holding it
  only delays it: once the lease runs out another worker claims it again. It leaves the set only
  when delivered or given up.
* ``{wh}:log:<hook id>``: the last 50 attempts (JSON, newest first).

Why the AppView keeps webhooks, not ATCR's `io.atcr.sailor.webhook` + private hold record: see
docs/webhooks.md ("Where webhooks are stored").
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import valkey.asyncio as avalkey

from appview.auth.device import awaited
from appview.auth.sessions import SessionCipher
from appview.webhooks.errors import WebhookLimit, WebhookUnknown
from atcr.valkey import atomic, is_cluster

log = logging.getLogger("appview.webhooks")

LOG_SIZE = 50
REPLICA_CHECK = 30.0  # seconds between looks at how many replicas the primary has
REPLICA_WAIT_MS = 500
MAX_PER_USER = 20
# Every webhook key carries the {wh} hash tag: the queue script touches the due set and the
# messages together, so on a Valkey Cluster they share one slot (docs/cache.md).
DUE = "{wh}:due"

# Fan an event out to the owner's matching webhooks and queue one delivery each. The message id
# is the event id + hook id, so queuing the same event twice queues nothing more.
_EMIT = """
local hooks = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #hooks, 2 do
  local id = hooks[i]
  local spec = cjson.decode(hooks[i + 1])
  local wanted = false
  for _, e in ipairs(spec.e) do
    if e == ARGV[2] then wanted = true end
  end
  if wanted and (spec.r == '' or spec.r == ARGV[3]) then
    local mid = ARGV[1] .. '_' .. id
    local key = '{wh}:msg:' .. mid
    if redis.call('EXISTS', key) == 0 then
      redis.call('HSET', key, 'hook', id, 'body', ARGV[4], 'attempts', 0, 'first', ARGV[5], 'type', ARGV[6])
      redis.call('ZADD', KEYS[2], ARGV[5], mid)
      n = n + 1
    end
  end
end
return n
"""

# Claim what is due: each claimed id's score moves to now + lease (its visibility timeout).
_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local until_ = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], until_, id)
end
return ids
"""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Webhook:
    id: str
    did: str
    url: str
    events: tuple[str, ...]
    repository: str | None
    created_at: str
    failing: bool = False
    last_error: str | None = None

    def public(self) -> dict[str, Any]:
        """The API's view of a webhook (never the secret)."""
        return {
            "id": self.id,
            "url": self.url,
            "events": list(self.events),
            "repository": self.repository,
            "createdAt": self.created_at,
            "failing": self.failing,
            "lastError": self.last_error,
        }


@dataclass(frozen=True)
class Pending:
    """A delivery claimed from the queue."""

    message_id: str
    hook_id: str
    body: str
    type: str
    attempts: int
    first: float


@dataclass
class Attempt:
    """One line of a webhook's delivery log."""

    message_id: str
    type: str
    time: float
    status: int | None  # the receiver's HTTP status; None when there was no answer
    latency_ms: float
    attempt: int
    outcome: str  # delivered | retrying | failed
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": self.type,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.time)),
            "status": self.status,
            "latencyMs": round(self.latency_ms, 1),
            "attempt": self.attempt,
            "outcome": self.outcome,
            "error": self.error,
        }


def _flat(mapping: dict[str, Any]) -> list[Any]:
    """HSET's field/value arguments of a mapping, for `atomic`."""
    return [x for pair in mapping.items() for x in pair]


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookStore:
    def __init__(
        self, valkey: avalkey.Valkey, cipher: SessionCipher, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._v = valkey
        self._cipher = cipher
        self._clock = clock
        self._replicas = 0
        self._replicas_seen = -REPLICA_CHECK
        self._emit = valkey.register_script(_EMIT)
        self._claim = valkey.register_script(_CLAIM)

    # --- webhooks ------------------------------------------------------------------------------

    async def create(self, did: str, url: str, events: list[str], repository: str | None) -> tuple[Webhook, str]:
        """A new webhook and its signing secret (shown to the user once, kept sealed)."""
        if await awaited(self._v.hlen(f"{{wh}}:user:{did}")) >= MAX_PER_USER:
            raise WebhookLimit(f"at most {MAX_PER_USER} webhooks per account")
        hook_id = "wh" + secrets.token_hex(8)
        secret = new_secret()
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._clock()))
        sealed = base64.b64encode(self._cipher.seal({"secret": secret}, f"webhook:{hook_id}")).decode()
        mapping = {
            "did": did, "url": url, "events": json.dumps(events), "repository": repository or "",
            "secret": sealed, "createdAt": created, "failing": "0", "lastError": "",
        }
        await atomic(
            self._v,
            ("HSET", f"{{wh}}:hook:{hook_id}", *_flat(mapping)),
            ("HSET", f"{{wh}}:user:{did}", hook_id, json.dumps({"e": events, "r": repository or ""})),
        )
        return Webhook(hook_id, did, url, tuple(events), repository, created), secret

    async def get(self, hook_id: str, did: str | None = None) -> Webhook:
        """The webhook; `WebhookUnknown` when absent or (given `did`) someone else's."""
        raw = await awaited(self._v.hgetall(f"{{wh}}:hook:{hook_id}")) if hook_id.isalnum() else {}
        data = {_s(k): _s(v) for k, v in raw.items()}
        if not data or (did is not None and data.get("did") != did):
            raise WebhookUnknown(detail={"id": hook_id[:40]})
        return Webhook(
            id=hook_id, did=data["did"], url=data["url"], events=tuple(json.loads(data["events"])),
            repository=data.get("repository") or None, created_at=data.get("createdAt", ""),
            failing=data.get("failing") == "1", last_error=data.get("lastError") or None,
        )

    async def secret(self, hook_id: str) -> str | None:
        raw = await awaited(self._v.hget(f"{{wh}}:hook:{hook_id}", "secret"))
        if raw is None:
            return None
        opened = self._cipher.open(base64.b64decode(raw), f"webhook:{hook_id}")
        return str(opened["secret"]) if opened else None

    async def for_user(self, did: str) -> list[Webhook]:
        ids = sorted(_s(i) for i in await awaited(self._v.hkeys(f"{{wh}}:user:{did}")))
        out = []
        for hook_id in ids:
            try:
                out.append(await self.get(hook_id, did))
            except WebhookUnknown:
                continue
        return out

    async def delete(self, did: str, hook_id: str) -> None:
        await self.get(hook_id, did)
        await atomic(
            self._v,
            ("DEL", f"{{wh}}:hook:{hook_id}"),
            ("DEL", f"{{wh}}:log:{hook_id}"),
            ("HDEL", f"{{wh}}:user:{did}", hook_id),
        )
        # Its queued deliveries are dropped by the worker when it finds the hook gone.

    async def delete_all(self, did: str) -> int:
        """Every webhook of an account, with its log (data deletion)."""
        hooks = await self.for_user(did)
        for hook in hooks:
            await self.delete(did, hook.id)
        await self._v.delete(f"{{wh}}:user:{did}")
        return len(hooks)

    async def set_health(self, hook_id: str, *, failing: bool, error: str | None) -> None:
        if await self._v.exists(f"{{wh}}:hook:{hook_id}"):
            await awaited(self._v.hset(
                f"{{wh}}:hook:{hook_id}", mapping={"failing": "1" if failing else "0", "lastError": error or ""}
            ))

    # --- queue ---------------------------------------------------------------------------------

    async def emit(self, did: str, kind: str, repository: str, event_id: str, body: str, type_: str) -> int:
        """Queue `body` for each of `did`'s webhooks subscribed to `kind` (one script call)."""
        args: list[str | float] = [event_id, kind, repository, body, self._clock(), type_]
        n = int(await self._emit(keys=[f"{{wh}}:user:{did}", DUE], args=args))
        if n:
            await self._replicated()
        return n

    async def _replicated(self) -> None:
        """With replicas (Sentinel), wait until one has the queued delivery: a failover right after
        the push then loses nothing. Bounded (REPLICA_WAIT_MS); a replica that lags is logged."""
        if is_cluster(self._v):
            return  # WAIT answers for one node; a cluster's replica acks are not asked for (docs/webhooks.md)
        now = time.monotonic()
        if now - self._replicas_seen >= REPLICA_CHECK:
            info = await self._v.info("replication")
            self._replicas = int(info.get("connected_slaves", 0) or 0)
            self._replicas_seen = now
        if self._replicas:
            acked = await self._v.wait(1, REPLICA_WAIT_MS)
            if int(acked) < 1:
                log.warning("webhook delivery queued but no replica confirmed it within %d ms", REPLICA_WAIT_MS)

    async def enqueue(self, hook_id: str, message_id: str, body: str, type_: str) -> None:
        """Queue one delivery to one webhook now (test events, redelivery)."""
        now = self._clock()
        await atomic(
            self._v,
            ("HSET", f"{{wh}}:msg:{message_id}",
             *_flat({"hook": hook_id, "body": body, "attempts": 0, "first": now, "type": type_})),
            ("ZADD", DUE, now, message_id),
        )
        await self._replicated()

    async def claim(self, limit: int, lease: float) -> list[Pending]:
        ids = [_s(i) for i in await self._claim(keys=[DUE], args=[self._clock(), lease, limit])]
        out = []
        for mid in ids:
            raw = await awaited(self._v.hgetall(f"{{wh}}:msg:{mid}"))
            data = {_s(k): _s(v) for k, v in raw.items()}
            if not data:
                await self._v.zrem(DUE, mid)
                continue
            out.append(Pending(mid, data["hook"], data["body"], data.get("type", ""), int(data.get("attempts", 0)),
                               float(data.get("first", 0))))
        return out

    async def done(self, pending: Pending) -> None:
        await atomic(self._v, ("ZREM", DUE, pending.message_id), ("DEL", f"{{wh}}:msg:{pending.message_id}"))

    async def retry_at(self, pending: Pending, when: float) -> None:
        await atomic(
            self._v,
            ("HINCRBY", f"{{wh}}:msg:{pending.message_id}", "attempts", 1),
            ("ZADD", DUE, when, pending.message_id),
        )

    async def pending_count(self) -> int:
        return int(await self._v.zcard(DUE))

    # --- log -----------------------------------------------------------------------------------

    async def log(self, hook_id: str, attempt: Attempt, body: str) -> None:
        entry = {**attempt.public(), "t": attempt.time, "body": body}
        pipe = self._v.pipeline(transaction=False)
        pipe.lpush(f"{{wh}}:log:{hook_id}", json.dumps(entry))
        pipe.ltrim(f"{{wh}}:log:{hook_id}", 0, LOG_SIZE - 1)
        await pipe.execute()

    async def deliveries(self, hook_id: str, *, with_body: bool = False) -> list[dict[str, Any]]:
        raw = await awaited(self._v.lrange(f"{{wh}}:log:{hook_id}", 0, LOG_SIZE - 1))
        out = []
        for item in raw:
            entry: dict[str, Any] = json.loads(item)
            entry.pop("t", None)
            if not with_body:
                entry.pop("body", None)
            out.append(entry)
        return out

    async def logged_body(self, hook_id: str, message_id: str) -> tuple[str, str] | None:
        """The body and type a logged delivery carried (what "redeliver" sends again)."""
        for entry in await self.deliveries(hook_id, with_body=True):
            if entry.get("id") == message_id and isinstance(entry.get("body"), str):
                return entry["body"], str(entry.get("type", ""))
        return None


__all__ = ["LOG_SIZE", "MAX_PER_USER", "Attempt", "Pending", "Webhook", "WebhookStore", "new_secret"]
