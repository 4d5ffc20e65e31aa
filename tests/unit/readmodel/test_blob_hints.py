"""Blob hints (`keys.blob_hints`): what a manifest's apply remembers and how a value is read."""

from __future__ import annotations

import json
from typing import Any

from atcr.readmodel.apply import parse_blob_hint, queue_blob_hints

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


class Pipe:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def hset(self, key: str, mapping: dict[str, str]) -> None:
        self.calls.append(("hset", mapping))

    def expire(self, key: str, seconds: int) -> None:
        self.calls.append(("expire", seconds))


def payload(record: Any, hold: Any = "did:web:hold.example") -> str:
    return json.dumps({"hold_did": hold, "record": record})


def test_config_and_layers_with_a_valid_digest_and_size_are_remembered_on_the_manifest_hold() -> None:
    pipe = Pipe()
    record = {"config": {"digest": D1, "size": 10},
              "layers": [{"digest": D2, "size": 0}, {"digest": "nope", "size": 1}, {"digest": D1, "size": -1},
                         {"digest": D2, "size": True}, "junk"]}
    queue_blob_hints(pipe, "did:plc:x", payload(record), 60)
    (op, mapping), expire = pipe.calls
    assert op == "hset" and expire == ("expire", 60)
    assert {d: v.rsplit("|", 1)[0] for d, v in mapping.items()} == {D1: "did:web:hold.example|10",
                                                                   D2: "did:web:hold.example|0"}


def test_nothing_is_remembered_without_a_hold_or_blobs() -> None:
    for p in (payload({"layers": [{"digest": D1, "size": 1}]}, hold=None), payload({"layers": "x"}),
              payload("not a record")):
        pipe = Pipe()
        queue_blob_hints(pipe, "did:plc:x", p, 60)
        assert pipe.calls == []


def test_values_parse_or_are_refused() -> None:
    assert parse_blob_hint(b"did:web:h.example%3A8080|12|1700000000000") == ("did:web:h.example%3A8080", 12, 1700000000000)
    for bad in (None, b"", b"did:web:h|12", b"|12|1", b"did:web:h|x|1", b"did:web:h|1|", "did:web:h|-1|5"):
        assert parse_blob_hint(bad) is None, bad
