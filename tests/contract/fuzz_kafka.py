#!/usr/bin/env python3
"""The Kafka contract both ways: commands generated from schemas/ against the C codec of the running services.

Run by tests/contract/live.sh (make contract-live) with the venv python, against a stack whose
inventory-svc and order-svc read the command topics. For each command type of inventory.commands
(ReserveStock, ReleaseStock, Restock) and orders.commands (PlaceOrder, CancelOrder) it generates
VX_FUZZ_KAFKA_EXAMPLES valid commands from the type's JSON Schema (hypothesis-jsonschema, seed
VX_FUZZ_SEED) and as many mutations of them (a field dropped, given another JSON type, out of its
limits, NUL inside a string; and raw-text ones: single quotes, raw control characters, ill-formed
UTF-8, NaN, 01, 1e400, trailing bytes, over 65536 bytes, a tombstone...). Each is produced with a
correlation-id header of its own, and the answer is read back: an event on inventory.events /
a result on orders.results (applied, or refused for a business reason), or a dead letter on the
topic's .dlq with dlq-reason and dlq-error.

The verdict the contract expects is computed here, for the exact bytes produced, from the schemas
alone (strict RFC 8259 JSON, JSON Schema 2020-12 with its integers read exactly, the 65536-byte
limit); never from a table of expected answers. A case passes when the two agree: a schema-valid
command is answered and never dead-lettered; an invalid one is dead-lettered with a dlq-reason that
names a rule it breaks (missing_field for required, wrong_type for type, invalid_value for a limit,
pattern or enum, unknown_type, not_json, null_value, too_large) and a dlq-error naming its field.

Stock: valid commands name the run's own products (FZ-K-0 ... FZ-K-7, restocked first) or unknown
ones (FZ-U-...), never another suite's; live.sh also stocks FZ-H-001 ... FZ-H-008 for the HTTP run.
Prints one line per failing case and a summary `fuzz-kafka: N cases (V valid, I invalid), F failed`;
exit status 0 only when nothing failed and every case was answered."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

import jsonschema
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

HERE = Path(__file__).resolve().parent
SCHEMAS = HERE.parent.parent / "schemas"
MAX_BYTES = 65536

SEED = int(os.environ.get("VX_FUZZ_SEED", "19"))
EXAMPLES = int(os.environ.get("VX_FUZZ_KAFKA_EXAMPLES", "25"))
WAIT_S = float(os.environ.get("VX_FUZZ_WAIT_S", "90"))
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{os.environ.get('VX_BROKER_PORT', '9092')}"
T = {k: os.environ.get(k, v) for k, v in {
    "INVENTORY_COMMANDS_TOPIC": "inventory.commands", "INVENTORY_EVENTS_TOPIC": "inventory.events",
    "INVENTORY_DLQ_TOPIC": "inventory.dlq", "ORDERS_COMMANDS_TOPIC": "orders.commands",
    "ORDERS_RESULTS_TOPIC": "orders.results", "ORDERS_DLQ_TOPIC": "orders.dlq"}.items()}
TOPICS = {  # command topic -> (its message types, the answer topic, the dead-letter topic)
    T["INVENTORY_COMMANDS_TOPIC"]: (["ReserveStock", "ReleaseStock", "Restock"], T["INVENTORY_EVENTS_TOPIC"],
                                    T["INVENTORY_DLQ_TOPIC"], "inventory"),
    T["ORDERS_COMMANDS_TOPIC"]: (["PlaceOrder", "CancelOrder"], T["ORDERS_RESULTS_TOPIC"], T["ORDERS_DLQ_TOPIC"],
                                 "orders"),
}
OWN_PRODUCTS = [f"FZ-K-{i}" for i in range(8)]
HTTP_PRODUCTS = [f"FZ-H-{i:03d}" for i in range(1, 9)]


# ---- the schemas, with every $ref inlined (hypothesis-jsonschema resolves no other file) ----------

def load_schemas() -> dict[str, dict]:
    out = {}
    for p in SCHEMAS.rglob("*.schema.json"):
        s = json.loads(p.read_text(encoding="utf-8"))
        out[s["$id"]] = s
    return out


def inline(node, base: str, docs: dict[str, dict]):
    if isinstance(node, list):
        return [inline(x, base, docs) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: v for k, v in node.items() if k not in ("examples", "description", "title", "$schema", "$id",
                                                     "x-kafka-topic")}
    if "$ref" in node:
        ref = node.pop("$ref")
        url, _, frag = ref.partition("#")
        target_id = base.rsplit("/", 1)[0] + "/" + url if url else base
        parts = [p for p in target_id.split("/")]
        norm = []
        for p in parts:  # resolve "../"
            if p == "..":
                norm.pop()
            else:
                norm.append(p)
        target_id = "/".join(norm)
        target = docs[target_id]
        for key in filter(None, frag.split("/")):
            target = target[key]
        resolved = inline(target, target_id, docs)
        rest = inline(node, base, docs)
        return {"allOf": [resolved, rest]} if rest else resolved
    return {k: inline(v, base, docs) if k not in ("const", "enum") else v for k, v in node.items()}


def message_schemas() -> dict[str, dict]:
    docs = load_schemas()
    out = {}
    for topic, (types, *_rest, folder) in TOPICS.items():
        for t in types:
            sid = f"https://valerix.dev/schemas/{folder}/{t}.schema.json"
            out[t] = inline(docs[sid], sid, docs)
    return out


# ---- the contract's verdict on a produced value ---------------------------------------------------

def _is_integer(_checker, x) -> bool:  # JSON Schema 2020-12: a number with a zero fractional part
    if isinstance(x, bool):
        return False
    if isinstance(x, int):
        return True
    return isinstance(x, Decimal) and x.is_finite() and x == x.to_integral_value()


def _is_number(_checker, x) -> bool:
    return isinstance(x, (int, Decimal, float)) and not isinstance(x, bool)


Validator = jsonschema.validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number}))

REASON = {"required": "missing_field", "type": "wrong_type", "minLength": "invalid_value",
          "maxLength": "invalid_value", "minimum": "invalid_value", "maximum": "invalid_value",
          "minItems": "invalid_value", "maxItems": "invalid_value", "pattern": "invalid_value",
          "enum": "invalid_value", "const": "invalid_value"}


def path_text(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (("." if out else "") + str(p))
    return out


def reasons_of(err) -> set[tuple[str, str]]:
    """(dlq-reason, field) pairs that name a rule this validation error says is broken."""
    if err.validator in ("anyOf", "oneOf", "allOf") and err.context:
        out = set()
        for sub in err.context:
            out |= reasons_of(sub)
        return out
    if err.validator == "required":
        missing = [k for k in err.validator_value if isinstance(err.instance, dict) and k not in err.instance]
        base = path_text(err.absolute_path)
        return {("missing_field", (base + "." if base else "") + k) for k in missing}
    return {(REASON.get(err.validator, "?" + str(err.validator)), path_text(err.absolute_path))}


class Bad(Exception):
    pass


def _const(name):
    raise Bad(f"{name} is not JSON")


def _members(twice: list):
    """json.loads' object hook with the services' rules (schemas/README.md, "stricter"): \u0000 in a
    member name is not JSON to them; a name given twice is noted in twice (refused after the checks
    of the whole text, as the services do)."""
    def hook(pairs: list) -> dict:
        if any("\u0000" in k for k, _ in pairs):
            raise Bad("a member name with \\u0000")
        if len({k for k, _ in pairs}) != len(pairs):
            twice.append(pairs)
        return dict(pairs)
    return hook


def _lone_surrogate(v) -> bool:
    """Whether a string anywhere in v (names included) holds a lone surrogate escape such as \ud800,
    which json.loads keeps and the services refuse as not JSON."""
    if isinstance(v, str):
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(v, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_lone_surrogate(x) for x in v)
    return False


def verdict(raw: bytes | None, topic: str, schemas: dict[str, dict]) -> set[tuple[str, str]]:
    """The empty set when the contract accepts raw, else every (dlq-reason, field) it allows."""
    types = TOPICS[topic][0]
    if raw is None:
        return {("null_value", "")}
    if len(raw) > MAX_BYTES:
        return {("too_large", "")}
    twice: list = []
    try:
        v = json.loads(raw.decode("utf-8", errors="strict"), parse_float=Decimal, parse_constant=_const,
                       object_pairs_hook=_members(twice))
    except (UnicodeDecodeError, ValueError, Bad):
        return {("not_json", "")}
    if _lone_surrogate(v):
        return {("not_json", "")}
    if twice:
        return {("invalid_value", "")}  # the C codec names the member's path
    if v is None:
        return {("null_value", "")}
    if not isinstance(v, dict):
        return {("wrong_type", "")}  # the C codec names the field (root), its dlq-error the whole message
    if "type" not in v:
        return {("missing_field", "type")}
    if not isinstance(v["type"], str):
        return {("wrong_type", "type")}
    if v["type"] not in types:
        return {("unknown_type", "type")}
    out = set()
    for err in Validator(schemas[v["type"]]).iter_errors(v):
        out |= reasons_of(err)
    return out


# ---- generation ------------------------------------------------------------------------------------

def generate(schema: dict, n: int, seed: int) -> list:
    out = []

    @hseed(seed)
    @settings(max_examples=n, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(from_schema(schema))
    def run(x):
        out.append(x)

    run()
    return out[:n]


def cut(s: str, n: int) -> str:
    return s[:n]


def make_valid(t: str, m: dict, run: str, i: int, rnd: random.Random) -> dict:
    """A generated command made safe to apply: its key and order id unique to this run and case, its
    products the run's own (or unknown ones). The contract's verdict is still computed afterwards."""
    m = copy.deepcopy(m)
    tag = f"{run}-{i}-"
    if isinstance(m.get("idempotency_key"), str):  # room left for a mutation's own suffix (rekey)
        m["idempotency_key"] = cut(tag + m["idempotency_key"], 120)
    if isinstance(m.get("order_id"), str):
        m["order_id"] = cut(tag + m["order_id"], 57)

    def product(p):
        if rnd.random() < 0.75:
            return rnd.choice(OWN_PRODUCTS)
        return "FZ-U-" + hashlib.sha1(p.encode("utf-8", "surrogatepass")).hexdigest()[:12]

    if isinstance(m.get("product_id"), str):
        m["product_id"] = product(m["product_id"])
    for line in m.get("items") or []:
        if isinstance(line, dict) and isinstance(line.get("product_id"), str):
            line["product_id"] = product(line["product_id"])
    return m


def rekey(raw: bytes | None, key, n: int) -> bytes | None:
    """raw with its idempotency key or order id (the valid command's, if a mutation kept it) made its
    own: a command that shares either with a PENDING order is answered only with that order's result."""
    if raw is None or not isinstance(key, str):
        return raw
    old = json.dumps(key).encode()
    return raw.replace(old, json.dumps(f"{key}~{n}").encode(), 1)


def dumps(v) -> bytes:
    return json.dumps(v, separators=(",", ":")).encode("utf-8")


RAW = "\x00RAW\x00"  # a placeholder value replaced by raw JSON text after serialisation


def with_raw(m: dict, setter, text: str) -> bytes:
    m = copy.deepcopy(m)
    setter(m, RAW)
    return dumps(m).replace(json.dumps(RAW).encode(), text.encode())


def mutations(t: str, m: dict, other_type: str, rnd: random.Random) -> list[tuple[str, bytes | None]]:
    """Every mutation of a valid command m (label, bytes); their verdicts are computed, not assumed."""
    out: list[tuple[str, bytes | None]] = []
    fields = [k for k in m if k != "type"]
    strings = [k for k in fields if isinstance(m[k], str)]

    def put(label, v):
        out.append((label, dumps(v)))

    for k in ["type"] + fields:
        v = copy.deepcopy(m)
        del v[k]
        put(f"without {k}", v)
        for bad in [None, 7, 13.5, True, "x", [], {}]:
            v = copy.deepcopy(m)
            v[k] = bad
            put(f"{k} = {bad!r}", v)
    for k in strings:
        for bad, why in [("", "empty"), ("x" * 129, "129 characters"), ("é" * 65, "65 characters"),
                         ("a\u0000b", "a NUL inside"), ("\ud800", "a lone surrogate"), ("\u00e9\u4e2d\U0001f600",
                                                                                           "non-ASCII")]:
            v = copy.deepcopy(m)
            v[k] = bad
            put(f"{k} {why}", v)
    for bad in ["Bogus", other_type, t.lower(), t + "\u0000x"]:
        v = copy.deepcopy(m)
        v["type"] = bad
        put(f"type {bad!r}", v)

    def set_q(v, x):
        if "items" in v and v["items"]:
            v["items"][0]["quantity"] = x
        else:
            v["quantity"] = x

    if "items" in m or "quantity" in m:
        for q in [0, -1, 1000000, 1000001, "2", None]:
            v = copy.deepcopy(m)
            set_q(v, q)
            put(f"quantity {q!r}", v)
        for text in ["13.0", "1.3e1", "1e3", "1000000.0", "1000001.0", "13.5", "1e400", "-1e400", "1e-400",
                     "1.0000000000000001", "-0.0", "0e0", "01", "1.", "-.5", "+1", "NaN", "Infinity"]:
            out.append((f"quantity {text}", with_raw(m, set_q, text)))
    if "items" in m:
        for items, why in [([], "no line"), ([{"product_id": "FZ-K-0", "quantity": 1}] * 101, "101 lines"),
                           (["FZ-K-0"], "a line that is a string"), ([{"quantity": 1}], "a line without product_id")]:
            v = copy.deepcopy(m)
            v["items"] = items
            put(f"items {why}", v)
    base = dumps(m)
    text = base.decode()
    raw_cases = [
        ("single quotes", text.replace('"type"', "'type'", 1).encode()),
        ("trailing bytes", base + b"x"),
        ("two values", base + b" {}"),
        ("truncated", base[:-1]),
        ("a raw control character", text.replace('":"', '":"\x01', 1).encode()),
        ("a raw NUL", text.replace('":"', '":"\x00', 1).encode()),
        ("a raw tab", text.replace('":"', '":"\t', 1).encode()),
        ("ill-formed UTF-8", text.replace('":"', '":"', 1).encode().replace(b'":"', b'":"\xff', 1)),
        ("an overlong UTF-8 form", base.replace(b'":"', b'":"\xc0\xaf', 1)),
        ("an encoded surrogate", base.replace(b'":"', b'":"\xed\xa0\x80', 1)),
        ("a byte order mark", b"\xef\xbb\xbf" + base),
        ("a top-level array", b"[" + base + b"]"),
        ("JSON null", b"null"),
        ("a tombstone", None),
        ("a duplicate type, last wins", base[:-1] + b',"type":"Bogus"}'),
        ("a duplicate type, first bad", b'{"type":"Bogus",' + base[1:]),
        ("whitespace around", b" \n" + base + b"\r\n"),
        ("65536 bytes", None),
        ("65537 bytes", None),
    ]
    for label, raw in raw_cases:
        if label.endswith("bytes") and label[0].isdigit():
            size = int(label.split()[0])
            pad = size - len(base[:-1] + b',"pad":""}')
            raw = base[:-1] + b',"pad":"' + b"x" * pad + b'"}'
        out.append((label, raw))
    rnd.shuffle(out)
    return out


def judge(exp: set[tuple[str, str]], got: tuple | None) -> str | None:
    """None when what the services did with a case (got: ("answered", topic, value) or ("dlq",
    dlq-reason, dlq-error), None for nothing) agrees with the contract's verdict exp; else why not."""
    if got is None:
        return "no answer, no dead letter"
    if not exp and got[0] == "dlq":
        return f"schema-valid, dead-lettered {got[1]}: {got[2]}"
    if exp and got[0] == "answered":
        return f"schema-invalid ({sorted(exp)}), answered on {got[1]}: {got[2]}"
    if exp and not any(r == got[1] and (not f or f in got[2]) for r, f in exp):
        return f"dead-lettered {got[1]} ({got[2]}), the schema says {sorted(exp)}"
    return None


# ---- Kafka ---------------------------------------------------------------------------------------

def delivery_check(errs):
    def cb(err, _msg):
        if err is not None:
            errs.append(str(err))
    return cb


def main() -> int:
    schemas = message_schemas()
    rnd = random.Random(SEED)
    run = f"fz{int(time.time() * 1000) % 10**10:010d}"
    cases = []  # (case id, command topic, label, raw, expected set)

    # the run's own products, and the HTTP run's, stocked first
    for i, p in enumerate(OWN_PRODUCTS + HTTP_PRODUCTS):
        cmd = {"type": "Restock", "idempotency_key": f"{run}-stock-{i}", "product_id": p, "quantity": 1000,
               "name": f"contract fuzzing {p}"}
        cases.append((f"{run}-stock-{i}", T["INVENTORY_COMMANDS_TOPIC"], f"stock {p}", dumps(cmd), set()))
    n = 0
    for topic, (types, *_r) in TOPICS.items():
        other = TOPICS[[x for x in TOPICS if x != topic][0]][0][0]
        for t in types:
            gen = generate(schemas[t], EXAMPLES, SEED + n)
            n += 1
            for j, m in enumerate(gen):
                v = make_valid(t, m, run, len(cases), rnd)
                cases.append((f"{run}-{len(cases)}", topic, f"{t} generated #{j}", dumps(v), None))
                muts = mutations(t, v, other, rnd)
                label, raw = muts[j % len(muts)] if j >= 1 else (None, None)
                for label, raw in (muts if j == 0 else [(label, raw)]):  # all of the first's, one of each other's
                    raw = rekey(rekey(raw, v.get("idempotency_key"), len(cases)), v.get("order_id"), len(cases))
                    cases.append((f"{run}-{len(cases)}", topic, f"{t}: {label}", raw, None))
    cases = [(cid, topic, label, raw, verdict(raw, topic, schemas) if exp is None else exp)
             for cid, topic, label, raw, exp in cases]
    for cid, topic, label, raw, exp in cases:
        if "?" in "".join(r for r, _ in exp):
            print(f"FAIL {label}: the schema broke a rule this checker has no dlq-reason for: {exp}")
            return 1

    watch = sorted({x for _t, (_ty, ans, dlq, _f) in TOPICS.items() for x in (ans, dlq)})
    cons = Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": f"vx-contract-{run}", "enable.auto.commit": False,
                     "auto.offset.reset": "latest"})
    parts = []
    for topic in watch:
        md = cons.list_topics(topic, timeout=10).topics[topic]
        if md.error is not None:
            print(f"FAIL topic {topic}: {md.error}")
            return 1
        for p in md.partitions:
            lo, hi = cons.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            parts.append(TopicPartition(topic, p, hi))
    cons.assign(parts)

    prod = Producer({"bootstrap.servers": BOOTSTRAP, "linger.ms": 5, "message.max.bytes": 2 * MAX_BYTES,
                     "enable.idempotence": False})
    errs: list[str] = []
    stock = [c for c in cases if c[0].startswith(f"{run}-stock-")]
    rest = [c for c in cases if not c[0].startswith(f"{run}-stock-")]
    seen: dict[str, tuple] = {}

    def produce(batch):
        for cid, topic, _label, raw, _exp in batch:
            prod.produce(topic, key=cid.encode(), value=raw, headers=[("correlation-id", cid.encode())],
                         on_delivery=delivery_check(errs))
            prod.poll(0)
        prod.flush(30)

    def collect(want: set[str], deadline: float):
        while want - seen.keys() and time.time() < deadline:
            msg = cons.poll(0.5)
            if msg is None or msg.error():
                continue
            h = {k: (v.decode("utf-8", "replace") if v is not None else None) for k, v in (msg.headers() or [])}
            cid = h.get("correlation-id")
            if cid not in want or cid in seen:
                continue
            if msg.topic().endswith(".dlq") or msg.topic() in (T["INVENTORY_DLQ_TOPIC"], T["ORDERS_DLQ_TOPIC"]):
                seen[cid] = ("dlq", h.get("dlq-reason"), h.get("dlq-error") or "")
            else:
                seen[cid] = ("answered", msg.topic(), (msg.value() or b"")[:200].decode("utf-8", "replace"))

    produce(stock)
    collect({c[0] for c in stock}, time.time() + WAIT_S)
    produce(rest)
    collect({c[0] for c in rest}, time.time() + WAIT_S)
    cons.close()
    if errs:
        print(f"FAIL producing: {len(errs)} deliveries failed, first: {errs[0]}")

    failed = 0
    valid = sum(1 for c in cases if not c[4])
    for cid, topic, label, raw, exp in cases:
        why = judge(exp, seen.get(cid))
        if why is None:
            continue
        shown = repr(raw[:160]) if raw is not None else "(tombstone)"
        failed += 1
        print(f"FAIL {topic} {label} [{cid}]: {why}\n     {shown}")
    print(f"fuzz-kafka: {len(cases)} cases ({valid} valid, {len(cases) - valid} invalid; seed {SEED}, "
          f"{EXAMPLES} generated per type), {failed} failed")
    return 1 if failed or errs or not cases else 0


