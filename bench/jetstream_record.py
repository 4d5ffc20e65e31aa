"""A recording of Jetstream v1 traffic for the consumer benchmarks (deterministic, no network).

Reproduce:  .venv/bin/python bench/jetstream_record.py --events 100000 --out /tmp/js.jsonl

What a `wantedCollections=io.atcr.*` subscription delivers, as JSON lines exactly as the wire
carries them: commits of every collection the read model keeps (tags and manifests most,
then stars, profiles, repo pages, hold stats and crew), deletes, plus the identity and
account events that bypass the collection filter, and 5 % replays (at-least-once delivery
after a rewind). 2,000 users, 200 repositories' worth of names, 4 holds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TID = "234567abcdefghijklmnopqrstuvwxyz"
OCI = "application/vnd.oci.image.manifest.v1+json"


def tid(n: int) -> str:
    value = 1_700_000_000_000_000 * 1024 + n
    out = ""
    for _ in range(13):
        out = _TID[value & 31] + out
        value >>= 5
    return out


def did_of(i: int) -> str:
    return "did:plc:" + hashlib.sha256(f"user{i}".encode()).hexdigest()[:24]


def events(count: int, *, users: int = 2000, seed: int = 1, start_us: int = 1_760_000_000_000_000) -> Iterator[str]:
    rng = random.Random(seed)
    holds = [f"did:web:hold{i}.example.com" for i in range(4)]
    recent: list[str] = []
    t = start_us
    for n in range(count):
        t += rng.randrange(1, 200)
        if recent and rng.random() < 0.05:
            yield recent[rng.randrange(len(recent))]  # a replay: same event, same time_us
            continue
        did = did_of(rng.randrange(users))
        repo = f"app{rng.randrange(100)}"
        roll = rng.random()
        rev = tid(n)
        commit: dict[str, Any] | None = None
        event: dict[str, Any]
        if roll < 0.30:
            digest = "sha256:" + hashlib.sha256(f"m{rng.randrange(count)}".encode()).hexdigest()
            tag = f"v{rng.randrange(20)}"
            commit = {
                "collection": "io.atcr.tag",
                "rkey": hashlib.sha256(f"{repo}:{tag}".encode()).hexdigest()[:26],
                "record": {
                    "$type": "io.atcr.tag",
                    "repository": repo,
                    "tag": tag,
                    "manifest": f"at://{did}/io.atcr.manifest/{digest[7:]}",
                    "createdAt": "2026-01-01T00:00:00Z",
                },
            }
        elif roll < 0.52:
            digest = "sha256:" + hashlib.sha256(f"m{n}".encode()).hexdigest()
            commit = {
                "collection": "io.atcr.manifest",
                "rkey": digest[7:],
                "record": {
                    "$type": "io.atcr.manifest",
                    "repository": repo,
                    "digest": digest,
                    "mediaType": OCI,
                    "schemaVersion": 2,
                    "holdDid": rng.choice(holds),
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 1234, "digest": digest},
                    "layers": [
                        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 1 << 20, "digest": digest}
                        for _ in range(rng.randrange(1, 6))
                    ],
                    "manifestBlob": {
                        "$type": "blob",
                        "ref": {"$link": "bafkreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"},
                        "mimeType": OCI,
                        "size": 900,
                    },
                    "createdAt": "2026-01-01T00:00:00Z",
                },
            }
        elif roll < 0.60:
            owner = did_of(rng.randrange(users))
            commit = {
                "collection": "io.atcr.sailor.star",
                "rkey": tid(rng.randrange(count)),
                "record": {
                    "$type": "io.atcr.sailor.star",
                    "subject": f"at://{owner}/io.atcr.repo.page/{repo}",
                    "createdAt": "2026-01-01T00:00:00Z",
                },
            }
        elif roll < 0.64:
            commit = {
                "collection": "io.atcr.sailor.profile",
                "rkey": "self",
                "record": {
                    "$type": "io.atcr.sailor.profile",
                    "defaultHold": rng.choice(holds),
                    "createdAt": "2026-01-01T00:00:00Z",
                },
            }
        elif roll < 0.67:
            commit = {
                "collection": "io.atcr.repo.page",
                "rkey": repo,
                "record": {
                    "$type": "io.atcr.repo.page",
                    "repository": repo,
                    "description": "A service. " * 20,
                    "createdAt": "2026-01-01T00:00:00Z",
                },
            }
        elif roll < 0.70:
            hold = rng.choice(holds)
            owner = did_of(rng.randrange(users))
            did = hold
            commit = {
                "collection": "io.atcr.hold.stats",
                "rkey": hashlib.sha256(f"{owner}/{repo}".encode()).hexdigest()[:26],
                "record": {
                    "$type": "io.atcr.hold.stats",
                    "ownerDid": owner,
                    "repository": repo,
                    "pullCount": n,
                    "pushCount": 1,
                    "updatedAt": "2026-01-01T00:00:00Z",
                },
            }
        elif roll < 0.75:
            commit = {
                "collection": "io.atcr.tag",
                "rkey": hashlib.sha256(f"{repo}:v{rng.randrange(20)}".encode()).hexdigest()[:26],
            }
        if commit is not None:
            op = "delete" if "record" not in commit else rng.choice(("create", "create", "update"))
            body = {"rev": rev, "operation": op, **commit}
            if op != "delete":
                body["cid"] = "bafyrei" + hashlib.sha256(rev.encode()).hexdigest()[:52]
            event = {"did": did, "time_us": t, "kind": "commit", "commit": body}
        elif roll < 0.90:
            event = {
                "did": did,
                "time_us": t,
                "kind": "identity",
                "identity": {"did": did, "seq": n, "time": "2026-01-01T00:00:00Z", "handle": f"u{n}.bsky.social"},
            }
        else:
            active = rng.random() < 0.9
            acct: dict[str, Any] = {"active": active, "did": did, "seq": n, "time": "2026-01-01T00:00:00Z"}
            if not active:
                acct["status"] = "deactivated"
                did = acct["did"] = "did:plc:" + hashlib.sha256(f"stranger{n}".encode()).hexdigest()[:24]
            event = {"did": did, "time_us": t, "kind": "account", "account": acct}
        text = json.dumps(event, separators=(",", ":"))
        recent.append(text)
        if len(recent) > 500:
            recent.pop(0)
        yield text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--out", type=Path, required=True)
    ns = ap.parse_args()
    with ns.out.open("w") as fh:
        for line in events(ns.events):
            fh.write(line + "\n")
    print(f"wrote {ns.events} events to {ns.out}")


if __name__ == "__main__":
    main()
