"""A small HTTP/1.1 load generator on raw asyncio streams, for concurrency tests.

httpx spends milliseconds of CPU per request once hundreds of connections are open, so on a
2-core machine a test written with it measures the client, not the server. This one keeps
one keep-alive connection per worker and parses only the status line, the headers and a
Content-Length body: about 0.1 ms of CPU per request.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Job:
    url: str  # http://host:port/path?query
    headers: tuple[tuple[str, str], ...] = ()
    method: str = "GET"
    label: str = ""


@dataclass
class Result:
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0
    headers: list[dict[str, str]] = field(default_factory=list)  # kept only when asked
    # (started, finished, status or 0 for a transport error, job label), monotonic seconds
    timeline: list[tuple[float, float, int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, job: Job, timeout: float) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout
            )
        parts = urlsplit(job.url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        head = [f"{job.method} {target} HTTP/1.1", f"Host: {parts.netloc}"]
        head += [f"{k}: {v}" for k, v in job.headers]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        async with asyncio.timeout(timeout):
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("closed")
            status = int(status_line.split()[1])
            headers: dict[str, str] = {}
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            body = b""
            length = int(headers.get("content-length", "0") or 0)
            if job.method != "HEAD" and length:
                body = await self.reader.readexactly(length)
            if headers.get("connection", "").lower() == "close":
                self.close()
        return status, headers, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(
    jobs: list[Job], *, concurrency: int, timeout: float = 60.0, keep_headers: bool = False,
    until: float | None = None,
) -> Result:
    """Send every job over `concurrency` keep-alive connections (one worker each).

    With `until` (a `time.monotonic()` deadline) the jobs are sent round and round until then:
    a load run of a fixed duration."""
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    result = Result()
    started = time.monotonic()

    async def worker() -> None:
        conns: dict[tuple[str, int], _Conn] = {}
        try:
            while True:
                try:
                    job = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if until is not None:
                    if time.monotonic() >= until:
                        return
                    queue.put_nowait(job)
                parts = urlsplit(job.url)
                key = (parts.hostname or "127.0.0.1", parts.port or 80)
                conn = conns.setdefault(key, _Conn(*key))
                t0 = time.monotonic()
                try:
                    status, headers, _ = await conn.request(job, timeout)
                except (OSError, TimeoutError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                    conn.close()
                    result.errors[type(exc).__name__] += 1
                    result.timeline.append((t0, time.monotonic(), 0, job.label))
                    continue
                t1 = time.monotonic()
                result.latencies.append(t1 - t0)
                result.statuses[status] += 1
                result.timeline.append((t0, t1, status, job.label))
                if keep_headers:
                    result.headers.append(headers)
        finally:
            for conn in conns.values():
                conn.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(jobs)) or 1)))
    result.seconds = time.monotonic() - started
    return result


__all__ = ["Job", "Result", "run"]
