#!/usr/bin/env python3
"""Valerix message-contract checks (JSON Schema draft 2020-12).

Run with the venv python printed by tests/contract/setup.sh:

    PY=$(tests/contract/setup.sh)
    "$PY" tests/contract/validate.py schemas            # the schemas themselves
    "$PY" tests/contract/validate.py readme README.md   # kcat / json examples in docs
    "$PY" tests/contract/validate.py messages out.jsonl # messages seen by C tests
    "$PY" tests/contract/validate.py openapi schemas/openapi.yaml [http.jsonl]
                                                        # the HTTP API document, and the
                                                        # exchanges the C tests saw
    "$PY" tests/contract/validate.py selftest           # the validator can fail

Every subcommand prints one line per check ("ok   ..." or "FAIL ...") and ends
with exactly one summary line "contract: N passed, M failed"; the exit status
is 0 only when M is 0 (and, for readme/messages, N is not 0).

Stricter than plain JSON Schema, to match the C consumers:
  * "integer" is JSON Schema 2020-12's (2, 2.0 and 2e0 are integers; 2.5, "2" and true are
    not), as the C codec reads it;
  * duplicate object keys, NaN and Infinity are rejected;
  * a message may be at most 65536 bytes (compact UTF-8 JSON);
  * "format": "date-time" is asserted (needs jsonschema[format-nongpl]).
No network access: all $refs resolve from the files under schemas/.

openapi FILE [HTTPLOG]: FILE must be OpenAPI 3.1, valid for openapi-spec-validator, written as
JSON-compatible YAML (string keys, no duplicate keys), and every example of a parameter, header
or media type must validate against its schema (every media type with a schema needs one).
HTTPLOG is JSONL, one exchange a line: {"method": "GET", "path": "/orders/abc?x=1", "status": 200}
with an optional "service" (matched against the x-service of the operation's servers). Each line
must match a documented operation (path templates like /orders/{id}; a concrete path wins over a
template; empty segments are ignored as the servers ignore them; HEAD falls back to GET) and its
status must be documented (exact, 4XX range, or default). A path no operation describes, or a
method a path does not list, passes only with a status listed in the root extension
x-unrouted.unknown-path / x-unrouted.unknown-method. Identical exchanges are reported once, with
their count; documented answers the log never showed are listed on stderr as a note.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

try:
    import jsonschema
    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource
    from referencing.exceptions import NoSuchResource, Unresolvable
    from referencing.jsonschema import DRAFT202012
except ImportError as exc:  # pragma: no cover - environment problem
    sys.stderr.write(
        f"validate.py: {exc}\n"
        "run it with the venv python: PY=$(tests/contract/setup.sh) && \"$PY\" tests/contract/validate.py ...\n"
    )
    print("contract: 0 passed, 1 failed")
    sys.exit(2)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DEFAULT_SCHEMA_DIR = REPO / "schemas"
FIXTURES = HERE / "fixtures"
ID_BASE = "https://valerix.dev/schemas/"
MAX_MESSAGE_BYTES = 65536
MARK_INVALID = "contract:invalid"
MARK_SKIP = "contract:skip"


# --------------------------------------------------------------------------
# strict JSON + strict integers
# --------------------------------------------------------------------------

class JSONError(ValueError):
    pass


def _no_dup_keys(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise JSONError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def _no_constants(name):
    raise JSONError(f"{name} is not JSON")


def strict_loads(text: str) -> Any:
    """json.loads that rejects duplicate keys, NaN and Infinity."""
    try:
        return json.loads(text, object_pairs_hook=_no_dup_keys, parse_constant=_no_constants)
    except JSONError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONError(str(exc)) from None


def compact_size(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _strict_integer(_checker, instance) -> bool:
    if isinstance(instance, float):  # 2020-12: a number with a zero fractional part (13.0), as common/vx_msg.c
        return instance.is_integer()
    return isinstance(instance, int) and not isinstance(instance, bool)


StrictValidator = jsonschema.validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _strict_integer),
)
FORMAT_CHECKER = Draft202012Validator.FORMAT_CHECKER


def format_checking_works() -> str | None:
    """None if date-time format is really asserted, else an explanation."""
    fc = FORMAT_CHECKER
    if "date-time" not in fc.checkers:
        return "format 'date-time' is not checked: install jsonschema[format-nongpl] (run setup.sh)"
    if fc.conforms("2025-13-45T99:00:00Z", "date-time") or not fc.conforms("2025-01-15T10:30:00.123Z", "date-time"):
        return "format 'date-time' checker gives wrong answers (is rfc3339-validator installed?)"
    return None


# --------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------

@dataclass
class Result:
    label: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    results: list = field(default_factory=list)

    def add(self, label: str, ok: bool, detail: str = "") -> Result:
        r = Result(label, ok, detail)
        self.results.append(r)
        print(("ok   " if ok else "FAIL ") + label + (f": {detail}" if detail else ""), flush=True)
        return r

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.ok)

    def finish(self) -> int:
        print(f"contract: {self.passed} passed, {self.failed} failed", flush=True)
        return 0 if self.failed == 0 and self.passed > 0 else 1


def short(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_path(path: Iterable) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(message)"


def error_text(e) -> str:
    """jsonschema's message, with a long offending value abbreviated so the reason stays visible."""
    msg, inst = e.message, e.instance
    r = repr(inst)
    if len(r) > 40 and r in msg:
        if isinstance(inst, str):
            brief = f"{inst[:12]!r}... ({len(inst)} characters)"
        elif isinstance(inst, list):
            brief = f"[...] ({len(inst)} items)"
        elif isinstance(inst, dict):
            brief = "{...}"
        else:
            brief = r[:40] + "..."
        msg = msg.replace(r, brief)
    if e.validator in ("maxLength", "maxItems") and "at most" not in msg:
        msg += f" (at most {e.validator_value})"
    return short(msg, 160)


def unresolvable_text(exc: Exception) -> str:
    """Short text for referencing/jsonschema errors (whose str() can embed whole schemas)."""
    cause = exc
    while getattr(cause, "__cause__", None) is not None:
        cause = cause.__cause__
    for attr in ("ref", "pointer"):
        val = getattr(cause, attr, None)
        if isinstance(val, str):
            return f"{type(cause).__name__}: {val!r} not found"
    return short(f"{type(cause).__name__}: {cause}", 160)


def _most_specific(e):
    """For anyOf/oneOf, the branch error that explains the failure (not 'is not of type null')."""
    while e.validator in ("anyOf", "oneOf") and e.context:
        ctx = [c for c in e.context if c.validator != "type"] or list(e.context)
        ctx.sort(key=lambda c: -len(c.absolute_path))
        e = ctx[0]
    return e


def describe_errors(errors: list) -> str:
    # topic-level oneOf noise ("... is not valid under any of the given schemas") only when nothing better
    specific = [e for e in errors if not (e.validator == "oneOf" and not e.path)] or errors
    specific = [_most_specific(e) for e in specific]
    specific.sort(key=lambda e: (len(e.absolute_path), e.json_path, e.message))
    parts = [f"{json_path(e.absolute_path)}: {error_text(e)}" for e in specific[:4]]
    if len(specific) > 4:
        parts.append(f"(+{len(specific) - 4} more)")
    return "; ".join(parts)


# --------------------------------------------------------------------------
# the contract: all schemas, topics and message types
# --------------------------------------------------------------------------

