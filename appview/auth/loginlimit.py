"""Failed-login limits that hold under bursts and across replicas: reserve, then ask the PDS.

Checking "over the limit?" before a password check and counting the failure after it lets a
burst through: 150 concurrent wrong passwords all pass the check before the first failure is
counted. So an attempt *reserves* one failure in Valkey before the PDS (or bcrypt) is asked,
and gives it back when the credentials turn out good, or when the answer says nothing about
them (the PDS is down). INCR-then-undo is atomic enough without Lua: an attempt is admitted
only when its own INCR stayed within the limit, so at most `limit` attempts are ever
outstanding, whatever the concurrency and however many replicas share the counters.

Two budgets per 10-minute window, keyed by the client address (`appview/clientaddr.py`):

* (address, account): `ATCR_RATE_LIMIT_LOGIN_FAILURES`, the guessing limit. One attacker
  behind a NAT locks only the accounts they attack, from that address; everyone else behind
  it still logs in.
* address alone: `ATCR_RATE_LIMIT_LOGIN_FAILURES_ADDRESS`, across accounts and unknown
  names (credential stuffing). Once it is used up no new password from that address reaches
  the PDS, but credentials proven before (remembered for an hour, device secrets) still work,
  so the others behind that address keep pulling and pushing.

When Valkey is unreachable the same counting happens in this process's memory, so each
replica still holds the limit on its own (logins keep working during an outage).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import valkey.asyncio as avalkey
from valkey.exceptions import ValkeyError

from appview.errors import TooManyRequests
from atcr.valkey import atomic

log = logging.getLogger("appview.auth")

WINDOW = 600
MAX_LOCAL_KEYS = 100_000


class _Local:
    """In-process counters for when Valkey is down (per replica, same semantics)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def get(self, key: str) -> int:
        return self._counts.get(key, 0)

    def add(self, key: str, n: int) -> int:
        if len(self._counts) > MAX_LOCAL_KEYS:
            self._counts.clear()  # a flood of identities: forget rather than grow without bound
        value = max(0, self._counts.get(key, 0) + n)
        self._counts[key] = value
        return value


@dataclass
class Reservation:
    """One reserved failure; `release` gives it back (good credentials, or no verdict)."""

    limiter: LoginLimiter
    keys: tuple[str, ...]
    released: bool = False

    async def release(self) -> None:
        if not self.released:
            self.released = True
            await self.limiter._add(self.keys, -1)


class LoginLimiter:
    def __init__(
        self,
        valkey: avalkey.Valkey,
        *,
        per_account: int,
        per_address: int,
        window: int = WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._v = valkey
        self.per_account = per_account
        self.per_address = per_address
        self.window = window
        self._clock = clock
        self._local = _Local()
        self._failing = False

    @property
    def enabled(self) -> bool:
        return self.per_account > 0 or self.per_address > 0

    def _keys(self, address: str, account: str) -> tuple[tuple[str, ...], float]:
        """The address counter, then (when an account is named) the (address, account) one."""
        now = self._clock()
        window = int(now // self.window)
        base = f"av:rl:{{login:{address}}}"  # one hash slot per address: its counters move together
        wait = max(1.0, math.ceil((window + 1) * self.window - now))
        keys = (f"{base}:a:{window}",) + ((f"{base}:u:{account}:{window}",) if account else ())
        return keys, wait

    def _refuse(self, wait: float) -> TooManyRequests:
        return TooManyRequests("too many failed logins; wait", headers={"Retry-After": str(int(wait))})

    def _valkey_failed(self, exc: Exception) -> None:
        if not self._failing:
            log.warning("login limiter cannot reach Valkey (%s); counting per process", type(exc).__name__)
        self._failing = True

    async def check(self, address: str, account: str) -> None:
        """Refuse (429) when the (address, account) budget is used up; counts nothing.

        Runs before anything about the credentials is looked at, remembered proofs included,
        so a locked account cannot be guessed at through them."""
        if not address or not account or self.per_account <= 0:
            return
        (_, key), wait = self._keys(address, account)
        try:
            raw = await self._v.get(key)
            count = int(raw) if raw is not None else 0
            self._failing = False
        except (ValkeyError, OSError) as exc:
            self._valkey_failed(exc)
            count = self._local.get(key)
        if count >= self.per_account:
            raise self._refuse(wait)

    async def reserve(self, address: str, account: str = "", *, address_wide: bool = True) -> Reservation | None:
        """Count one failure now, before the credentials are checked; 429 when that would
        exceed a budget. Without an account (a name that does not resolve) only the address
        is charged; `address_wide=False` charges only the account (device secrets: unguessable,
        so they need not suffer for what others behind the address did).

        When only the address's budget is used up, the attempt still counts against the
        account: otherwise refusals would be free, and whoever exhausted an address could
        guess at remembered passwords (a hit answers 200, a miss 429) without limit."""
        if not address or not self.enabled:
            return None
        keys, wait = self._keys(address, account)
        counted = keys if address_wide else keys[1:]
        if not counted:
            return None
        before = dict(zip(counted, [c - 1 for c in await self._add(counted, 1)], strict=True))
        account_key = keys[1] if account else None
        if account_key is not None and 0 < self.per_account <= before[account_key]:
            await self._add(counted, -1)
            raise self._refuse(wait)
        if address_wide and 0 < self.per_address <= before[keys[0]]:
            await self._add(keys[:1], -1)  # the account (if any) keeps this attempt
            raise self._refuse(wait)
        return Reservation(self, counted)

    async def _add(self, keys: tuple[str, ...], n: int) -> list[int]:
        try:
            # One slot (the address's hash tag), so one atomic script on a cluster too.
            results = await atomic(
                self._v, *[c for key in keys for c in (("INCRBY", key, n), ("EXPIRE", key, self.window * 2))]
            )
            self._failing = False
            return [int(r) for r in results[::2]]
        except (ValkeyError, OSError) as exc:
            self._valkey_failed(exc)
            return [self._local.add(key, n) for key in keys]
