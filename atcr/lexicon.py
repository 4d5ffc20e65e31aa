"""The io.atcr.* lexicons: load the JSON documents, compile them once, validate against them.

Every record the services write passes through `validate_record` first. A bad write then fails
here, naming the field, rather than as a bare 400 from the PDS or as a record that other
AppViews cannot read. The same machinery checks hold XRPC bodies, so both sides of a call agree
on the shapes in `lexicons/`.

The documents are the source of truth (ARCHITECTURE.md): nothing here hard-codes a field. The one
exception is `_STRING_OR_OBJECT`, for fields that lexicon unions cannot express.

Speed: each definition is compiled once into a tree of closures. Validation walks the value with
no schema lookups. A field path is built only while an error unwinds, so the happy path pays
nothing for it.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeGuard

from atcr.errors import LexiconError, RecordValidationError

__all__ = [
    "DEFAULT_LEXICON_DIR",
    "LexiconRegistry",
    "known_record_nsids",
    "load_lexicons",
    "parse_xrpc_params",
    "validate_record",
    "validate_xrpc_input",
    "validate_xrpc_output",
    "validate_xrpc_params",
]

DEFAULT_LEXICON_DIR: Final[Path] = Path(__file__).resolve().parent.parent / "lexicons"

# A compiled schema: returns on success and raises `_Invalid` on failure.
_Check = Callable[[Any], None]

_MISSING: Final = object()

# Fields declared "unknown" only because a lexicon union cannot hold a bare string. Each one takes
# exactly one string shape or one object shape, so validation stays closed.
# Key: "<nsid>#<def>.<property>". Value: (string format, ref to the object def, message).
_STRING_OR_OBJECT: Final[Mapping[str, tuple[str, str, str]]] = {
    "io.atcr.sailor.star#main.subject": (
        "at-uri",
        "#legacySubject",
        "must be an AT-URI or an object with did and repository",
    ),
}

_FIELD_TYPES: Final = frozenset(
    {"boolean", "integer", "string", "bytes", "cid-link", "blob", "array", "object", "ref", "union", "unknown"}
)
_PRIMARY_TYPES: Final = frozenset({"record", "query", "procedure", "subscription", "permission-set"})
_PARAM_TYPES: Final = frozenset({"boolean", "integer", "string", "unknown", "array"})
_BODY_TYPES: Final = frozenset({"object", "ref", "union"})


class _Invalid(Exception):
    """Raised deep in a check; each enclosing container appends its segment while it unwinds.

    Internal only: `_run` turns it into `RecordValidationError` at the public boundary.
    """

    def __init__(self, message: str, *path: str | int) -> None:
        super().__init__(message)
        self.message = message
        self.rpath: list[str | int] = list(reversed(path))  # innermost segment first

    def path(self) -> str:
        out: list[str] = []
        for seg in reversed(self.rpath):
            if isinstance(seg, int):
                out.append(f"[{seg}]")
            elif out:
                out.append(f".{seg}")
            else:
                out.append(seg)
        return "".join(out)


# --------------------------------------------------------------------------------------------
# String formats (atproto.com/specs/lexicon#string-formats). Each predicate is total: it returns
# False on anything odd instead of raising, because the input is untrusted.

_DID_RE: Final = re.compile(r"did:[a-z]+:(?:[a-zA-Z0-9._:-]|%[0-9A-Fa-f]{2})*(?:[a-zA-Z0-9._-]|%[0-9A-Fa-f]{2})")
_HANDLE_RE: Final = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
_NSID_RE: Final = re.compile(
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)
_TID_RE: Final = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
_RKEY_RE: Final = re.compile(r"[a-zA-Z0-9_~.:-]{1,512}")
_DATETIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]{1,20})?"
    r"(?:Z|([+-])([0-9]{2}):([0-9]{2}))"
)
_URI_RE: Final = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:(?://)?[^\s/][^\s]*")
_LANGUAGE_RE: Final = re.compile(r"(?:[a-zA-Z]{2,8}|[ixIX](?=-))(?:-[a-zA-Z0-9]{1,8})*")
_CID_B32_RE: Final = re.compile(r"b[a-z2-7]{7,255}")
_AT_URI_FRAGMENT_RE: Final = re.compile(r"/[a-zA-Z0-9._~:@!$&')(*+,;=%\[\]/-]*")
_MIME_RE: Final = re.compile(r"[a-zA-Z0-9!#$&^_.+-]+/[a-zA-Z0-9!#$&^_.+-]+")
_BASE64_RE: Final = re.compile(r"[A-Za-z0-9+/]*={0,2}")


def _is_did(s: str) -> bool:
    return len(s) <= 2048 and _DID_RE.fullmatch(s) is not None


def _is_handle(s: str) -> bool:
    return len(s) <= 253 and _HANDLE_RE.fullmatch(s) is not None


def _is_nsid(s: str) -> bool:
    return len(s) <= 317 and _NSID_RE.fullmatch(s) is not None


def _is_tid(s: str) -> bool:
    return _TID_RE.fullmatch(s) is not None


def _is_record_key(s: str) -> bool:
    return s not in {".", ".."} and _RKEY_RE.fullmatch(s) is not None


def _is_at_identifier(s: str) -> bool:
    return _is_did(s) if s.startswith("did:") else _is_handle(s)


def _is_at_uri(s: str) -> bool:
    # Restricted AT-URI syntax: at://authority[/collection[/rkey]][#/fragment], no query.
    if len(s) > 8192 or not s.startswith("at://"):
        return False
    rest, hash_, fragment = s[5:].partition("#")
    if hash_ and _AT_URI_FRAGMENT_RE.fullmatch(fragment) is None:
        return False
    parts = rest.split("/")
    if len(parts) > 3 or not _is_at_identifier(parts[0]):
        return False
    if len(parts) >= 2 and not _is_nsid(parts[1]):
        return False
    return len(parts) < 3 or _is_record_key(parts[2])


def _is_datetime(s: str) -> bool:
    # atproto datetimes: RFC 3339 with upper-case T, seconds, and a timezone that is not "-00:00".
    if len(s) > 64:
        return False
    m = _DATETIME_RE.fullmatch(s)
    if m is None:
        return False
    year, month, day, hour, minute, second, sign, tz_h, tz_m = m.groups()
    if year == "0000" or (sign == "-" and tz_h == "00" and tz_m == "00"):
        return False
    if tz_h is not None and (int(tz_h) > 23 or int(tz_m) > 59):
        return False
    try:
        datetime(int(year), int(month), int(day), int(hour), int(minute), int(second))
    except ValueError:
        return False
    return True


def _is_uri(s: str) -> bool:
    return len(s) <= 8192 and _URI_RE.fullmatch(s) is not None


def _is_language(s: str) -> bool:
    return len(s) <= 128 and _LANGUAGE_RE.fullmatch(s) is not None


def _uvarint(data: bytes, i: int) -> tuple[int, int]:
    """Read an unsigned LEB128 varint; (-1, i) when truncated or longer than 9 bytes."""
    value = shift = 0
    for n in range(9):
        if i + n >= len(data):
            return -1, i
        byte = data[i + n]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, i + n + 1
        shift += 7
    return -1, i


def _is_cid(s: str) -> bool:
    # Syntax only: multibase base32 ('b'), CIDv1, codec and multihash varints, digest length that
    # matches the bytes left. atproto only emits this form; CIDv0 ("Qm...") is not accepted.
    if _CID_B32_RE.fullmatch(s) is None:
        return False
    body = s[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (binascii.Error, ValueError):
        return False
    version, i = _uvarint(raw, 0)
    if version != 1:
        return False
    codec, i = _uvarint(raw, i)
    hash_code, i = _uvarint(raw, i)
    length, i = _uvarint(raw, i)
    return min(codec, hash_code, length) >= 0 and length == len(raw) - i


_FORMATS: Final[Mapping[str, tuple[Callable[[str], bool], str]]] = {
    "did": (_is_did, "must be a valid DID"),
    "handle": (_is_handle, "must be a valid handle"),
    "at-identifier": (_is_at_identifier, "must be a valid DID or handle"),
    "at-uri": (_is_at_uri, "must be a valid AT-URI"),
    "datetime": (_is_datetime, "must be a valid datetime (RFC 3339 with timezone)"),
    "cid": (_is_cid, "must be a valid CID"),
    "uri": (_is_uri, "must be a valid URI"),
    "nsid": (_is_nsid, "must be a valid NSID"),
    "tid": (_is_tid, "must be a valid TID"),
    "record-key": (_is_record_key, "must be a valid record key"),
    "language": (_is_language, "must be a valid language tag"),
}


def _utf8_len(s: str) -> int:
    if s.isascii():
        return len(s)
    try:
        return len(s.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: not text the data model can carry
        raise _Invalid("must be valid Unicode text") from None


def _is_grapheme_extender(ch: str, cp: int) -> bool:
    return (
        cp == 0x200D  # zero-width joiner
        or 0xFE00 <= cp <= 0xFE0F  # variation selectors
        or 0x1F3FB <= cp <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= cp <= 0xE007F  # emoji tag sequences
        or 0x1160 <= cp <= 0x11FF  # Hangul medial vowels and final consonants
        or unicodedata.category(ch) in {"Mn", "Me", "Mc"}
    )


def _grapheme_len(s: str) -> int:
    """Count user-perceived characters.

    The stdlib has no UAX #29 segmentation, so this is close, not exact. It covers combining
    marks, ZWJ emoji sequences, flags, skin tones, Hangul jamo and CRLF, which is what
    maxGraphemes limits meet in practice.
    """
    if s.isascii():
        return len(s) - s.count("\r\n")
    count = 0
    joined = flag_open = prev_cr = False
    for ch in s:
        cp = ord(ch)
        if _is_grapheme_extender(ch, cp):
            joined = cp == 0x200D
            prev_cr = False
            continue
        if joined:
            joined = False
            continue
        if 0x1F1E6 <= cp <= 0x1F1FF:  # regional indicators pair up into flags
            if flag_open:
                flag_open = False
                continue
            flag_open = True
        else:
            flag_open = False
        if ch == "\n" and prev_cr:
            prev_cr = False
            continue
        prev_cr = ch == "\r"
        count += 1
    return count


def _mime_accepted(mime: str, accept: Sequence[str]) -> bool:
    base = mime.split(";", 1)[0].strip().lower()
    for pattern in accept:
        if pattern in {"*/*", "*"} or pattern == base:
            return True
        if pattern.endswith("/*") and base.startswith(pattern[:-1]):
            return True
    return False


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    return type(value) is dict or isinstance(value, Mapping)


# --------------------------------------------------------------------------------------------
# Compilation


class _Cell:
    """A late-bound target for refs, so defs can refer to each other in any order (or to themselves)."""

    __slots__ = ("check", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.check: _Check = self._unbound

    def _unbound(self, value: object) -> None:
        raise LexiconError(f"ref {self.key!r} was used before it was compiled")


@dataclass(frozen=True, slots=True)
class _Method:
    kind: str
    params: _Check | None
    param_types: Mapping[str, tuple[str, str | None]]
    input: _Check | None
    output: _Check | None


def _ref_key(ref: str, nsid: str) -> str:
    if ref.startswith("#"):
        return f"{nsid}{ref}"
    return ref if "#" in ref else f"{ref}#main"


class _Compiler:
    """Turns parsed documents into checks. Every structural problem is a `LexiconError` here, at load time."""

    def __init__(self, docs: Mapping[str, Mapping[str, Any]]) -> None:
        self.docs = docs
        self.cells: dict[str, _Cell] = {}
        self.records: dict[str, _Check] = {}
        self.record_keys: dict[str, str] = {}
        self.methods: dict[str, _Method] = {}

    def run(self) -> None:
        compiled: dict[str, _Check] = {}
        for nsid, doc in self.docs.items():
            for name, schema in doc["defs"].items():
                check = self._compile_def(nsid, name, schema)
                if check is not None:
                    compiled[f"{nsid}#{name}"] = check
        for key, cell in self.cells.items():
            target = compiled.get(key)
            if target is None:  # pragma: no cover - _cell() already refused unknown and non-value targets
                raise LexiconError(f"ref {key!r} does not name a value definition")
            cell.check = target

    # -- definitions ------------------------------------------------------------------------

    def _compile_def(self, nsid: str, name: str, schema: Mapping[str, Any]) -> _Check | None:
        where = f"{nsid}#{name}"
        kind = schema["type"]
        if kind == "record":
            key = schema.get("key", "any")
            if not isinstance(key, str) or not (
                key in {"tid", "any", "nsid"} or (key.startswith("literal:") and _is_record_key(key[8:]))
            ):
                raise LexiconError(f"{where}: bad record key type {key!r}")
            body = schema.get("record")
            if not isinstance(body, Mapping) or body.get("type") != "object":
                raise LexiconError(f"{where}: a record's 'record' must be an object schema")
            check = self._compile_object(body, nsid, where, frozenset({nsid}))
            self.records[nsid] = check
            self.record_keys[nsid] = key
            return check
        if kind in {"query", "procedure", "subscription"}:
            self.methods[nsid] = self._compile_method(nsid, schema, where)
            return None
        if kind == "permission-set":
            self._check_permission_set(nsid, schema, where)
            return None
        if kind == "token":
            return None
        if kind == "object":
            type_ids = frozenset({where, nsid} if name == "main" else {where})
            return self._compile_object(schema, nsid, where, type_ids)
        return self._compile_field(schema, nsid, where)

    def _compile_method(self, nsid: str, schema: Mapping[str, Any], where: str) -> _Method:
        params: _Check | None = None
        param_types: dict[str, tuple[str, str | None]] = {}
        raw_params = schema.get("parameters")
        if raw_params is not None:
            if not isinstance(raw_params, Mapping) or raw_params.get("type") != "params":
                raise LexiconError(f"{where}.parameters: must be a params schema")
            for pname, pschema in _properties(raw_params, where).items():
                ptype = pschema.get("type")
                if ptype not in _PARAM_TYPES:
                    raise LexiconError(f"{where}.parameters.{pname}: type {ptype!r} is not allowed in params")
                items = pschema.get("items") if ptype == "array" else None
                item_type = items.get("type") if isinstance(items, Mapping) else None
                if ptype == "array" and item_type not in {"boolean", "integer", "string", "unknown"}:
                    raise LexiconError(f"{where}.parameters.{pname}: array params need primitive items")
                param_types[pname] = (ptype, item_type)
            params = self._compile_object(raw_params, nsid, f"{where}.parameters", None)
        body_key = "message" if schema["type"] == "subscription" else "input"
        return _Method(
            kind=schema["type"],
            params=params,
            param_types=param_types,
            input=self._compile_body(schema.get(body_key), nsid, f"{where}.{body_key}"),
            output=self._compile_body(schema.get("output"), nsid, f"{where}.output"),
        )

    def _compile_body(self, body: object, nsid: str, where: str) -> _Check | None:
        if body is None:
            return None
        if not isinstance(body, Mapping):
            raise LexiconError(f"{where}: must be an object")
        # Subscription messages carry only a schema; HTTP bodies must declare their encoding.
        if not where.endswith(".message") and not isinstance(body.get("encoding"), str):
            raise LexiconError(f"{where}: needs an 'encoding'")
        schema = body.get("schema")
        if schema is None:
            return None
        if not isinstance(schema, Mapping) or schema.get("type") not in _BODY_TYPES:
            raise LexiconError(f"{where}.schema: must be an object, ref or union")
        return self._compile_field(schema, nsid, f"{where}.schema")

    def _check_permission_set(self, nsid: str, schema: Mapping[str, Any], where: str) -> None:
        # Permission sets may only grant resources inside their own NSID namespace (specs/permission).
        namespace = nsid.rsplit(".", 1)[0] + "."
        permissions = schema.get("permissions")
        if not isinstance(permissions, list) or not permissions:
            raise LexiconError(f"{where}: a permission set needs a non-empty 'permissions' list")
        for i, perm in enumerate(permissions):
            if not isinstance(perm, Mapping) or perm.get("type") != "permission":
                raise LexiconError(f"{where}.permissions[{i}]: must be a permission object")
            resource = perm.get("resource")
            if resource == "repo":
                names = perm.get("collection")
            elif resource == "rpc":
                names = perm.get("lxm")
            else:
                continue  # unknown resources inside a set are ignored by authorization servers
            if not isinstance(names, list) or not names:
                raise LexiconError(f"{where}.permissions[{i}]: needs a non-empty NSID list")
            for n in names:
                if not isinstance(n, str) or not _is_nsid(n) or not n.startswith(namespace):
                    raise LexiconError(f"{where}.permissions[{i}]: {n!r} is outside namespace {namespace}*")

    # -- fields ---------------------------------------------------------------------------

    def _compile_field(self, schema: object, nsid: str, where: str) -> _Check:
        if not isinstance(schema, Mapping):
            raise LexiconError(f"{where}: schema must be an object")
        kind = schema.get("type")
        if kind not in _FIELD_TYPES:
            raise LexiconError(f"{where}: unsupported field type {kind!r}")
        if kind == "object":
            return self._compile_object(schema, nsid, where, None)
        if kind == "string":
            return _compile_string(schema, where)
        if kind == "integer":
            return _compile_integer(schema, where)
        if kind == "boolean":
            return _compile_boolean(schema)
        if kind == "array":
            return self._compile_array(schema, nsid, where)
        if kind == "ref":
            ref = schema.get("ref")
            if not isinstance(ref, str):
                raise LexiconError(f"{where}: ref needs a 'ref' string")
            return self._compile_ref(ref, nsid, where)
        if kind == "union":
            return self._compile_union(schema, nsid, where)
        if kind == "blob":
            return _compile_blob(schema, where)
        if kind == "bytes":
            return _compile_bytes(schema)
        if kind == "cid-link":
            return _check_cid_link
        return _check_unknown

    def _cell(self, key: str, where: str) -> _Cell:
        cell = self.cells.get(key)
        if cell is not None:
            return cell
        target_nsid, _, name = key.partition("#")
        doc = self.docs.get(target_nsid)
        target = doc["defs"].get(name) if doc is not None else None
        if target is None:
            raise LexiconError(f"{where}: ref {key!r} points at nothing")
        if target["type"] in _PRIMARY_TYPES - {"record"} or target["type"] == "token":
            raise LexiconError(f"{where}: ref {key!r} is a {target['type']}, not a value")
        cell = self.cells[key] = _Cell(key)
        return cell

    def _compile_ref(self, ref: str, nsid: str, where: str) -> _Check:
        cell = self._cell(_ref_key(ref, nsid), where)

        def check(value: object) -> None:
            cell.check(value)

        return check

    def _compile_union(self, schema: Mapping[str, Any], nsid: str, where: str) -> _Check:
        refs = schema.get("refs")
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise LexiconError(f"{where}: union needs a 'refs' list of strings")
        closed = bool(schema.get("closed", False))
        members: dict[str, _Cell] = {}
        for r in refs:
            key = _ref_key(r, nsid)
            members[key] = self._cell(key, where)
        names = ", ".join(k.removesuffix("#main") for k in members)

        def check(value: object) -> None:
            if not _is_mapping(value):
                raise _Invalid("must be an object")
            t = value.get("$type")
            if not isinstance(t, str):
                raise _Invalid("required field missing", "$type")
            cell = members.get(t if "#" in t else f"{t}#main")
            if cell is None:
                if closed:
                    raise _Invalid(f"must be one of: {names}", "$type")
                return
            cell.check(value)

        return check

    def _compile_array(self, schema: Mapping[str, Any], nsid: str, where: str) -> _Check:
        if "items" not in schema:
            raise LexiconError(f"{where}: array needs 'items'")
        item = self._compile_field(schema["items"], nsid, f"{where}[]")
        max_len = _opt_int(schema, "maxLength", where)
        min_len = _opt_int(schema, "minLength", where)

        def check(value: object) -> None:
            if not isinstance(value, list | tuple):
                raise _Invalid("must be an array")
            n = len(value)
            if max_len is not None and n > max_len:
                raise _Invalid(f"must have at most {max_len} items")
            if min_len is not None and n < min_len:
                raise _Invalid(f"must have at least {min_len} items")
            for i, x in enumerate(value):
                try:
                    item(x)
                except _Invalid as e:
                    e.rpath.append(i)
                    raise

        return check

    def _compile_object(
        self, schema: Mapping[str, Any], nsid: str, where: str, type_ids: frozenset[str] | None
    ) -> _Check:
        props_schema = _properties(schema, where)
        required = _str_list(schema, "required", where)
        nullable = _str_list(schema, "nullable", where)
        for name in (*required, *nullable):
            if name not in props_schema:
                raise LexiconError(f"{where}: {name!r} is required or nullable but not a property")
        props: list[tuple[str, _Check, bool, bool]] = []
        for name, sub in props_schema.items():
            sub_where = f"{where}.{name}"
            special = _STRING_OR_OBJECT.get(sub_where)
            if special is not None:
                check = self._compile_string_or_object(special, nsid, sub_where)
            else:
                check = self._compile_field(sub, nsid, sub_where)
            props.append((name, check, name in required, name in nullable))
        fields = tuple(props)
        expected = f"must be '{min(type_ids, key=len)}'" if type_ids else ""

        def check_object(value: object) -> None:
            if not _is_mapping(value):
                raise _Invalid("must be an object")
            get = value.get
            if type_ids is not None:
                t = get("$type", None)
                if t is not None and (not isinstance(t, str) or t not in type_ids):
                    raise _Invalid(expected, "$type")
            for name, check, is_required, is_nullable in fields:
                v = get(name, _MISSING)
                if v is _MISSING:
                    if is_required:
                        raise _Invalid("required field missing", name)
                    continue
                if v is None:
                    if is_nullable:
                        continue
                    raise _Invalid("must not be null", name)
                try:
                    check(v)
                except _Invalid as e:
                    e.rpath.append(name)
                    raise

        return check_object

    def _compile_string_or_object(self, special: tuple[str, str, str], nsid: str, where: str) -> _Check:
        fmt, ref, message = special
        string_check = _compile_string({"type": "string", "format": fmt}, where)
        object_check = self._compile_ref(ref, nsid, where)

        def check(value: object) -> None:
            if isinstance(value, str):
                try:
                    string_check(value)
                except _Invalid:
                    raise _Invalid(message) from None
            elif _is_mapping(value):
                object_check(value)
            else:
                raise _Invalid(message)

        return check


def _properties(schema: Mapping[str, Any], where: str) -> Mapping[str, Mapping[str, Any]]:
    props = schema.get("properties", {})
    if not isinstance(props, Mapping) or not all(
        isinstance(k, str) and isinstance(v, Mapping) for k, v in props.items()
    ):
        raise LexiconError(f"{where}: 'properties' must map names to schemas")
    return props


def _str_list(schema: Mapping[str, Any], key: str, where: str) -> frozenset[str]:
    value = schema.get(key, [])
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise LexiconError(f"{where}: {key!r} must be a list of strings")
    return frozenset(value)


def _opt_int(schema: Mapping[str, Any], key: str, where: str) -> int | None:
    value = schema.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise LexiconError(f"{where}: {key!r} must be an integer")
    return value


def _compile_string(schema: Mapping[str, Any], where: str) -> _Check:
    max_len = _opt_int(schema, "maxLength", where)
    min_len = _opt_int(schema, "minLength", where)
    max_g = _opt_int(schema, "maxGraphemes", where)
    min_g = _opt_int(schema, "minGraphemes", where)
    const = schema.get("const")
    enum_list = schema.get("enum")
    enum = frozenset(enum_list) if isinstance(enum_list, list) else None
    enum_msg = "must be one of: " + ", ".join(sorted(enum)) if enum is not None else ""
    fmt_name = schema.get("format")
    fmt: tuple[Callable[[str], bool], str] | None = None
    if fmt_name is not None:
        fmt = _FORMATS.get(fmt_name)
        if fmt is None:
            raise LexiconError(f"{where}: unknown string format {fmt_name!r}")
    has_bytes = max_len is not None or min_len is not None
    has_graphemes = max_g is not None or min_g is not None

    def check(value: object) -> None:
        if not isinstance(value, str):
            raise _Invalid("must be a string")
        if const is not None and value != const:
            raise _Invalid(f"must be {const!r}")
        if enum is not None and value not in enum:
            raise _Invalid(enum_msg)
        # Lengths are UTF-8 bytes (specs/lexicon); the message says "characters" when they agree.
        n = _utf8_len(value)
        if has_bytes:
            unit = "characters" if n == len(value) else "bytes (UTF-8)"
            if max_len is not None and n > max_len:
                raise _Invalid(f"must be at most {max_len} {unit}")
            if min_len is not None and n < min_len:
                raise _Invalid(f"must be at least {min_len} {unit}")
        if has_graphemes:
            g = _grapheme_len(value)
            if max_g is not None and g > max_g:
                raise _Invalid(f"must be at most {max_g} characters")
            if min_g is not None and g < min_g:
                raise _Invalid(f"must be at least {min_g} characters")
        if fmt is not None and not fmt[0](value):
            raise _Invalid(fmt[1])

    return check


def _compile_integer(schema: Mapping[str, Any], where: str) -> _Check:
    minimum = _opt_int(schema, "minimum", where)
    maximum = _opt_int(schema, "maximum", where)
    const = schema.get("const")
    enum_list = schema.get("enum")
    enum = frozenset(enum_list) if isinstance(enum_list, list) else None

    def check(value: object) -> None:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Invalid("must be an integer")
        if not -(2**63) <= value < 2**63:
            raise _Invalid("must fit in 64 bits")
        if minimum is not None and value < minimum:
            raise _Invalid(f"must be at least {minimum}")
        if maximum is not None and value > maximum:
            raise _Invalid(f"must be at most {maximum}")
        if const is not None and value != const:
            raise _Invalid(f"must be {const}")
        if enum is not None and value not in enum:
            raise _Invalid("must be one of: " + ", ".join(str(x) for x in sorted(enum)))

    return check


def _compile_boolean(schema: Mapping[str, Any]) -> _Check:
    const = schema.get("const")

    def check(value: object) -> None:
        if not isinstance(value, bool):
            raise _Invalid("must be a boolean")
        if const is not None and value is not const:
            raise _Invalid(f"must be {str(const).lower()}")

    return check


def _compile_blob(schema: Mapping[str, Any], where: str) -> _Check:
    accept_list = schema.get("accept")
    if accept_list is not None and (
        not isinstance(accept_list, list) or not all(isinstance(a, str) for a in accept_list)
    ):
        raise LexiconError(f"{where}: 'accept' must be a list of MIME patterns")
    accept = tuple(a.lower() for a in accept_list) if accept_list else None
    accept_msg = "must be one of: " + ", ".join(accept) if accept else ""
    max_size = _opt_int(schema, "maxSize", where)

    def check(value: object) -> None:
        if not _is_mapping(value):
            raise _Invalid("must be a blob")
        get = value.get
        size: object = None
        if get("$type") == "blob":
            ref = get("ref")
            link = ref.get("$link") if _is_mapping(ref) else None
            if not isinstance(link, str) or not _is_cid(link):
                raise _Invalid("must be a CID link", "ref")
            size = get("size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _Invalid("must be a non-negative integer", "size")
        elif "$type" not in value and "cid" in value:
            # Legacy blob shape from before the data model settled: {cid, mimeType}, no size.
            cid = get("cid")
            if not isinstance(cid, str) or not _is_cid(cid):
                raise _Invalid("must be a valid CID", "cid")
        else:
            raise _Invalid("must be a blob")
        mime = get("mimeType")
        if not isinstance(mime, str) or _MIME_RE.fullmatch(mime.split(";", 1)[0].strip()) is None:
            raise _Invalid("must be a MIME type", "mimeType")
        if accept is not None and not _mime_accepted(mime, accept):
            raise _Invalid(accept_msg, "mimeType")
        if max_size is not None and isinstance(size, int) and size > max_size:
            raise _Invalid(f"must be at most {max_size} bytes", "size")

    return check


def _compile_bytes(schema: Mapping[str, Any]) -> _Check:
    max_len = _opt_int(schema, "maxLength", "bytes")
    min_len = _opt_int(schema, "minLength", "bytes")

    def check(value: object) -> None:
        data = value.get("$bytes") if _is_mapping(value) else None
        if not isinstance(data, str) or _BASE64_RE.fullmatch(data) is None:
            raise _Invalid("must be bytes ({'$bytes': base64})")
        try:
            raw = base64.b64decode(data.rstrip("=") + "=" * (-len(data.rstrip("=")) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise _Invalid("must be bytes ({'$bytes': base64})") from None
        if max_len is not None and len(raw) > max_len:
            raise _Invalid(f"must be at most {max_len} bytes")
        if min_len is not None and len(raw) < min_len:
            raise _Invalid(f"must be at least {min_len} bytes")

    return check


def _check_cid_link(value: object) -> None:
    link = value.get("$link") if _is_mapping(value) else None
    if not isinstance(link, str) or not _is_cid(link):
        raise _Invalid("must be a CID link ({'$link': cid})")


def _check_unknown(value: object) -> None:
    # The data model only allows objects in unknown fields; their contents are the writer's business.
    if not _is_mapping(value):
        raise _Invalid("must be an object")


# --------------------------------------------------------------------------------------------
# Loading


def _check_document(doc: object, origin: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise LexiconError(f"{origin}: a lexicon document must be a JSON object")
    if doc.get("lexicon") != 1:
        raise LexiconError(f"{origin}: 'lexicon' must be 1")
    nsid = doc.get("id")
    if not isinstance(nsid, str) or not _is_nsid(nsid):
        raise LexiconError(f"{origin}: 'id' must be a valid NSID")
    defs = doc.get("defs")
    if not isinstance(defs, Mapping) or not defs:
        raise LexiconError(f"{origin}: 'defs' must be a non-empty object")
    for name, schema in defs.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_]*", name):
            raise LexiconError(f"{origin}: bad def name {name!r}")
        if not isinstance(schema, Mapping) or not isinstance(schema.get("type"), str):
            raise LexiconError(f"{origin}: def {name!r} needs a 'type'")
        if schema["type"] in _PRIMARY_TYPES and name != "main":
            raise LexiconError(f"{origin}: a {schema['type']} may only be the 'main' def")
    return doc


class LexiconRegistry:
    """A set of lexicon documents, compiled once.

    Instances are immutable after construction and safe to share between threads and tasks.
    """

    def __init__(self, documents: Iterable[Mapping[str, Any]]) -> None:
        docs: dict[str, Mapping[str, Any]] = {}
        for doc in documents:
            origin = str(doc.get("id", "<document>")) if isinstance(doc, Mapping) else "<document>"
            checked = _check_document(doc, origin)
            nsid = checked["id"]
            if nsid in docs:
                raise LexiconError(f"{nsid}: defined twice")
            docs[nsid] = checked
        compiler = _Compiler(docs)
        compiler.run()
        self._docs = docs
        self._records = compiler.records
        self._record_keys = compiler.record_keys
        self._methods = compiler.methods
        self._record_nsids = frozenset(compiler.records)
        self._method_nsids = frozenset(compiler.methods)

    @classmethod
    def from_directory(cls, directory: str | os.PathLike[str]) -> LexiconRegistry:
        """Load every ``*.json`` under `directory`; each file's path must spell its NSID."""
        root = Path(directory)
        if not root.is_dir():
            raise LexiconError(f"{root}: lexicon directory not found")
        documents: list[Mapping[str, Any]] = []
        for path in sorted(root.rglob("*.json")):
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise LexiconError(f"{path}: cannot read lexicon: {e}") from e
            checked = _check_document(doc, str(path))
            expected = ".".join(path.relative_to(root).with_suffix("").parts)
            if checked["id"] != expected:
                raise LexiconError(f"{path}: id {checked['id']!r} does not match its path ({expected!r})")
            documents.append(checked)
        return cls(documents)

    @property
    def nsids(self) -> frozenset[str]:
        return frozenset(self._docs)

    def known_record_nsids(self) -> frozenset[str]:
        return self._record_nsids

    def known_method_nsids(self) -> frozenset[str]:
        return self._method_nsids

    def document(self, nsid: str) -> dict[str, Any]:
        """A copy of the raw document (e.g. to publish it as a com.atproto.lexicon.schema record)."""
        doc = self._docs.get(nsid)
        if doc is None:
            raise LexiconError(f"{nsid}: no such lexicon")
        return copy.deepcopy(dict(doc))

    def record_key(self, nsid: str) -> str:
        """The lexicon's record-key type: "tid", "any", "nsid" or "literal:<value>"."""
        key = self._record_keys.get(nsid)
        if key is None:
            raise self._not_a(nsid, "record")
        return key

    def validate_record(self, nsid: str, record: Mapping[str, Any]) -> None:
        """Raise `RecordValidationError` unless `record` satisfies the record lexicon `nsid`.

        Fields the lexicon does not declare are allowed, because lexicons evolve by adding
        optional fields and older readers must keep accepting newer records.
        """
        check = self._records.get(nsid)
        if check is None:
            raise self._not_a(nsid, "record")
        _run(nsid, check, record)

    def validate_xrpc_params(self, nsid: str, params: Mapping[str, Any]) -> None:
        """Check already-typed parameters (ints as int, booleans as bool) of method `nsid`."""
        method = self._method(nsid)
        if method.params is not None:
            _run(nsid, method.params, params)

    def parse_xrpc_params(self, nsid: str, query: Mapping[str, Any]) -> dict[str, Any]:
        """Turn query-string values (str, or lists of str) into typed parameters, then check them.

        Pass every value of repeated keys (e.g. litestar's ``request.query_params.dict()``), or
        array parameters keep only their first value. Parameters the method does not declare are
        dropped: clients may send them, and handlers should only see what the lexicon describes.
        """
        method = self._method(nsid)
        out: dict[str, Any] = {}
        for name, (ptype, item_type) in method.param_types.items():
            if name not in query:
                continue
            try:
                out[name] = _coerce_param(ptype, item_type, query[name])
            except _Invalid as e:
                e.rpath.append(name)
                raise RecordValidationError(nsid, e.path(), e.message) from None
        if method.params is not None:
            _run(nsid, method.params, out)
        return out

    def validate_xrpc_input(self, nsid: str, body: Any) -> None:
        """Check a method's input: a procedure's JSON body, or a query's (typed) parameters.

        Raw-bytes inputs (``"encoding": "*/*"``) have no schema and pass.
        """
        method = self._method(nsid)
        if method.kind == "query":
            self.validate_xrpc_params(nsid, body)
        elif method.input is not None:
            _run(nsid, method.input, body)

    def validate_xrpc_output(self, nsid: str, body: Any) -> None:
        """Check a method's JSON output, so a hold never answers with a shape clients refuse."""
        method = self._method(nsid)
        if method.output is not None:
            _run(nsid, method.output, body)

    def _method(self, nsid: str) -> _Method:
        method = self._methods.get(nsid)
        if method is None:
            raise self._not_a(nsid, "query or procedure")
        return method

    def _not_a(self, nsid: str, what: str) -> LexiconError:
        if nsid in self._docs:
            return LexiconError(f"{nsid}: not a {what} lexicon")
        return LexiconError(f"{nsid}: no such lexicon")