class Contract:
    def __init__(self, schema_dir: Path):
        self.dir = schema_dir
        self.files: dict[str, Path] = {}       # $id -> path
        self.schemas: dict[str, dict] = {}     # $id -> schema
        self.load_errors: list[tuple[str, str]] = []
        for path in sorted(schema_dir.rglob("*.schema.json")):
            rel = path.relative_to(schema_dir).as_posix()
            try:
                schema = strict_loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, JSONError) as exc:
                self.load_errors.append((rel, f"cannot read: {exc}"))
                continue
            sid = schema.get("$id") if isinstance(schema, dict) else None
            if not isinstance(sid, str):
                self.load_errors.append((rel, "no $id"))
                continue
            if sid in self.schemas:
                self.load_errors.append((rel, f"$id {sid} also used by {self.files[sid]}"))
                continue
            self.files[sid] = path
            self.schemas[sid] = schema
        if not self.schemas and not self.load_errors:
            self.load_errors.append((str(schema_dir), "no *.schema.json files found"))

        def retrieve(uri: str):
            raise NoSuchResource(ref=uri)  # never go to the network

        # The registry holds copies without "$schema": when jsonschema follows a $ref into a
        # resource that names its dialect, it switches to that dialect's stock validator class
        # and would drop the strict integer type checker. All files are 2020-12 (checked by
        # the `schemas` subcommand), so the default specification says the same thing.
        self.registry = Registry(retrieve=retrieve).with_resources(
            (sid, Resource(contents={k: v for k, v in s.items() if k != "$schema"}, specification=DRAFT202012))
            for sid, s in self.schemas.items()
        ).crawl()

        # topic name -> topic schema $id ; message type -> (message schema $id, topic)
        self.topics: dict[str, str] = {}
        self.types: dict[str, tuple[str, str]] = {}
        self.topic_types: dict[str, list[str]] = {}
        self.structure_errors: list[tuple[str, str]] = []
        for sid, s in self.schemas.items():
            topic = s.get("x-kafka-topic")
            if topic is None:
                continue
            self.topics[topic] = sid
            self.topic_types[topic] = []
            for branch in s.get("oneOf", []):
                ref = branch.get("$ref") if isinstance(branch, dict) else None
                try:
                    target = self.registry.resolver(base_uri=sid).lookup(ref).contents if ref else None
                except Unresolvable as exc:
                    self.structure_errors.append((self.rel(sid), f"oneOf $ref {ref!r} does not resolve: {unresolvable_text(exc)}"))
                    continue
                mtype = (((target or {}).get("properties") or {}).get("type") or {}).get("const")
                if not isinstance(mtype, str):
                    self.structure_errors.append((self.rel(sid), f"oneOf branch {ref!r} has no properties.type.const"))
                    continue
                if mtype in self.types:
                    self.structure_errors.append((self.rel(sid), f"type {mtype} is also on topic {self.types[mtype][1]}"))
                    continue
                if not isinstance(target.get("$id"), str):
                    self.structure_errors.append((self.rel(sid), f"oneOf branch {ref!r} must point to a whole schema file"))
                    continue
                self.types[mtype] = (target["$id"], topic)
                self.topic_types[topic].append(mtype)
        self._validators: dict[str, Any] = {}

    def rel(self, sid: str) -> str:
        p = self.files.get(sid)
        return p.relative_to(self.dir).as_posix() if p else sid

    def validator(self, sid: str):
        v = self._validators.get(sid)
        if v is None:
            v = StrictValidator({"$ref": sid}, registry=self.registry, format_checker=FORMAT_CHECKER)
            self._validators[sid] = v
        return v

    def errors(self, sid: str, value: Any) -> list:
        try:
            return list(self.validator(sid).iter_errors(value))
        except Exception as exc:  # a broken schema ($ref to nowhere, bad keyword value, ...)
            return [jsonschema.ValidationError(
                f"cannot validate, schema {self.rel(sid)} is broken: {unresolvable_text(exc)}",
                validator="schema", path=(), instance=None)]

    def check_message(self, value: Any, *, topic: str | None = None, mtype_schema: str | None = None,
                      raw_size: int | None = None) -> str | None:
        """Validate one message. Returns None when valid, else a one-line reason."""
        problems = []
        size = raw_size if raw_size is not None else compact_size(value)
        if size > MAX_MESSAGE_BYTES:
            problems.append(f"message is {size} bytes, more than the {MAX_MESSAGE_BYTES}-byte limit")
        if topic is not None:
            sid = self.topics[topic]
            errs = self.errors(sid, value)
            if errs:
                mtype = value.get("type") if isinstance(value, dict) else None
                if isinstance(mtype, str) and mtype in self.topic_types[topic]:
                    # explain with the message's own schema (oneOf errors are unreadable)
                    detail = self.errors(self.types[mtype][0], value)
                    errs = detail or errs
                elif isinstance(mtype, str) and mtype in self.types:
                    problems.append(f"type {mtype} belongs on topic {self.types[mtype][1]}, not {topic}")
                    errs = []
                problems.extend([describe_errors(errs)] if errs else [])
        if mtype_schema is not None:
            errs = self.errors(mtype_schema, value)
            if errs:
                problems.append(describe_errors(errs))
        return "; ".join(problems) if problems else None


def message_label(value: Any) -> str:
    t = value.get("type") if isinstance(value, dict) else None
    return t if isinstance(t, str) else "?"


# --------------------------------------------------------------------------
# schemas
# --------------------------------------------------------------------------

