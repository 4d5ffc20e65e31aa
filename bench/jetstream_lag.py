"""Lag of the consumer at a steady event rate: Jetstream wire in, Valkey model out.

Reproduce:  .venv/bin/python bench/jetstream_lag.py [--rate 1000] [--seconds 30]

A child process runs the Jetstream v1 test double (tests/support/jetstream_server.py) and
sends the recording of bench/jetstream_record.py at `--rate` events per second, each stamped
with the time it is sent (`time_us`, as Jetstream stamps events when it receives them). This
process runs the real consumer (`jetstream.consumer.Consumer`: websocket source, queue,
batching, processor, cursor checkpoints) against a real valkey-server. Lag of an event = the
moment its batch has been applied to Valkey minus its `time_us`. When the machine has two
CPUs, this process is pinned to CPU 0 and the child and valkey-server to CPU 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def serve(rate: int, seconds: float) -> None:
    """Child: the Jetstream double; paces the recording once the parent says go."""
    from jetstream_record import events as recorded

    from tests.support.jetstream_server import JetstreamServer

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    total = int(rate * seconds)
    lines = [json.loads(line) for line in recorded(total, seed=3)]
    with JetstreamServer() as server:
        print(server.url, flush=True)
        sys.stdin.readline()
        start = time.perf_counter()
        for i, event in enumerate(lines):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            event.pop("time_us", None)
            server.inject(event)
        print("done", flush=True)
        sys.stdin.readline()


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(rate: int, seconds: float) -> None:
    from atcr.http import SafeHttpClient
    from atcr.identity import IdentityResolver
    from atcr.settings import load
    from atcr.valkey import EmbeddedValkey, connect
    from jetstream.consumer import Consumer
    from jetstream.processor import BatchResult
    from jetstream.settings import JetstreamSettings

    valkey = EmbeddedValkey()
    url = valkey.start()
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is timed
        [sys.executable, __file__, "--serve", "--rate", str(rate), "--seconds", str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    pinned = "not pinned"
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {0})
        proc = getattr(valkey._server, "_process", None)
        if proc is not None:
            os.sched_setaffinity(proc.pid, {1})
        pinned = "consumer on CPU 0; valkey-server and the Jetstream double on CPU 1"
    assert child.stdout is not None and child.stdin is not None
    js_url = child.stdout.readline().strip()
    settings = load(
        JetstreamSettings,
        {
            "VALKEY_URL": url,
            "JETSTREAM_URL": js_url,
            "ATCR_BACKFILL_ENABLED": "false",
            "ATCR_ALLOW_PRIVATE_NETWORKS": "true",
        },
    )
    v = connect(url)
    http = SafeHttpClient()
    consumer = Consumer(settings, v, http, IdentityResolver(http))
    lags: list[float] = []
    apply = consumer.processor.apply

    async def timed_apply(events: Any) -> BatchResult:
        result = await apply(events)
        now = time.time()
        lags.extend(now - e.time_us / 1e6 for e in events)
        return result

    consumer.processor.apply = timed_apply  # type: ignore[method-assign]
    await consumer.start()
    while not consumer.sources[0].status.connected:  # noqa: ASYNC110 - polling a plain flag
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    child.stdin.write("go\n")
    child.stdin.flush()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    done = threading.Event()
    threading.Thread(target=lambda: (child.stdout.readline(), done.set()), daemon=True).start()  # type: ignore[union-attr]
    while not done.is_set():  # noqa: ASYNC110 - set by a thread
        await asyncio.sleep(0.1)
    expected = int(rate * seconds)
    deadline = time.monotonic() + 30
    while len(lags) < expected * 0.99 and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    status = consumer.status()
    await consumer.stop()
    child.stdin.write("stop\n")
    child.stdin.flush()
    child.wait(30)
    await http.aclose()
    await v.aclose()
    valkey.stop()
    ms = [x * 1000 for x in lags]
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"Machine: {machine}; {pinned}")
    print(
        f"Offered {rate} events/s for {seconds:.0f} s ({expected} events); applied {len(lags)}; "
        f"consumer CPU {cpu / elapsed * 100:.0f}% of one core; consumer lag gauge at the end "
        f"{status['lag_seconds']} s\n"
    )
    print("| rate (events/s) | events | lag p50 ms | p90 ms | p99 ms | max ms |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {rate} | {len(ms)} | {pct(ms, 50):.1f} | {pct(ms, 90):.1f} | {pct(ms, 99):.1f} | {max(ms):.1f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.serve:
        serve(ns.rate, ns.seconds)
    else:
        asyncio.run(measure(ns.rate, ns.seconds))
