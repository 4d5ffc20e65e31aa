"""Pull counts no hold acknowledged before the AppView stopped, kept in Valkey for the next start.

`PullCounter.stop` flushes its counts to the holds; a hold that is down (or answers 5xx) at
that moment would lose them with the process. They are saved here instead, each with its
idempotency key, and the next AppView to start (any replica) takes them all in one
transaction and sends them again as they were: a hold that did count one recognises the key
and counts it once, so counts stay exact across a clean stop of either service.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from appview.holds.pulls import PullCounter, Unsent
from atcr.valkey import atomic

log = logging.getLogger("appview.pulls")

KEY = "av:pulls:unsent"


async def save(valkey: Any, counter: PullCounter) -> int:
    """Move what `counter` could not send into Valkey; the number of pulls kept."""
    items = counter.take_unsent()
    if not items:
        return 0
    rows = [
        json.dumps({"hold": k[0], "owner": k[1], "repository": k[2], "digest": k[3], "count": n, "key": idem})
        for k, n, idem in items
    ]
    pulls = sum(n for _, n, _ in items)
    try:
        await valkey.rpush(KEY, *rows)
    except Exception as exc:
        log.error("lost %d pull count(s) for unreachable holds: Valkey failed too (%s)", pulls, type(exc).__name__)
        return 0
    log.warning("kept %d pull count(s) for holds that did not answer; the next start sends them", pulls)
    return pulls


async def restore(valkey: Any, counter: PullCounter) -> int:
    """Take every saved count (atomically, so one replica gets each) into `counter`'s next flush."""
    try:
        raw, _ = await atomic(valkey, ("LRANGE", KEY, 0, -1), ("DEL", KEY))
    except Exception as exc:
        log.warning("could not read pull counts saved at the last stop (%s); they stay for the next start",
                    type(exc).__name__)
        return 0
    items: list[Unsent] = []
    for row in raw:
        try:
            d = json.loads(row)
            key = (str(d["hold"]), str(d["owner"]), str(d["repository"]), str(d["digest"]))
            items.append((key, int(d["count"]), str(d["key"])))
        except (ValueError, KeyError, TypeError):
            log.error("dropped an unreadable saved pull count: %r", row[:200])
    counter.resend(items)
    return sum(n for _, n, _ in items)