def iter_refs(node: Any, path: str = "#"):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                yield path, v
            else:
                yield from iter_refs(v, f"{path}/{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_refs(v, f"{path}/{i}")


def cmd_schemas(contract: Contract, rep: Report) -> None:
    problem = format_checking_works()
    rep.add("format checker (date-time)", problem is None, problem or "")
    for rel, err in contract.load_errors + contract.structure_errors:
        rep.add(rel, False, err)

    for sid, schema in contract.schemas.items():
        rel = contract.rel(sid)
        problems = []
        try:
            Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            problems.append(f"not a valid 2020-12 schema: {short(exc.message)} at {json_path(exc.absolute_path)}")
        if schema.get("$schema") != "https://json-schema.org/draft/2020-12/schema":
            problems.append("$schema must be https://json-schema.org/draft/2020-12/schema")
        if sid != ID_BASE + rel:
            problems.append(f"$id should be {ID_BASE + rel}")
        for key in ("title", "description"):
            if not isinstance(schema.get(key), str) or not schema[key].strip():
                problems.append(f"missing {key}")
        if schema.get("additionalProperties") is False:
            problems.append("top level must allow unknown fields (no additionalProperties: false)")
        is_common = "$defs" in schema and "type" not in schema
        if not is_common and not (isinstance(schema.get("examples"), list) and schema["examples"]):
            problems.append("needs a non-empty examples array")
        if str(MAX_MESSAGE_BYTES) not in str(schema.get("description", "")):
            problems.append(f"description must state the {MAX_MESSAGE_BYTES}-byte message limit")
        for where, ref in iter_refs(schema):
            if re.match(r"^[a-z][a-z0-9+.-]*:", ref) and not ref.startswith(ID_BASE):
                problems.append(f"{where}: $ref {ref} points outside the local schemas")
                continue
            try:
                contract.registry.resolver(base_uri=sid).lookup(ref)
            except Unresolvable as exc:
                problems.append(f"{where}: $ref {ref} does not resolve ({unresolvable_text(exc)})")
        rep.add(f"{rel} is a valid schema", not problems, "; ".join(problems))
        if problems:
            continue

        # each example against its own schema (and, for $defs, each def's examples)
        for i, ex in enumerate(schema.get("examples", [])):
            why = contract.check_message(ex, mtype_schema=sid)
            rep.add(f"{rel} examples[{i}] ({message_label(ex)})", why is None, why or "")
        for name, sub in (schema.get("$defs") or {}).items():
            for i, ex in enumerate(sub.get("examples", []) if isinstance(sub, dict) else []):
                errs = contract.errors(f"{sid}#/$defs/{name}", ex)
                rep.add(f"{rel} $defs/{name} examples[{i}]", not errs, describe_errors(errs) if errs else "")

    # every message type sits on a topic; every message example passes its topic schema
    if not contract.topics:
        rep.add("topic schemas", False, "no schema has x-kafka-topic")
    for sid, schema in contract.schemas.items():
        const = ((schema.get("properties") or {}).get("type") or {}).get("const")
        if "x-kafka-topic" in schema or not isinstance(const, str):
            continue
        rel = contract.rel(sid)
        if const not in contract.types or contract.types[const][0] != sid:
            rep.add(f"{rel} is on a topic", False, f"no topic schema lists type {const} in its oneOf")
            continue
        topic = contract.types[const][1]
        for i, ex in enumerate(schema.get("examples", [])):
            why = contract.check_message(ex, topic=topic)
            rep.add(f"{rel} examples[{i}] accepted by topic {topic}", why is None, why or "")


# --------------------------------------------------------------------------
# readme
# --------------------------------------------------------------------------

FENCE_RE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`{]*)?")   # any indent: fences inside list items


@dataclass
class Example:
    line: int
    kind: str              # "kcat" or "json"
    text: str              # the raw text the example came from
    marker: str | None     # MARK_INVALID / MARK_SKIP / None


def _marker(own: str, previous: str = "") -> str | None:
    """Marker on the example's own line, or on a marker-only comment line just before it."""
    texts = [own]
    p = previous.strip()
    if p.startswith("#") or p.startswith("<!--") or p.startswith("//"):
        texts.append(p)
    for t in texts:
        if MARK_SKIP in t:
            return MARK_SKIP
        if MARK_INVALID in t:
            return MARK_INVALID
    return None


CODE_SPAN_RE = re.compile(r"(`+)(.*?\b(?:kcat|kafkacat)\b.*?)\1")


def scan_markdown(text: str) -> list[Example]:
    lines = text.replace("\r\n", "\n").split("\n")
    found: list[Example] = []
    prev_nonblank = ""
    fence = None           # (fence string, lang, start line, marker from before the fence)
    block: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = FENCE_RE.match(line)
        if fence is None and m:
            fence = (m.group(1), (m.group(2) or "").lower(), i + 1, _marker(line, prev_nonblank))
            block = []
            prev_nonblank = line
            i += 1
            continue
        stripped = line.strip()
        if fence is not None and stripped and set(stripped) == {fence[0][0]} and len(stripped) >= len(fence[0]):
            if fence[1] == "json":
                found.append(Example(fence[2] + 1, "json", "\n".join(block), fence[3]))
            fence = None
            prev_nonblank = line
            i += 1
            continue
        if fence is not None and fence[1] == "json":
            block.append(line)
            i += 1
            continue
        # join shell continuation lines
        start = i
        logical = line
        while logical.endswith("\\") and i + 1 < len(lines):
            i += 1
            logical = logical[:-1] + " " + lines[i]
        if re.search(r"\b(kcat|kafkacat)\b", logical) and re.search(r"(^|\s)-[a-zA-Z]*P", logical):
            cmd = logical
            if fence is None:                       # prose: take the `code span` holding kcat
                span = CODE_SPAN_RE.search(logical)
                cmd = span.group(2) if span else logical
            mark = _marker(logical, prev_nonblank) or (fence[3] if fence is not None else None)
            found.append(Example(start + 1, "kcat", cmd, mark))
        if logical.strip():
            prev_nonblank = logical
        i += 1
    return found


@dataclass
class KcatProduce:
    topic: str | None
    delim: str | None
    payload: str | None     # what echo prints (without the newline)
    note: str = ""


def shell_tokens(text: str) -> list[tuple[str, bool]]:
    r"""Split one POSIX shell line into (word, is_operator) pairs.

    Handles '...', "..." (with \\ \" \$ \` escapes), backslash escapes, the control
    operators | || & && ; and # comments. A quoted '|' is a word, not a pipe.
    """
    toks: list[tuple[str, bool]] = []
    cur: str | None = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            if cur is not None:
                toks.append((cur, False))
                cur = None
            i += 1
        elif c == "#" and cur is None:
            break
        elif c in "|&;":
            if cur is not None:
                toks.append((cur, False))
                cur = None
            op = text[i:i + 2] if text[i:i + 2] in ("||", "&&") else c
            toks.append((op, True))
            i += len(op)
        elif c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise ValueError("unterminated single quote")
            cur = (cur or "") + text[i + 1:j]
            i = j + 1
        elif c == '"':
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ValueError("unterminated double quote")
                d = text[i]
                if d == '"':
                    i += 1
                    break
                if d == "\\" and i + 1 < n and text[i + 1] in '"\\$`':
                    buf.append(text[i + 1])
                    i += 2
                    continue
                buf.append(d)
                i += 1
            cur = (cur or "") + "".join(buf)
        elif c == "\\":
            cur = (cur or "") + text[i + 1:i + 2]
            i += 2
        else:
            cur = (cur or "") + c
            i += 1
    if cur is not None:
        toks.append((cur, False))
    return toks


def parse_kcat(logical: str) -> KcatProduce | str:
    """Parse `echo 'KEY|{json}' | kcat -P ... -t TOPIC -K'|'`. Returns a KcatProduce or an error string."""
    text = logical.strip()
    text = re.sub(r"^(\$|#|>|\S*[$#]) +", "", text)       # shell prompt
    try:
        tokens = shell_tokens(text)
    except ValueError as exc:
        return f"cannot parse the shell line: {exc}"
    # split into pipeline stages
    stages, cur = [], []
    for word, is_op in tokens:
        if is_op:
            stages.append((cur, word))
            cur = []
        else:
            cur.append(word)
    stages.append((cur, None))
    for idx, (stage, op) in enumerate(stages):
        if not stage or os.path.basename(stage[0]) not in ("kcat", "kafkacat"):
            continue
        args = stage[1:]
        if not any(re.fullmatch(r"-[a-zA-Z]*P[a-zA-Z]*", a) for a in args):
            continue
        topic = delim = None
        j = 0
        while j < len(args):
            a = args[j]
            for flag in ("-t", "-K"):
                if a == flag and j + 1 < len(args):
                    val, j = args[j + 1], j + 1
                elif a.startswith(flag) and len(a) > 2:
                    val = a[2:]
                else:
                    continue
                if flag == "-t":
                    topic = val
                else:
                    delim = val
            j += 1
        # the stage feeding kcat must be echo (or printf '%s\n')
        if idx == 0 or stages[idx - 1][1] != "|":
            return KcatProduce(topic, delim, None, "kcat -P does not read from echo")
        feeder = stages[idx - 1][0]
        if feeder and feeder[0] == "echo":
            words = feeder[1:]
            while words and re.fullmatch(r"-[neE]+", words[0]):
                words = words[1:]
            payload = " ".join(words)
        elif feeder and feeder[0] == "printf" and len(feeder) == 3 and feeder[1] in ("%s\\n", "%s\n"):
            payload = feeder[2]
        else:
            return KcatProduce(topic, delim, None, "kcat -P does not read from echo")
        note = ""
        if "\\" in payload and feeder[0] == "echo":
            note = "payload contains '\\' which some echo implementations rewrite; prefer printf '%s\\n'"
        return KcatProduce(topic, delim, payload, note)
    return KcatProduce(None, None, None, "no kcat -P command found")


