"""Keep the global `random` to the test that is running.

Hypothesis fails a property test when the global `random` state changes while it draws an
example ("Do not use the `random` module inside strategies"), whoever changed it. Two kinds of
code in this process draw from it while a test runs:

- threads: in-process services under test (uvicorn in a thread, the hold's boto3 retries with
  jitter, valkey-py backoff, websockets keepalive pings), started by other tests' fixtures and
  alive for the session;
- library modules running on the test's own event loop (websockets ping payloads).

`bind_global_random_to_main_thread` makes the module-level functions (`random.random`,
`random.uniform`, ...) answer from a per-thread generator when called off the main thread, so
no background thread can move the global state. `isolate_modules` gives named library modules a
private generator of their own, which covers work that runs on the main thread's loop.
Together they leave the test itself as the only code that moves the global generator, which is
what Hypothesis assumes.
"""

from __future__ import annotations

import importlib
import random
import threading
from collections.abc import Callable, Iterable
from typing import Any

# Every module-level function of `random` that draws (and so moves the state).
_DRAWING = (
    "random", "uniform", "triangular", "randint", "randrange", "choice", "choices", "sample",
    "shuffle", "randbytes", "getrandbits", "normalvariate", "gauss", "lognormvariate",
    "expovariate", "vonmisesvariate", "gammavariate", "betavariate", "paretovariate",
    "weibullvariate",
)  # fmt: skip


def bind_global_random_to_main_thread() -> None:
    """Route module-level `random` draws from any thread but the main one to a private generator."""
    if getattr(random.random, "routed_by_thread", False):
        return  # already bound (conftest imported twice)
    main = threading.main_thread()
    per_thread = threading.local()

    def _generator() -> random.Random:
        gen: random.Random | None = getattr(per_thread, "gen", None)
        if gen is None:
            gen = per_thread.gen = random.Random()
        return gen

    def _route(name: str) -> Callable[..., Any]:
        on_main = getattr(random._inst, name)  # type: ignore[attr-defined]  # the global generator

        def draw(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread() is main:
                return on_main(*args, **kwargs)
            return getattr(_generator(), name)(*args, **kwargs)

        draw.__name__ = name
        draw.routed_by_thread = True  # type: ignore[attr-defined]
        draw.__doc__ = on_main.__doc__
        return draw

    for name in _DRAWING:
        if hasattr(random, name):
            setattr(random, name, _route(name))


def isolate_modules(names: Iterable[str]) -> None:
    """Give each named module that uses `random` a private generator with the same API."""
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if getattr(module, "random", None) is random:
            module.random = random.Random()  # type: ignore[attr-defined]  # same API, own state
