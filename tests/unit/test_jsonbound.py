"""JSON nested too deeply is refused as malformed input, never a RecursionError."""

from __future__ import annotations

import json

import pytest

from atcr import jsonbound
from atcr.oci import OCI_MANIFEST, InvalidManifest, parse_manifest
from jetstream.errors import MalformedEvent
from jetstream.events import parse_jetstream

pytestmark = pytest.mark.unit

DEEP = b"[" * 5000 + b"]" * 5000


def test_depth_ignores_brackets_inside_strings() -> None:
    assert jsonbound.depth(b'{"a": [1, {"b": "[[[{{{\\"]]"}]}') == 3
    assert jsonbound.depth(b'"just a string"') == 0
    assert jsonbound.depth(DEEP) == 5000


def test_deep_documents_are_a_value_error() -> None:
    with pytest.raises(jsonbound.JsonTooDeep):
        jsonbound.loads(DEEP)
    with pytest.raises(ValueError, match="deeper than 64"):
        jsonbound.loads(b'{"a":' * 65 + b"1" + b"}" * 65)
    assert jsonbound.loads(b'{"a":' * 64 + b"1" + b"}" * 64) is not None
    assert jsonbound.loads('{"x": ["[", "{"]}') == {"x": ["[", "{"]}


@pytest.mark.parametrize("body", [DEEP, b'{"schemaVersion": 2, "config": ' + b"[" * 1000 + b"]" * 1000 + b"}"])
def test_a_deep_manifest_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidManifest, match="not acceptable JSON"):
        parse_manifest(body, OCI_MANIFEST)


def test_a_deep_jetstream_event_is_malformed() -> None:
    event = {"did": "did:plc:abc", "time_us": 1, "kind": "commit"}
    raw = json.dumps(event)[:-1] + ', "commit": ' + "[" * 2000 + "]" * 2000 + "}"
    with pytest.raises(MalformedEvent):
        parse_jetstream(raw)