def check_kcat(contract: Contract, ex: Example) -> tuple[str, str | None, str]:
    """Returns (label suffix, error or None, note)."""
    parsed = parse_kcat(ex.text)
    if isinstance(parsed, str):
        return "kcat", parsed, ""
    if parsed.payload is None:
        return "kcat", None if parsed.note else "no payload", parsed.note
    topic = parsed.topic
    if topic is None:
        return "kcat", "no -t TOPIC", ""
    if topic not in contract.topics:
        known = ", ".join(sorted(contract.topics))
        return f"kcat -t {topic}", f"topic {topic!r} has no schema (known: {known})", ""
    payload = parsed.payload
    key = None
    if parsed.delim is not None:
        if parsed.delim == "" or parsed.delim not in payload:
            return f"kcat -t {topic}", f"-K delimiter {parsed.delim!r} does not occur in the echoed line", ""
        key, payload = payload.split(parsed.delim, 1)
        if key == "":
            return f"kcat -t {topic}", "empty Kafka key before the delimiter", ""
    if "\n" in payload:
        return f"kcat -t {topic}", "payload spans several lines; kcat sends one message per line", ""
    try:
        value = strict_loads(payload)
    except JSONError as exc:
        return f"kcat -t {topic}", f"value is not JSON: {exc}", ""
    label = f"kcat -t {topic} {message_label(value)}" + (f" key={key}" if key is not None else " (no key)")
    why = contract.check_message(value, topic=topic, raw_size=len(payload.encode("utf-8")))
    note = parsed.note
    if why is None and isinstance(value, dict) and topic.endswith(".commands"):
        # The recommended key (schemas' descriptions): on orders.commands the order id, so that the
        # commands of one order share a partition (a PlaceOrder without order_id: its idempotency_key);
        # on inventory.commands the idempotency_key.
        ik, oid = value.get("idempotency_key"), value.get("order_id")
        want, what = (oid, "order_id") if topic == "orders.commands" and oid is not None else (ik, "idempotency_key")
        if key is None:
            note = "; ".join(filter(None, [note, f"no Kafka key (recommended: -K'|' with the {what})"]))
        elif key != want:
            note = "; ".join(filter(None, [note, f"Kafka key differs from {what} (recommended equal)"]))
    return label, why, note


def check_json_block(contract: Contract, ex: Example) -> list[tuple[str, str | None]]:
    """Returns [(label suffix, error or None)] for each message object in the block."""
    try:
        docs = [strict_loads(ex.text)]
    except JSONError as whole_err:
        docs = []
        try:
            docs = [strict_loads(l) for l in ex.text.split("\n") if l.strip()]
        except JSONError:
            names = [t for t in contract.types if re.search(r'"type"\s*:\s*"' + re.escape(t) + '"', ex.text)]
            if names:
                return [(f"json {names[0]}", f"block is not valid JSON: {whole_err}")]
            return []
    out = []
    objs = []
    for d in docs:
        objs.extend([d] if isinstance(d, dict) else [o for o in d if isinstance(o, dict)] if isinstance(d, list) else [])
    for obj in objs:
        t = obj.get("type")
        if not isinstance(t, str):
            continue
        if t in contract.types:
            sid, topic = contract.types[t]
            why = contract.check_message(obj, mtype_schema=sid)
            out.append((f"json {t} ({topic})", why))
        else:
            close = difflib.get_close_matches(t, list(contract.types), n=1, cutoff=0.8)
            if close:
                out.append((f"json {t}", f"unknown message type {t!r} (did you mean {close[0]}?)"))
    return out


def readme_results(contract: Contract, path: Path) -> list[tuple[str, bool, str]]:
    """[(label, ok, detail)] for every example in a markdown file, markers applied."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return [(f"{path}", False, f"cannot read: {exc}")]
    out = []
    for ex in scan_markdown(text):
        if ex.kind == "kcat":
            label, why, note = check_kcat(contract, ex)
            if why is None and label == "kcat":     # not an echo producer line: nothing to check
                if note:
                    sys.stderr.write(f"note: {path}:{ex.line}: {note}; not checked\n")
                continue
            checks = [(label, why, note)]
        else:
            checks = [(label, why, "") for label, why in check_json_block(contract, ex)]
        for label, why, note in checks:
            where = f"{path}:{ex.line} {label}"
            if ex.marker == MARK_SKIP:
                sys.stderr.write(f"note: {where}: skipped ({MARK_SKIP})\n")
                continue
            if ex.marker == MARK_INVALID:
                if why is None:
                    out.append((where + " [expected invalid]", False, f"marked {MARK_INVALID} but it is valid"))
                else:
                    out.append((where + " [expected invalid]", True, f"rejected as expected: {why}"))
                continue
            detail = why if why is not None else (f"note: {note}" if note else "")
            out.append((where, why is None, detail))
    return out


def cmd_readme(contract: Contract, rep: Report, path: Path) -> None:
    results = readme_results(contract, path)
    for label, ok, detail in results:
        rep.add(label, ok, detail)
    if not results:
        rep.add(f"{path}", False, "no kcat producer lines or json message blocks found (nothing to check)")


# --------------------------------------------------------------------------
# messages
# --------------------------------------------------------------------------

def messages_results(contract: Contract, path: Path) -> list[tuple[str, bool, str, Any]]:
    """[(label, ok, detail, parsed line or None)] per non-blank line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [(f"{path}", False, f"cannot read: {exc}", None)]
    out = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = strict_loads(line.decode("utf-8"))
        except (UnicodeDecodeError, JSONError) as exc:
            out.append((where, False, f"line is not JSON: {short(str(exc))}", None))
            continue
        if not isinstance(rec, dict) or "topic" not in rec or "value" not in rec:
            out.append((where, False, 'line must be {"topic": T, "value": MESSAGE}', rec))
            continue
        topic, value, raw_size = rec["topic"], rec["value"], None
        if isinstance(value, str):
            # the raw message bytes as a string: decode them here
            raw_size = len(value.encode("utf-8"))
            try:
                value = strict_loads(value)
            except JSONError as exc:
                out.append((f"{where} {topic}", False, f"value is not JSON: {short(str(exc))}", rec))
                continue
        where = f"{where} {topic} {message_label(value)}"
        if not isinstance(topic, str) or topic not in contract.topics:
            known = ", ".join(sorted(contract.topics))
            out.append((where, False, f"unknown topic {topic!r} (schemas exist for: {known})", rec))
            continue
        why = contract.check_message(value, topic=topic, raw_size=raw_size)
        out.append((where, why is None, why or "", rec))
    return out