def _coerce_param(ptype: str, item_type: str | None, raw: object) -> Any:
    if ptype == "array":
        values = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list | tuple) else [raw]
        items: list[Any] = []
        for i, v in enumerate(values):
            try:
                items.append(_coerce_param(item_type or "string", None, v))
            except _Invalid as e:
                e.rpath.append(i)
                raise
        return items
    if isinstance(raw, list | tuple):
        if len(raw) != 1:
            raise _Invalid("must be a single value")
        raw = raw[0]
    if not isinstance(raw, str):
        raise _Invalid("must be a string value")
    if ptype == "integer":
        if re.fullmatch(r"-?[0-9]{1,19}", raw) is None:
            raise _Invalid("must be an integer")
        return int(raw)
    if ptype == "boolean":
        if raw not in {"true", "false"}:
            raise _Invalid("must be true or false")
        return raw == "true"
    return raw


def _run(nsid: str, check: _Check, value: Any) -> None:
    try:
        check(value)
    except _Invalid as e:
        raise RecordValidationError(nsid, e.path(), e.message) from None
    except RecursionError:
        raise RecordValidationError(nsid, "", "nested too deeply") from None


@functools.lru_cache(maxsize=8)
def _load_cached(directory: Path) -> LexiconRegistry:
    return LexiconRegistry.from_directory(directory)


