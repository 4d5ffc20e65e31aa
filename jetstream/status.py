"""`atcr jetstream --status`: ask the running consumer how it is doing, in words.

The consumer is a long-running process; this is the operator's quick look without a
Prometheus server: connection per source, cursor age, lag, rate, backfill progress.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from atcr.settings import check_addr
from jetstream.errors import StatusUnavailable
from jetstream.settings import JetstreamSettings


def status_url(settings: JetstreamSettings) -> str:
    host, port = check_addr("ATCR_JETSTREAM_STATUS_ADDR", settings.status_addr)
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - listening on all interfaces: ask loopback
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/status"


def fetch_status(settings: JetstreamSettings, *, timeout: float = 5.0) -> dict[str, Any]:
    url = status_url(settings)
    try:
        resp = httpx.get(url, timeout=timeout, trust_env=False)
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        raise StatusUnavailable(f"no consumer answers at {url} ({reason}); is `atcr jetstream` running?") from None
    if resp.status_code != 200:
        raise StatusUnavailable(f"{url} answered HTTP {resp.status_code}")
    try:
        body = resp.json()
    except ValueError:
        raise StatusUnavailable(f"{url} did not answer JSON") from None
    if not isinstance(body, dict):
        raise StatusUnavailable(f"{url} did not answer a JSON object")
    return body


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.1f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def _cursor_text(kind: str, value: int | None, now: float) -> str:
    if value is None:
        return "none"
    if kind == "jetstream":
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(value / 1e6))
        return f"{value} ({when} UTC, {_ago(now - value / 1e6)})"
    return f"seq {value}"


def render(body: dict[str, Any], *, now: float | None = None) -> str:
    """A few readable lines from the `/status` JSON."""
    now = time.time() if now is None else now
    lines = [f"consumer: {body.get('state', 'unknown')}"]
    cursors = body.get("cursors") or {}
    for src in body.get("sources") or []:
        name = src.get("name")
        if src.get("connected"):
            conn = f"connected to {src.get('url')}"
        else:
            conn = "disconnected"
            if src.get("last_error"):
                conn += f" ({src['last_error']}; retry in {src.get('next_retry_in')}s)"
        lines.append(f"  {name}: {conn}; reconnects {src.get('reconnects', 0)}; malformed {src.get('malformed', 0)}")
        cur = cursors.get(name) or {}
        lines.append(f"    cursor saved: {_cursor_text(src.get('kind', ''), cur.get('saved'), now)}")
    lag = body.get("lag_seconds")
    lines.append(
        f"events: {body.get('events_total', 0)} applied, {body.get('events_per_second', 0)}/s; "
        f"lag {'n/a' if lag is None else f'{lag:.3f}s'}; last applied {_ago(body.get('last_applied_ago_seconds'))}"
    )
    bf = body.get("backfill") or {}
    if bf.get("running"):
        lines.append(
            f"backfill: running ({bf.get('reason')}): {bf.get('repos_done', 0)}/{bf.get('repos_total', 0)} "
            f"repositories, {bf.get('records', 0)} records, {bf.get('repos_failed', 0)} failed"
        )
    elif bf.get("runs"):
        finished = bf.get("finished_at")
        lines.append(
            f"backfill: last run {_ago(None if finished is None else now - finished)}: "
            f"{bf.get('repos_done', 0)}/{bf.get('repos_total', 0)} repositories, {bf.get('records', 0)} records"
            + (f"; last error: {bf['last_error']}" if bf.get("last_error") else "")
        )
    else:
        lines.append("backfill: none yet")
    return "\n".join(lines)


def print_status(settings: JetstreamSettings) -> None:
    """Print the summary; raises StatusUnavailable (the CLI prints it and exits 1)."""
    print(render(fetch_status(settings)))