def cmd_messages(contract: Contract, rep: Report, path: Path) -> None:
    results = messages_results(contract, path)
    for label, ok, detail, _ in results:
        rep.add(label, ok, detail)
    if not results:
        rep.add(f"{path}", False, "no messages in file (nothing to check)")


# --------------------------------------------------------------------------
# openapi
# --------------------------------------------------------------------------

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
UNROUTED = "x-unrouted"          # root extension: answers to requests no operation describes
STATUS_KEY_RE = re.compile(r"^([1-5][0-9][0-9]|[1-5]XX)$")


def load_yaml_strict(text: str) -> Any:
    """yaml.safe_load that keeps to JSON: string keys only, no duplicate keys, dates stay strings.

    A duplicate key (two `/orders:` paths, two `"201":` responses) would silently drop one of them;
    an unquoted `201:` key becomes an integer that OpenAPI tools disagree on."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def construct_mapping(loader, node, deep=False):
        loader.flatten_mapping(node)
        out = {}
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            where = f"line {knode.start_mark.line + 1}"
            if not isinstance(key, str):
                raise JSONError(f"{where}: key {key!r} is not a string (quote it)")
            if key in out:
                raise JSONError(f"{where}: duplicate key {key!r}")
            out[key] = loader.construct_object(vnode, deep=True)
        return out

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    Loader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as exc:
        raise JSONError(short(str(exc), 200)) from None


def _esc(segment) -> str:
    return str(segment).replace("~", "~0").replace("/", "~1")


def _pretty(pointer: str) -> str:
    """'/paths/~1orders/post/responses/201/content/application~1json/examples/x' -> '/orders post 201 application/json x'"""
    skip = {"paths", "responses", "content", "examples", "components"}
    segs = [s.replace("~1", "/").replace("~0", "~") for s in pointer.split("/")[1:]]
    return " ".join(s for s in segs if s not in skip) or "(root)"


@dataclass
class Operation:
    method: str                  # lower case, as in the document
    template: str                # the path key, e.g. /orders/{id}
    statuses: list               # response keys: "201", "4XX", "default"
    services: set | None         # x-service of its servers; None: not stated, any server


def _template_regexes(template: str) -> list | None:
    """One regex per path segment ('{id}' matches any one segment); None when not a path."""
    if not template.startswith("/"):
        return None
    out = []
    for seg in [s for s in template.split("/") if s]:
        parts = re.split(r"(\{[^{}/]+\})", seg)
        out.append(re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts if p)))
    return out


class OpenAPIDoc:
    """The operations of an OpenAPI document, for matching recorded HTTP exchanges."""

    def __init__(self, spec: dict):
        self.operations: dict[str, dict[str, Operation]] = {}   # template -> method -> op
        self.matchers: list[tuple[str, list, int]] = []          # (template, regexes, variables)
        root_servers = spec.get("servers")
        paths = spec.get("paths") if isinstance(spec.get("paths"), dict) else {}
        for template, item in paths.items():
            regexes = _template_regexes(template)
            if regexes is None or not isinstance(item, dict):
                continue
            self.matchers.append((template, regexes, template.count("{")))
            ops = self.operations.setdefault(template, {})
            for m in HTTP_METHODS:
                op = item.get(m)
                if not isinstance(op, dict):
                    continue
                servers = op.get("servers") or item.get("servers") or root_servers
                servers = servers if isinstance(servers, list) else []
                services = {s["x-service"] for s in servers if isinstance(s, dict) and isinstance(s.get("x-service"), str)}
                responses = op.get("responses") if isinstance(op.get("responses"), dict) else {}
                ops[m] = Operation(m, template, [str(k) for k in responses], services or None)
        # a concrete path wins over a templated one (OpenAPI "Path Templating Matching")
        self.matchers.sort(key=lambda t: t[2])
        unrouted = spec.get(UNROUTED) if isinstance(spec.get(UNROUTED), dict) else {}
        self.unrouted_path = [str(k) for k in (unrouted.get("unknown-path") or {})]
        self.unrouted_method = [str(k) for k in (unrouted.get("unknown-method") or {})]

    def match_paths(self, path: str) -> list[str]:
        """The templates matching a request path, the most specific first."""
        from urllib.parse import unquote
        path = path.split("?", 1)[0].split("#", 1)[0]
        segs = [unquote(s) for s in path.split("/") if s]      # as the servers route: empty segments ignored
        return [template for template, regexes, _ in self.matchers
                if len(regexes) == len(segs) and all(r.fullmatch(s) for r, s in zip(regexes, segs))]

    @staticmethod
    def status_documented(status: int, keys: list) -> bool:
        return str(status) in keys or f"{status // 100}XX" in [k.upper() for k in keys] or "default" in keys

    def check_exchange(self, rec: Any) -> tuple[str, str | None]:
        """(group label, None when documented else the reason) for one {"method","path","status"} record.

        With "service", only the operations whose servers carry that x-service count: a path none
        of them serves is an unknown path there, a method they do not list an unknown method."""
        if not isinstance(rec, dict):
            return "(malformed)", 'line must be {"method": M, "path": P, "status": S}'
        method, path, status, service = rec.get("method"), rec.get("path"), rec.get("status"), rec.get("service")
        if not isinstance(method, str) or not re.fullmatch(r"[A-Za-z]+", method):
            return "(malformed)", f"method must be an HTTP method name, got {method!r}"
        if not isinstance(path, str) or not path.startswith("/"):
            return "(malformed)", f"path must start with /, got {path!r}"
        if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
            return "(malformed)", f"status must be an integer from 100 to 599, got {status!r}"
        if service is not None and not isinstance(service, str):
            return "(malformed)", f"service must be a string, got {service!r}"
        method = method.upper()
        at = f" @{service}" if service else ""

        def served(op: Operation) -> bool:
            return not service or op.services is None or service in op.services

        templates = self.match_paths(path)
        template = next((t for t in templates if any(served(op) for op in self.operations[t].values())), None)
        if template is None:
            if self.status_documented(status, self.unrouted_path):
                return f"{method} (unrouted path) -> {status}{at}", None
            label = f"{method} {path.split('?', 1)[0]} -> {status}{at}"
            if templates:
                elsewhere = sorted({s for t in templates for op in self.operations[t].values() for s in op.services or ()})
                return label, f"{templates[0]} is not served by {service} (servers: {', '.join(elsewhere)})"
            hint = f" ({UNROUTED}.unknown-path documents {', '.join(self.unrouted_path)})" if self.unrouted_path else ""
            return label, f"no documented path matches{hint}"
        ops = {m: op for m, op in self.operations[template].items() if served(op)}
        op = ops.get(method.lower()) or (ops.get("get") if method == "HEAD" else None)
        label = f"{method} {template} -> {status}{at}"
        if op is None:
            if self.status_documented(status, self.unrouted_method):
                return label, None
            other = self.operations[template].get(method.lower())
            if other is not None:
                return label, f"{method} {template} is not served by {service} (servers: {', '.join(sorted(other.services or ()))})"
            documented = ", ".join(m.upper() for m in ops)
            return label, f"{method} is not documented on {template} (documented: {documented})"
        if not self.status_documented(status, op.statuses):
            return label, f"status {status} is not documented for {method} {template} (documented: {', '.join(op.statuses)})"
        return label, None


def _example_sites(node: Any, ptr: str, parent: str = ""):
    """Yields ("example", pointer of the value, pointer of its schema, value) for every example of a
    parameter, header or media type, and ("missing", pointer, None, None) for a media type with a
    schema and no example. Schemas themselves are not entered."""
    if isinstance(node, dict):
        if parent == "content":
            for mt, obj in node.items():
                if isinstance(obj, dict) and "schema" in obj and "example" not in obj and "examples" not in obj:
                    yield "missing", f"{ptr}/{_esc(mt)}", None, None
        if isinstance(node.get("schema"), dict) and parent != "content":
            if "example" in node:
                yield "example", f"{ptr}/example", f"{ptr}/schema", node["example"]
            if isinstance(node.get("examples"), dict):
                for name, ex in node["examples"].items():
                    if isinstance(ex, dict) and "value" in ex:
                        yield "example", f"{ptr}/examples/{_esc(name)}", f"{ptr}/schema", ex["value"]
        for k, v in node.items():
            if k in ("schema", "example", "examples") and parent != "content":
                continue
            yield from _example_sites(v, f"{ptr}/{_esc(k)}", k)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _example_sites(v, f"{ptr}/{i}", parent)


def openapi_doc_results(contract: Contract, path: Path) -> tuple[dict | None, list[tuple[str, bool, str]]]:
    """Checks an OpenAPI 3.1 document: openapi-spec-validator, then every example against its schema
    (the local JSON Schemas resolve for relative $refs such as common.schema.json#/$defs/items),
    every media type has an example, and x-unrouted is well formed."""
    from urllib.parse import quote

    name = path.name
    out: list[tuple[str, bool, str]] = []
    try:
        spec = load_yaml_strict(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, JSONError) as exc:
        return None, [(f"{name} is readable YAML", False, short(str(exc)))]
    if not isinstance(spec, dict):
        return None, [(f"{name} is an OpenAPI document", False, "the top level must be a mapping")]
    version = spec.get("openapi")
    out.append((f"{name} declares OpenAPI 3.1", isinstance(version, str) and version.startswith("3.1."),
                f"openapi: {version!r}"))

    try:
        import openapi_spec_validator
        from openapi_spec_validator import OpenAPIV31SpecValidator
        tool = f"openapi-spec-validator {getattr(openapi_spec_validator, '__version__', '?')}"
        problems = []
        try:
            for err in OpenAPIV31SpecValidator(spec, base_uri=path.resolve().as_uri()).iter_errors():
                where = json_path(getattr(err, "absolute_path", None) or getattr(err, "path", None) or [])
                problems.append(f"{where}: {short(getattr(err, 'message', str(err)), 200)}")
                if len(problems) >= 5:
                    problems.append("(stopped after 5)")
                    break
        except Exception as exc:    # the validator raises on a $ref it cannot follow
            problems.append(f"cannot validate: {unresolvable_text(exc)}")
        out.append((f"{name} is valid ({tool})", not problems, "; ".join(problems)))
    except ImportError as exc:
        out.append((f"{name} is valid (openapi-spec-validator)", False, f"{exc}: run setup.sh"))

    # examples, validated as JSON Schema 2020-12 with the contract's strict integers and formats
    base = path.resolve().as_uri()
    resources = [(base, Resource(contents=spec, specification=DRAFT202012))]
    for sid, p in contract.files.items():
        resources.append((p.resolve().as_uri(),
                          Resource(contents={k: v for k, v in contract.schemas[sid].items() if k != "$schema"},
                                   specification=DRAFT202012)))
    registry = contract.registry.with_resources(resources)
    scopes = [("/paths", spec.get("paths"))]
    components = spec.get("components") if isinstance(spec.get("components"), dict) else {}
    for k, v in components.items():
        if k not in ("schemas", "examples"):
            scopes.append((f"/components/{_esc(k)}", v))
    n_examples = 0
    for scope, node in scopes:
        for kind, ptr, schema_ptr, value in _example_sites(node, scope):
            if kind == "missing":
                out.append((f"example for {_pretty(ptr)}", False, "a media type with a schema needs an example"))
                continue
            n_examples += 1
            try:
                v = StrictValidator({"$ref": base + "#" + quote(schema_ptr, safe="/~")}, registry=registry,
                                    format_checker=FORMAT_CHECKER)
                errs = list(v.iter_errors(value))
                why = describe_errors(errs) if errs else None
            except Exception as exc:
                why = f"cannot validate: {unresolvable_text(exc)}"
            out.append((f"example {_pretty(ptr)}", why is None, why or ""))
    out.append((f"{name} has examples", n_examples > 0, f"{n_examples} checked"))

    unrouted = spec.get(UNROUTED)
    if unrouted is not None:
        bad = []
        if not isinstance(unrouted, dict) or set(unrouted) - {"unknown-path", "unknown-method"}:
            bad.append("must be a mapping with unknown-path and/or unknown-method")
        else:
            for k, v in unrouted.items():
                if not isinstance(v, dict) or not v or not all(STATUS_KEY_RE.match(str(s)) for s in v):
                    bad.append(f"{k} must map status codes to responses")
        out.append((f"{name} {UNROUTED}", not bad, "; ".join(bad)))
    doc = OpenAPIDoc(spec)
    n_ops = sum(len(ops) for ops in doc.operations.values())
    out.append((f"{name} has operations", n_ops > 0, f"{n_ops} operations on {len(doc.operations)} paths"))
    return spec, out


def http_log_results(doc: OpenAPIDoc, path: Path) -> list[tuple[int, str, str | None]]:
    """[(line number, group label, reason or None)] per non-blank line of an HTTP log."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [(0, f"{path}", f"cannot read: {exc}")]
    out = []
    for n, line in enumerate(raw.split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            rec = strict_loads(line.decode("utf-8"))
        except (UnicodeDecodeError, JSONError) as exc:
            out.append((n, f"line {n}", f"line is not JSON: {short(str(exc))}"))
            continue
        label, why = doc.check_exchange(rec)
        out.append((n, label if label != "(malformed)" else f"line {n}", why))
    return out


def cmd_openapi(contract: Contract, rep: Report, path: Path, log: Path | None) -> None:
    spec, results = openapi_doc_results(contract, path)
    for label, ok, detail in results:
        rep.add(label, ok, detail)
    if spec is None or log is None:
        return
    doc = OpenAPIDoc(spec)
    lines = http_log_results(doc, log)
    if not lines:
        rep.add(f"{log}", False, "no HTTP exchanges in file (nothing to check)")
        return
    groups: dict[str, list] = {}
    for n, label, why in lines:
        groups.setdefault(label, []).append((n, why))
    for label, items in groups.items():
        whys = [w for _, w in items if w]
        nums = [str(n) for n, w in items if w]
        where = f" (line {', '.join(nums[:5])}{', ...' if len(nums) > 5 else ''})" if nums else ""
        rep.add(f"{log.name}: {label} x{len(items)}", not whys, (whys[0] + where) if whys else "")
    # what the tests never exercised: a note, not a failure
    seen = set(groups)
    unseen = [f"{m.upper()} {t} -> {s}" for t, ops in doc.operations.items() for m, op in ops.items()
              for s in op.statuses
              if not any(lbl.startswith(f"{m.upper()} {t} -> {s}") for lbl in seen)]
    if unseen:
        sys.stderr.write(f"note: {len(unseen)} documented answers not seen in {log.name}: {'; '.join(unseen)}\n")


# --------------------------------------------------------------------------
# selftest
# --------------------------------------------------------------------------

def boundary_cases(contract: Contract):
    """(description, topic, value, should_pass) around every limit of the contract."""
    def reserve(**kw):
        v = {"type": "ReserveStock", "idempotency_key": "k", "order_id": "o",
             "items": [{"product_id": "p", "quantity": 1}]}
        v.update(kw)
        return v

    def restock(**kw):
        v = {"type": "Restock", "idempotency_key": "k", "product_id": "p", "quantity": 1}
        v.update(kw)
        return v

    def place(**kw):
        v = {"type": "PlaceOrder", "idempotency_key": "k", "customer_id": "c",
             "items": [{"product_id": "p", "quantity": 1}]}
        v.update(kw)
        return v

    line = lambda q=1, p="p": {"product_id": p, "quantity": q}
    C, O = "inventory.commands", "orders.commands"
    cases = []
    for name, lo, hi, make, topic in [
        ("idempotency_key", 1, 128, lambda s: reserve(idempotency_key=s), C),
        ("order_id", 1, 64, lambda s: reserve(order_id=s), C),
        ("product_id", 1, 64, lambda s: reserve(items=[line(p=s)]), C),
        ("name", 1, 200, lambda s: restock(name=s), C),
        ("customer_id", 1, 64, lambda s: place(customer_id=s), O),
        ("PlaceOrder.order_id", 1, 64, lambda s: place(order_id=s), O),
    ]:
        cases += [(f"{name} length {lo}", topic, make("x" * lo), True),
                  (f"{name} length {hi}", topic, make("x" * hi), True),
                  (f"{name} length {lo - 1}", topic, make("x" * (lo - 1)), False),
                  (f"{name} length {hi + 1}", topic, make("x" * (hi + 1)), False),
                  (f"{name} not a string", topic, make(7), False)]
    for q, ok in [(1, True), (1000000, True), (0, False), (1000001, False), (-1, False),
                  (2.0, True), (2.5, False), ("2", False), (True, False), (None, False)]:
        cases.append((f"items[0].quantity = {q!r}", C, reserve(items=[line(q)]), ok))
        cases.append((f"Restock.quantity = {q!r}", C, restock(quantity=q), ok))
    for n, ok in [(1, True), (100, True), (0, False), (101, False)]:
        cases.append((f"{n} item lines", C, reserve(items=[line(1, f"p{i}") for i in range(n)]), ok))
        cases.append((f"PlaceOrder with {n} item lines", O, place(items=[line(1, f"p{i}") for i in range(n)]), ok))
    cases.append(("same product on two lines", C, reserve(items=[line(1), line(2)]), True))
    cases.append(("unknown extra field", C, reserve(extra={"x": 1}), True))
    pad = MAX_MESSAGE_BYTES - compact_size(reserve(pad=""))
    cases.append(("exactly 65536 bytes", C, reserve(pad="x" * pad), True))
    cases.append(("65537 bytes", C, reserve(pad="x" * (pad + 1)), False))
    return cases


def selftest_openapi(contract: Contract, rep: Report) -> None:
    """The openapi subcommand: a good document passes, each broken one fails for its reason, good
    exchanges pass, and every undocumented path, method, status or server fails."""
    import contextlib
    import copy
    import io
    import tempfile

    mini = FIXTURES / "openapi-mini.yaml"
    spec, res = openapi_doc_results(contract, mini)
    rep.add("selftest openapi-mini.yaml loads", spec is not None)
    for label, ok, detail in res:
        rep.add(f"selftest expects pass: {label}", ok, detail)
    if spec is None:
        return
    doc = OpenAPIDoc(spec)

    good = http_log_results(doc, FIXTURES / "http-good.jsonl")
    rep.add("fixtures/http-good.jsonl is not empty", len(good) > 0)
    for n, label, why in good:
        rep.add(f"selftest expects pass: http-good.jsonl:{n} {label}", why is None, why or "")

    bad_path = FIXTURES / "http-bad.jsonl"
    expects = []
    for line in bad_path.read_text(encoding="utf-8").split("\n"):
        if line.strip():
            try:
                rec = json.loads(line)
            except ValueError:
                rec = None
            expects.append(rec.get("expect") if isinstance(rec, dict) else None)
    bad = http_log_results(doc, bad_path)
    rep.add("selftest http-bad.jsonl: one result per line", len(bad) == len(expects),
            f"{len(bad)} results, {len(expects)} lines")
    for (n, label, why), exp in zip(bad, expects):
        name = f"selftest expects fail: http-bad.jsonl:{n} {label}"
        if why is None:
            rep.add(name, False, "was accepted")
        elif exp and exp not in why:
            rep.add(name, False, f"failed for another reason: {why} (expected {exp!r})")
        else:
            rep.add(name, True, f"rejected: {short(why, 120)}")

    # the project's own document answers for every status the C code can give (read from gateway/,
    # common/vx_http.c and the services' on_http; one line per answer in http-valerix.jsonl)
    real = contract.dir / "openapi.yaml"
    if real.exists():
        real_spec, real_res = openapi_doc_results(contract, real)
        fails = [f"{label}: {detail}" for label, ok, detail in real_res if not ok]
        rep.add(f"selftest {real.name} is valid", real_spec is not None and not fails, short("; ".join(fails)))
        if real_spec is not None:
            for n, label, why in http_log_results(OpenAPIDoc(real_spec), FIXTURES / "http-valerix.jsonl"):
                rep.add(f"selftest {real.name} documents http-valerix.jsonl:{n} {label}", why is None, why or "")

    # broken documents, each made from the good one: (description, text or dict, expected)
    def mutate(fn):
        s = copy.deepcopy(spec)
        fn(s)
        return s

    get_one = lambda s: s["paths"]["/orders/{id}"]["get"]["responses"]["200"]
    created = lambda s: s["paths"]["/orders"]["post"]["responses"]["201"]
    text = mini.read_text(encoding="utf-8")
    broken = [
        ("OpenAPI 3.0", mutate(lambda s: s.update(openapi="3.0.3")), "declares OpenAPI 3.1"),
        ("response without description", mutate(lambda s: created(s).pop("description")), "description"),
        ("example breaks its schema", mutate(lambda s: created(s)["content"]["application/json"]["examples"]["one"]
                                             ["value"].update(quantity=0)), "minimum"),
        ("example integer written 7.5", mutate(lambda s: created(s)["content"]["application/json"]["examples"]["one"]
                                               ["value"].update(quantity=7.5)), "integer"),
        ("header example breaks its schema", mutate(lambda s: created(s)["headers"]["Location"].update(example="/x")),
         "does not match"),
        ("$ref to nowhere", mutate(lambda s: get_one(s)["content"]["application/json"]["schema"].update(
            {"$ref": "#/components/schemas/Nope"})), "Nope"),
        ("media type without example", mutate(lambda s: get_one(s)["content"]["application/json"].pop("example")),
         "needs an example"),
        ("x-unrouted without status codes", mutate(lambda s: s[UNROUTED].update({"unknown-path": {"nope": {}}})),
         "must map status codes"),
        ("duplicate key", text.replace("  title: mini\n", "  title: mini\n  title: again\n"), "duplicate key 'title'"),
        ("unquoted status code", text.replace('"400":', "400:"), "is not a string"),
        ("not YAML", text + "\n  : [\n", "readable YAML"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for i, (desc, content, expect) in enumerate(broken):
            p = Path(tmp) / f"broken-{i}.yaml"
            p.write_text(content if isinstance(content, str) else json.dumps(content, indent=1), encoding="utf-8")
            _, res = openapi_doc_results(contract, p)
            fails = [f"{label}: {detail}" for label, ok, detail in res if not ok]
            hit = [f for f in fails if expect in f]
            rep.add(f"selftest broken document fails: {desc}", bool(hit),
                    short(hit[0], 160) if hit else (f"failed for other reasons: {short('; '.join(fails), 160)}"
                                                     if fails else "was accepted") + f" (expected {expect!r})")
        empty = Path(tmp) / "empty.jsonl"
        empty.write_text("\n", encoding="utf-8")
        for sub_args, want_rc in [(["openapi", mini], 0),
                                  (["openapi", mini, FIXTURES / "http-good.jsonl"], 0),
                                  (["openapi", mini, FIXTURES / "http-bad.jsonl"], 1),
                                  (["openapi", mini, empty], 1),
                                  (["openapi", Path(tmp) / "broken-2.yaml"], 1)]:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                rc = main(["--schemas", str(contract.dir)] + [str(a) for a in sub_args])
            lines = out.getvalue().strip().split("\n")
            m = re.fullmatch(r"contract: (\d+) passed, (\d+) failed", lines[-1])
            ok = rc == want_rc and m is not None and (int(m.group(2)) > 0) == (want_rc != 0)
            names = " ".join(Path(a).name for a in sub_args[1:])
            rep.add(f"selftest exit status: validate.py openapi {names} -> {want_rc}", ok,
                    f"got {rc}, last line {lines[-1]!r}")


def cmd_selftest(contract: Contract, rep: Report) -> None:
    problem = format_checking_works()
    rep.add("format checker (date-time)", problem is None, problem or "")
    if contract.load_errors or contract.structure_errors:
        return                                  # already reported by main()

    # 1. good.jsonl: every line passes
    good = messages_results(contract, FIXTURES / "good.jsonl")
    rep.add("fixtures/good.jsonl is not empty", len(good) > 0)
    for label, ok, detail, _ in good:
        rep.add(f"selftest expects pass: {label}", ok, detail)

    # 2. bad.jsonl: every line fails, for the reason in its "expect" field
    bad = messages_results(contract, FIXTURES / "bad.jsonl")
    rep.add("fixtures/bad.jsonl is not empty", len(bad) > 0)
    for label, ok, detail, rec in bad:
        expect = rec.get("expect") if isinstance(rec, dict) else None
        if ok:
            rep.add(f"selftest expects fail: {label}", False, "was accepted")
        elif expect and expect not in detail:
            rep.add(f"selftest expects fail: {label}", False, f"failed for another reason: {detail} (expected {expect!r})")
        else:
            rep.add(f"selftest expects fail: {label}", True, f"rejected: {short(detail, 120)}")

    # 3. limits of the contract, generated
    for desc, topic, value, should_pass in boundary_cases(contract):
        why = contract.check_message(value, topic=topic)
        ok = (why is None) == should_pass
        verdict = "accepted" if why is None else f"rejected: {short(why, 100)}"
        rep.add(f"selftest limit: {desc} ({'valid' if should_pass else 'invalid'})", ok, verdict)

    # 4. markdown scanning: good docs pass, bad docs fail example by example, empty docs fail
    res = readme_results(contract, FIXTURES / "readme-good.md")
    rep.add("selftest readme-good.md has examples", len(res) >= 5, f"{len(res)} found")
    for label, ok, detail in res:
        rep.add(f"selftest expects pass: {label}", ok, detail)

    bad_md = FIXTURES / "readme-bad.md"
    expected = re.findall(r"<!-- expect-fail: (.*?) -->", bad_md.read_text(encoding="utf-8"))
    res = readme_results(contract, bad_md)
    rep.add("selftest readme-bad.md: one result per expect-fail marker", len(res) == len(expected),
            f"{len(res)} results, {len(expected)} markers")
    for (label, ok, detail), exp in zip(res, expected):
        if ok:
            rep.add(f"selftest expects fail: {label}", False, "was accepted")
        elif exp not in detail:
            rep.add(f"selftest expects fail: {label}", False, f"failed for another reason: {detail} (expected {exp!r})")
        else:
            rep.add(f"selftest expects fail: {label}", True, f"rejected: {short(detail, 120)}")

    res = readme_results(contract, FIXTURES / "readme-empty.md")
    rep.add("selftest readme-empty.md finds no examples (so `readme` would fail)", res == [], f"{len(res)} found")

    # 5. the openapi subcommand: documents, HTTP logs, exit status
    selftest_openapi(contract, rep)

    # 6. end to end: exit status and summary line of the command line entry point
    import contextlib
    import io
    for sub_args, want_rc in [(["messages", FIXTURES / "good.jsonl"], 0),
                              (["messages", FIXTURES / "bad.jsonl"], 1),
                              (["readme", FIXTURES / "readme-good.md"], 0),
                              (["readme", FIXTURES / "readme-bad.md"], 1),
                              (["readme", FIXTURES / "readme-empty.md"], 1)]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = main(["--schemas", str(contract.dir)] + [str(a) for a in sub_args])
        lines = out.getvalue().strip().split("\n")
        m = re.fullmatch(r"contract: (\d+) passed, (\d+) failed", lines[-1])
        ok = rc == want_rc and m is not None and (int(m.group(2)) > 0) == (want_rc != 0)
        rep.add(f"selftest exit status: validate.py {sub_args[0]} {Path(sub_args[1]).name} -> {want_rc}", ok,
                f"got {rc}, last line {lines[-1]!r}")


# --------------------------------------------------------------------------

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--schemas", type=Path, default=Path(os.environ.get("VX_SCHEMA_DIR", DEFAULT_SCHEMA_DIR)),
                    help="schema directory (default: <repo>/schemas)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("schemas", help="check the schema files and their examples")
    p = sub.add_parser("readme", help="check kcat producer lines and json message blocks in a markdown file")
    p.add_argument("file", type=Path)
    p = sub.add_parser("messages", help='check a JSONL file of {"topic": T, "value": MESSAGE} lines')
    p.add_argument("file", type=Path)
    p = sub.add_parser("openapi", help="check an OpenAPI 3.1 document, and an HTTP log against it")
    p.add_argument("file", type=Path)
    p.add_argument("httplog", type=Path, nargs="?",
                   help='JSONL of {"method": M, "path": P, "status": S[, "service": NAME]} lines')
    sub.add_parser("selftest", help="prove the validator accepts good and rejects bad fixtures")
    args = ap.parse_args(argv)

    rep = Report()
    contract = Contract(args.schemas)
    if args.cmd == "schemas":
        cmd_schemas(contract, rep)
    else:
        for rel, err in contract.load_errors + contract.structure_errors:
            rep.add(rel, False, err)
        if args.cmd == "readme":
            cmd_readme(contract, rep, args.file)
        elif args.cmd == "messages":
            cmd_messages(contract, rep, args.file)
        elif args.cmd == "openapi":
            cmd_openapi(contract, rep, args.file, args.httplog)
        else:
            cmd_selftest(contract, rep)
    return rep.finish()


if __name__ == "__main__":
    sys.exit(main())
