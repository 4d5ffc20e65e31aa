"""Typing glue: valkey-py annotates async commands as ``Awaitable[T] | T``."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar, cast

T = TypeVar("T")


async def done(value: Awaitable[T] | T) -> T:
    """Await a command of the asyncio client (the union exists only for the sync client)."""
    return await cast(Awaitable[T], value)