def selftest() -> int:
    """The verdict this checker compares the services with, on inputs whose answer the contract
    states (schemas/README.md); no broker needed. Proves the comparison can fail."""
    schemas = message_schemas()
    inv = T["INVENTORY_COMMANDS_TOPIC"]
    r = '{"type":"Restock","idempotency_key":"k","product_id":"p","quantity":%s}'
    want = [
        (r % "13", set()), (r % "13.0", set()), (r % "1.3e1", set()), (r % "1e6", set()),
        (r % "13.5", {("wrong_type", "quantity")}), (r % "1e-400", {("wrong_type", "quantity"), ("invalid_value", "quantity")}),
        (r % "1.0000000000000001", {("wrong_type", "quantity")}), (r % '"2"', {("wrong_type", "quantity")}),
        (r % "true", {("wrong_type", "quantity")}), (r % "null", {("wrong_type", "quantity")}),
        (r % "1e400", {("invalid_value", "quantity")}), (r % "0", {("invalid_value", "quantity")}),
        (r % "1000001.0", {("invalid_value", "quantity")}), (r % "NaN", {("not_json", "")}),
        (r % "01", {("not_json", "")}), (r % "1.", {("not_json", "")}),
        (r'{"type":"Restock","idempotency_key":"k\u0000","product_id":"p","quantity":1}',
         {("invalid_value", "idempotency_key")}),
        (r'{"type":"Restock","idempotency_key":"\ud800","product_id":"p","quantity":1}', {("not_json", "")}),
        (r'{"type":"Restock","idempotency_key":"\ud83d\ude00","product_id":"p","quantity":1}', set()),
        (r'{"type":"Restock","idempotency_key":"k","product_id":"p","quantity":1,"x":["\udc00"]}', {("not_json", "")}),
        (r'{"type":"Restock","idempotency_key":"k","product_id":"p","quantity":1,"x":{"":1,"\u0000":2}}',
         {("not_json", "")}),
        ('{"type":"Restock","idempotency_key":"k","product_id":"p","quantity":1,"quantity":2}', {("invalid_value", "")}),
        ('{"type":"Restock","idempotency_key":"k","product_id":"p","quantity":1,"type":"Bogus"}', {("invalid_value", "")}),
        ('{"type":"Restock","idempotency_key":"k","quantity":1}', {("missing_field", "product_id")}),
        ('{"type":"Restock","idempotency_key":"k","product_id":"p","quantity":1,"name":null}', set()),
        ('{"type":"Restock","idempotency_key":"k","product_id":"p","quantity":1,"name":""}',
         {("invalid_value", "name"), ("wrong_type", "name")}),
        ('{"type":"PlaceOrder","idempotency_key":"k"}', {("unknown_type", "type")}),
        ('{"type":null}', {("wrong_type", "type")}), ("[1]", {("wrong_type", "")}), ("null", {("null_value", "")}),
        ("{'type':'Restock'}", {("not_json", "")}),
    ]
    failed = 0
    for text, exp in want:
        got = verdict(text.encode(), inv, schemas)
        if got != exp:
            failed += 1
            print(f"FAIL verdict of {text}: {sorted(got)}, want {sorted(exp)}")
    for raw, exp in [(None, {("null_value", "")}), (b'{"type":"Restock"\xff}', {("not_json", "")}),
                     (b"\xef\xbb\xbf{}", {("not_json", "")}), (b'{"a":"\x01"}', {("not_json", "")}),
                     (b" " * (MAX_BYTES + 1), {("too_large", "")})]:
        if verdict(raw, inv, schemas) != exp:
            failed += 1
            print(f"FAIL verdict of {raw!r:.40}: {sorted(verdict(raw, inv, schemas))}, want {sorted(exp)}")
    q = {("wrong_type", "items[0].quantity")}
    for exp, got, ok in [
        (set(), ("answered", "inventory.events", "{}"), True), (set(), ("dlq", "wrong_type", "quantity"), False),
        (set(), None, False), (q, ("answered", "inventory.events", "{}"), False),
        (q, ("dlq", "wrong_type", "items[0].quantity must be an integer"), True),
        (q, ("dlq", "invalid_value", "items[0].quantity must be an integer from 1 to 1000000"), False),
        (q, ("dlq", "wrong_type", "items[1].quantity must be an integer"), False),
        ({("not_json", "")}, ("dlq", "not_json", "not JSON: unexpected end of input"), True)]:
        if (judge(exp, got) is None) != ok:
            failed += 1
            print(f"FAIL judge({sorted(exp)}, {got}): {judge(exp, got)}, want {'agreement' if ok else 'a failure'}")
    n = len(want) + 5 + 8
    print(f"fuzz-kafka selftest: {n - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(selftest() if sys.argv[1:] == ["selftest"] else main())
