#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/fuzz.c) from tests/contract/fixtures into
OUT/<target>/, one file per seed named by the SHA-1 of its bytes (as libFuzzer names what it keeps),
so a seed and the same input found again are one file. Usage: seeds.py FIXTURES_DIR OUT_DIR"""
import hashlib
import json
import os
import sys

TOPICS = {"inventory.commands": "command", "orders.commands": "command",
          "inventory.events": "event", "orders.results": "result"}


def main():
    fixtures, out = sys.argv[1], sys.argv[2]
    seeds = {t: set() for t in ("command", "event", "result", "order_http", "headers", "config", "chaos")}
    for name in ("good.jsonl", "bad.jsonl"):
        for line in open(os.path.join(fixtures, name), encoding="utf-8"):
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict) or rec.get("topic") not in TOPICS:
                continue
            v = rec.get("value")
            raw = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
            seeds[TOPICS[rec["topic"]]].add(raw.encode())
            if isinstance(v, dict) and v.get("type") == "PlaceOrder":  # the body a client POSTs
                body = {k: v[k] for k in ("customer_id", "items") if k in v}
                b = json.dumps(body, separators=(",", ":")).encode()
                seeds["order_http"].add(b"\x07application/json\nk-1\n5000\n" + b)
                seeds["order_http"].add(b"\x01application/json; charset=utf-8\n\n\n" + b)
                seeds["order_http"].add(b"\x05text/plain\n\n0\n" + b)
    # The headers the services write and read (vx_kafka_dead_letter, reqreply.c, vxadmin redrive).
    seeds["headers"] |= {
        b"correlation-id=2b9e2a52-3a39-4b8e-9d0c-1f6f8d1e0a11\nidempotent-replayed=true",
        b"dlq-reason=not_json\ndlq-error=not JSON: unexpected end of input\ndlq-source-topic=inventory.commands\n"
        b"dlq-source-partition=0\ndlq-source-offset=42\ndlq-service=inventory-svc\nredrive-count=1",
        b"dlq-source-topic=orders.commands\nredrive-count=-3",
        b"chaos-delay-ms=250\ncorrelation-id",
    }
    # Settings as the README documents them, and KAFKA_* pass-through variables.
    seeds["config"] |= {b"KAFKA_PRODUCER_LINGER_MS=5\n5000", b"KAFKA_BOOTSTRAP_SERVERS=x\n127.0.0.1:8080",
                        b"KAFKA_CONSUMER_FETCH_WAIT_MAX_MS=10\n0.5", b"KAFKA_\n-1", b"PATH=/bin\n[::1]:65536"}
    seeds["chaos"] |= {b"before_commit@3,mid_batch%1", b"after_commit_before_publish~200",
                       b'{"crash_points":"before_commit@2","gremlin":{"delay_ms":100,"every":3,"fraction":0.5}}',
                       b'{"gremlin":{"delay_ms":0}}', b"fuzz-token"}
    for target, items in seeds.items():
        d = os.path.join(out, target)
        os.makedirs(d, exist_ok=True)
        for data in items:
            with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