def load_lexicons(directory: str | os.PathLike[str] | None = None) -> LexiconRegistry:
    """The compiled registry for `directory` (default: the repository's ``lexicons/``), cached per directory."""
    return _load_cached(Path(directory).resolve() if directory is not None else DEFAULT_LEXICON_DIR)


def validate_record(nsid: str, record: Mapping[str, Any]) -> None:
    """`LexiconRegistry.validate_record` on the default lexicons."""
    load_lexicons().validate_record(nsid, record)


def validate_xrpc_params(nsid: str, params: Mapping[str, Any]) -> None:
    """`LexiconRegistry.validate_xrpc_params` on the default lexicons."""
    load_lexicons().validate_xrpc_params(nsid, params)


def parse_xrpc_params(nsid: str, query: Mapping[str, Any]) -> dict[str, Any]:
    """`LexiconRegistry.parse_xrpc_params` on the default lexicons."""
    return load_lexicons().parse_xrpc_params(nsid, query)


def validate_xrpc_input(nsid: str, body: Any) -> None:
    """`LexiconRegistry.validate_xrpc_input` on the default lexicons."""
    load_lexicons().validate_xrpc_input(nsid, body)


def validate_xrpc_output(nsid: str, body: Any) -> None:
    """`LexiconRegistry.validate_xrpc_output` on the default lexicons."""
    load_lexicons().validate_xrpc_output(nsid, body)


def known_record_nsids() -> frozenset[str]:
    """NSIDs of every record type in the default lexicons."""
    return load_lexicons().known_record_nsids()
