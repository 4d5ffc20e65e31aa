"""Typed, frozen settings for each service, built once at start from env and CLI flags.

Nothing else in the tree reads ``os.environ``: the CLI builds a settings object and passes
it in. Each field declares its environment variable (ATCR's name where ATCR has one) and a
help line, so ``--help`` lists every setting and a wrong value stops the service with one
line that names the setting.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from atcr.errors import ConfigError

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def setting(default: Any, env: str, help: str, *, secret: bool = False) -> Any:
    """Declare one setting: its default, environment variable and help line."""
    if isinstance(default, list | dict | set):
        raise TypeError("settings are immutable: use a tuple")
    return field(default=default, metadata={"env": env, "help": help, "secret": secret})


def default_data_dir() -> Path:
    """Where `atcr dev` keeps keys, blobs and the embedded Valkey (XDG data home)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "atcr"


# --- coercion ----------------------------------------------------------------------------------


def _parse_bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected true or false")


def _parse_int(raw: str) -> int:
    try:
        return int(raw.strip().replace("_", ""))
    except ValueError:
        raise ValueError("expected an integer") from None


def _parse_float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError("expected a number") from None


def _parse_tuple(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


_PARSERS: dict[Any, Callable[[str], Any]] = {
    str: lambda s: s.strip(),
    int: _parse_int,
    float: _parse_float,
    bool: _parse_bool,
    Path: lambda s: Path(s.strip()).expanduser(),
    tuple[str, ...]: _parse_tuple,
}


def _parser_for(tp: Any) -> Callable[[str], Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) == 1:
            base = _parser_for(inner[0])
            return lambda s: None if s.strip() == "" else base(s)
    if tp in _PARSERS:
        return _PARSERS[tp]
    raise TypeError(f"unsupported setting type {tp!r}")


# --- validators used by the services ----------------------------------------------------------


def check_addr(name: str, value: str) -> tuple[str, int]:
    """Parse ``host:port`` (``:port`` means all interfaces) or raise ConfigError naming `name`."""
    host, sep, port = value.rpartition(":")
    if not sep:
        raise ConfigError(f"{name}={value!r}: expected host:port, e.g. 127.0.0.1:5000")
    try:
        num = int(port)
    except ValueError:
        raise ConfigError(f"{name}={value!r}: port must be a number") from None
    if not 0 <= num <= 65535:
        raise ConfigError(f"{name}={value!r}: port must be 0-65535")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - ':port' explicitly asks for all interfaces
    return host, num


def check_url(name: str, value: str, *, schemes: tuple[str, ...] = ("http", "https")) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise ConfigError(f"{name}={value!r}: expected an absolute {'/'.join(schemes)} URL")
    if parts.query or parts.fragment:
        raise ConfigError(f"{name}={value!r}: must not carry a query or fragment")
    return value.rstrip("/")


def check_did(name: str, value: str) -> str:
    from atcr.syntax import is_did

    if not is_did(value):
        raise ConfigError(f"{name}={value!r}: expected a DID such as did:plc:... or did:web:...")
    return value


def check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{name}={value!r}: must be greater than zero")


# --- loading ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettingInfo:
    name: str
    env: str
    help: str
    default: Any
    secret: bool

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def describe(cls: type[Any]) -> list[SettingInfo]:
    """The settings of a settings class, in declaration order, for --help and docs."""
    out = []
    for f in dataclasses.fields(cls):
        out.append(
            SettingInfo(
                name=f.name,
                env=f.metadata["env"],
                help=f.metadata["help"],
                default=f.default,
                secret=bool(f.metadata.get("secret")),
            )
        )
    return out


S = TypeVar("S")


def load(cls: type[S], environ: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> S:
    """Build `cls` from CLI overrides (already typed or raw strings), then env, then defaults.

    Raises ConfigError with one line naming the offending setting.
    """
    overrides = overrides or {}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        env = f.metadata["env"]
        parse = _parser_for(hints[f.name])
        source: str | None = None
        raw: Any = None
        if overrides.get(f.name) is not None:
            raw, source = overrides[f.name], f"--{f.name.replace('_', '-')}"
        elif env in environ:
            raw, source = environ[env], env
        if source is None:
            continue
        if isinstance(raw, str):
            try:
                values[f.name] = parse(raw)
            except ValueError as exc:
                shown = "***" if f.metadata.get("secret") else raw
                raise ConfigError(f"{source}={shown!r}: {exc}") from None
        else:
            values[f.name] = raw
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate()
    return obj
