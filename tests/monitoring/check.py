#!/usr/bin/env python3
"""check.py: the monitoring of deploy/monitoring/, checked against real parts (`make monitoring`, in
`make test`). Run with the contract checks' venv: PY=$(tests/contract/setup.sh) && $PY tests/monitoring/check.py

On a stack of its own (databases inventory_mon and orders_mon recreated, topics mon.<run>.*, ports
18491-18493, the shared Kafka broker and PostgreSQL server of deploy/stack.sh up) it:
  1. checks the Prometheus configuration and the alert rules (promtool check config / check rules) and
     runs their unit tests (promtool test rules deploy/monitoring/alerts.test.yml);
  2. starts the three services and a real Prometheus (Debian's package) scraping them every second;
  3. sends a known mix of commands straight to Kafka and orders through the gateway, and checks that
     the counters moved by exactly what was sent (applied, duplicate, rejected, dead-lettered);
  4. runs `promtool check metrics` on every service's /metrics: no finding allowed;
  5. runs every expression of the dashboard and every query the alert rules are made of (without their
     thresholds: a healthy stack raises no alert) through Prometheus' HTTP API: each must return data;
  6. wedges inventory-svc's loop for real (a crash point armed to stall 8 s, through /admin/chaos) and
     sees /health answer 503 saying why, and 200 again once the loop turns.
Every failure is printed; the exit status is 1 when there was any. Nothing is skipped silently: a part
that cannot start is a failure.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(os.environ.get("VX_DATA_DIR", os.path.join(REPO, "var")), "monitoring")
BROKER = "127.0.0.1:" + os.environ.get("VX_BROKER_PORT", "9092")
PG = "postgresql://valerix@127.0.0.1:" + os.environ.get("VX_PG_PORT", "55432")
ADDR = {"inventory-svc": "127.0.0.1:18491", "order-svc": "127.0.0.1:18492", "gateway": "127.0.0.1:18493"}
PROM = "127.0.0.1:18490"
RUN = time.strftime("%Y%m%d%H%M%S")
TOPIC = {t: "mon.%s.%s" % (RUN, t) for t in
         ("inventory.commands", "inventory.events", "inventory.dlq", "orders.commands", "orders.results", "orders.dlq")}

failures = []
procs = {}
TOKEN = "mon-%s-%d" % (RUN, os.getpid())


def say(msg):
    print("monitoring: " + msg, flush=True)


def fail(msg):
    failures.append(msg)
    print("monitoring: FAIL " + msg, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def psql(db, sql):
    r = run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "%s/%s" % (PG, db), "-c", sql])
    if r.returncode:
        raise RuntimeError("psql %s: %s" % (db, r.stderr.strip()))
    return r.stdout.strip()


def http(addr, path, method="GET", body=None, headers=None, timeout=10):
    req = urllib.request.Request("http://%s%s" % (addr, path), method=method, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait(what, pred, secs=60):
    end = time.time() + secs
    while time.time() < end:
        try:
            if pred():
                return True
        except (OSError, RuntimeError, ValueError):
            pass
        time.sleep(0.25)
    fail("timed out after %d s waiting for %s" % (secs, what))
    return False


def port_free(addr):
    host, port = addr.split(":")
    with socket.socket() as s:
        return s.connect_ex((host, int(port))) != 0


def start(name, exe, env):
    log = open(os.path.join(DATA, name + ".log"), "w")
    procs[name] = subprocess.Popen([exe], env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop_all():
    for name, p in procs.items():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for name, p in procs.items():
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()


def kcat(topic, lines):
    r = run(["kcat", "-P", "-b", BROKER, "-t", topic, "-K", "|"], input="".join(l + "\n" for l in lines))
    if r.returncode:
        raise RuntimeError("kcat: " + r.stderr)


def scrape(name):
    status, text = http(ADDR[name], "/metrics")
    if status != 200:
        raise RuntimeError("%s /metrics answered %d" % (name, status))
    return text


def sample(text, metric, **labels):
    """The value of one series in exposition text, 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != metric:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()) and len(got) == len(labels):
            return float(m.group(3))
    return 0.0


def query(expr):
    q = urllib.parse.urlencode({"query": expr})
    status, body = http(PROM, "/api/v1/query?" + q)
    if status != 200:
        return None, "HTTP %d: %s" % (status, body[:200])
    data = json.loads(body)
    if data.get("status") != "success":
        return None, data.get("error")
    return data["data"]["result"], None


def alert_parts(expr):
    """The queries an alert is made of, each without its comparisons with a number: an alert is quiet
    on a healthy stack, but every series it watches must be there."""
    parts = re.split(r'\b(?:and|unless|or)\b', expr)
    return [re.sub(r'\s*(==|!=|>=|<=|>|<)\s*[0-9.]+', "", p).strip() for p in parts]


def main():
    os.makedirs(DATA, exist_ok=True)
    for tool in ("prometheus", "promtool", "kcat", "psql"):
        if not shutil.which(tool):
            fail("%s is not installed (deploy/stack.sh deps installs it)" % tool)
    if failures:
        return 1
    mon = os.path.join(REPO, "deploy", "monitoring")

    # 1. configuration and rules
    for cmd in (["promtool", "check", "config", os.path.join(mon, "prometheus.yml")],
                ["promtool", "check", "config", os.path.join(mon, "prometheus-compose.yml")],
                ["promtool", "check", "rules", os.path.join(mon, "alerts.yml")],
                ["promtool", "test", "rules", os.path.join(mon, "alerts.test.yml")]):
        r = run(cmd)
        if r.returncode:
            fail("%s: %s%s" % (" ".join(cmd[1:3]), r.stdout, r.stderr))
        else:
            say("%s: ok" % " ".join(cmd[1:]))

    # 2. a stack of its own and a Prometheus scraping it
    for a in list(ADDR.values()) + [PROM]:
        if not port_free(a):
            fail("%s is taken: another check running?" % a)
            return 1
    for db in ("inventory_mon", "orders_mon"):
        psql("postgres", "DROP DATABASE IF EXISTS %s WITH (FORCE)" % db)
        psql("postgres", "CREATE DATABASE %s" % db)
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=BROKER, VX_LOG_LEVEL="info",
               INVENTORY_DB=PG + "/inventory_mon", ORDERS_DB=PG + "/orders_mon",
               INVENTORY_HTTP_ADDR=ADDR["inventory-svc"], ORDERS_HTTP_ADDR=ADDR["order-svc"],
               GATEWAY_HTTP_ADDR=ADDR["gateway"], ORDERS_URL="http://" + ADDR["order-svc"],
               INVENTORY_URL="http://" + ADDR["inventory-svc"], INVENTORY_GROUP_ID="mon.%s.inventory-svc" % RUN,
               ORDERS_GROUP_ID="mon.%s.order-svc" % RUN)
    for t, name in TOPIC.items():
        env[t.upper().replace(".", "_") + "_TOPIC"] = name
    for k in ("VX_CRASH_POINTS", "VX_GREMLIN_DELAY_MS"):
        env.pop(k, None)
    env["VX_CHAOS_TOKEN"] = TOKEN
    env["VX_LIVENESS_MS"] = "2000"
    for name in ("inventory-svc", "order-svc", "gateway"):
        start(name, os.path.join(REPO, "build", name), env)
        if not wait("%s /ready" % name, lambda: http(ADDR[name], "/ready", timeout=2)[0] == 200):
            return 1
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "rule_files": [os.path.join(mon, "alerts.yml")],
           "scrape_configs": [{"job_name": "valerix-" + n, "static_configs": [{"targets": [a], "labels": {"service": n}}]}
                              for n, a in ADDR.items()]}
    with open(os.path.join(DATA, "prometheus.yml"), "w") as f:
        yaml.safe_dump(cfg, f)
    shutil.rmtree(os.path.join(DATA, "tsdb"), ignore_errors=True)
    procs["prometheus"] = subprocess.Popen(
        ["prometheus", "--config.file=" + os.path.join(DATA, "prometheus.yml"),
         "--storage.tsdb.path=" + os.path.join(DATA, "tsdb"), "--web.listen-address=" + PROM],
        stdout=open(os.path.join(DATA, "prometheus.log"), "w"), stderr=subprocess.STDOUT)
    if not wait("Prometheus /-/ready", lambda: http(PROM, "/-/ready", timeout=2)[0] == 200):
        return 1
    say("stack up: %s; Prometheus on %s" % (", ".join("%s %s" % kv for kv in ADDR.items()), PROM))

    # 3. a known mix, and counters that moved by exactly that much
    inv = TOPIC["inventory.commands"]
    restock = ['r%d|{"type":"Restock","idempotency_key":"mon-r%d","product_id":"M-%d","quantity":10,"name":"M %d"}'
               % (i, i, i, i) for i in range(3)]
    reserve = ['o%d|{"type":"ReserveStock","idempotency_key":"mon-res%d","order_id":"o%d","items":[{"product_id":"M-%d","quantity":2}]}'
               % (i, i, i, i % 3) for i in range(4)]
    beyond = ['x%d|{"type":"ReserveStock","idempotency_key":"mon-big%d","order_id":"x%d","items":[{"product_id":"M-0","quantity":500}]}'
              % (i, i, i) for i in range(2)]
    kcat(inv, restock)
    wait("the restocks", lambda: sample(scrape("inventory-svc"), "valerix_messages_consumed_total",
                                        topic=inv, type="Restock", outcome="applied") == 3)
    kcat(inv, reserve + beyond + reserve[:2] + ["bad|{not json", 'odd|{"type":"Teleport","idempotency_key":"k"}'])
    want = {("Restock", "applied"): 3, ("ReserveStock", "applied"): 4, ("ReserveStock", "rejected"): 2,
            ("ReserveStock", "duplicate"): 2, ("unknown", "dead_lettered"): 2}
    wait("13 inventory commands counted", lambda: sum(
        sample(scrape("inventory-svc"), "valerix_messages_consumed_total", topic=inv, type=t, outcome=o)
        for (t, o) in want) == 13)
    text = scrape("inventory-svc")
    for (t, o), n in want.items():
        got = sample(text, "valerix_messages_consumed_total", topic=inv, type=t, outcome=o)
        if got != n:
            fail("valerix_messages_consumed_total{type=%s,outcome=%s}: %g, want %d" % (t, o, got, n))
    for reason, n in (("not_json", 1), ("unknown_type", 1)):
        got = sample(text, "valerix_dead_letters_total", topic=inv, reason=reason)
        if got != n:
            fail("valerix_dead_letters_total{reason=%s}: %g, want %d" % (reason, got, n))
    say("inventory-svc counted the mix exactly: %s" % ", ".join("%s %s %d" % (t, o, n) for (t, o), n in want.items()))

    # orders through the gateway: confirmed, rejected, refused; a poison command straight to Kafka
    def post(key, body):
        return http(ADDR["gateway"], "/orders", "POST", json.dumps(body).encode(),
                    {"Content-Type": "application/json", "Idempotency-Key": key})[0]
    codes = [post("mon-o%d" % i, {"customer_id": "c", "items": [{"product_id": "M-1", "quantity": 1}]}) for i in range(3)]
    codes.append(post("mon-big", {"customer_id": "c", "items": [{"product_id": "M-2", "quantity": 900}]}))
    codes.append(post("mon-bad", {"customer_id": "c", "items": []}))
    if codes != [201, 201, 201, 409, 400]:
        fail("POST /orders answered %s, want [201, 201, 201, 409, 400]" % codes)
    kcat(TOPIC["orders.commands"], ['p|{"type":"PlaceOrder","idempotency_key":"mon-kafka","customer_id":"c",'
                                    '"items":[{"product_id":"M-1","quantity":1}]}', "poison|[1,2]"])
    ocmd = TOPIC["orders.commands"]
    wait("order-svc's counts", lambda: sample(scrape("order-svc"), "valerix_orders_final_total", status="CONFIRMED") == 4)
    text = scrape("order-svc")
    for (t, o, n) in (("PlaceOrder", "applied", 5), ("unknown", "dead_lettered", 1)):
        got = sample(text, "valerix_messages_consumed_total", topic=ocmd, type=t, outcome=o)
        if got != n:
            fail("order-svc valerix_messages_consumed_total{type=%s,outcome=%s}: %g, want %d" % (t, o, got, n))
    for status, n in (("CONFIRMED", 4), ("REJECTED", 1)):
        got = sample(text, "valerix_orders_final_total", status=status)
        if got != n:
            fail("valerix_orders_final_total{status=%s}: %g, want %d" % (status, got, n))
    got = sample(scrape("gateway"), "valerix_http_responses_total", route="POST /orders", code="201")
    if got != 3:
        fail('valerix_http_responses_total{route="POST /orders",code="201"}: %g, want 3' % got)
    say("order-svc and the gateway counted exactly: 5 PlaceOrders applied, 4 CONFIRMED, 1 REJECTED, 1 dead letter")
    # every service's clients report their requests (librdkafka statistics, once a second)
    for name in ADDR:
        for client, req in (("producer", "Produce"), ("consumer", "Fetch")):
            wait("%s's %s requests" % (name, req),
                 lambda: sample(scrape(name), "valerix_kafka_requests_total", client=client, request=req) > 0)
    say("every service counts its Produce and Fetch requests (valerix_kafka_requests_total)")

    # 4. promtool check metrics on every service
    for name in ADDR:
        r = run(["promtool", "check", "metrics"], input=scrape(name))
        if r.returncode or r.stdout.strip() or r.stderr.strip():
            fail("promtool check metrics on %s: %s%s" % (name, r.stdout, r.stderr))
        else:
            say("promtool check metrics %s: clean" % name)

    # 5. every expression of the dashboard and the alerts, against the real Prometheus
    time.sleep(12)  # rate() over [1m] needs two scrapes in the window; 1 s interval, margin for a busy machine
    exprs = []
    dash = json.load(open(os.path.join(mon, "grafana", "dashboards", "valerix.json")))
    for p in dash["panels"]:
        for t in p.get("targets", []):
            exprs.append(("panel %r" % p["title"], t["expr"]))
    for g in yaml.safe_load(open(os.path.join(mon, "alerts.yml")))["groups"]:
        for rule in g["rules"]:
            exprs += [("alert %s" % rule["alert"], q) for q in alert_parts(rule["expr"])]
    for what, expr in exprs:
        result, err = None, None
        end = time.time() + 30
        while time.time() < end:
            result, err = query(expr)
            if result:
                break
            time.sleep(1)
        if err:
            fail("%s: %s: %s" % (what, expr, err))
        elif not result:
            fail("%s returns no data: %s" % (what, expr))
    say("%d expressions of the dashboard and the alert rules run against Prometheus: %d without data"
        % (len(exprs), sum(1 for f in failures if "returns no data" in f)))

    # 6. liveness that means progress: a loop that really stalls
    inv_addr = ADDR["inventory-svc"]
    status, body = http(inv_addr, "/admin/chaos", "POST",
                        json.dumps({"crash_points": "after_publish_before_offset_commit~8000"}).encode(),
                        {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    if status != 200:
        fail("arming the stall: %d %s" % (status, body))
        return 1
    kcat(inv, ['w|{"type":"Restock","idempotency_key":"mon-wedge","product_id":"M-0","quantity":1}'])
    seen = {}

    def health_is(code):
        st, b = http(inv_addr, "/health", timeout=3)
        seen[code] = b
        return st == code
    if wait("/health 503 while the loop stalls", lambda: health_is(503), 30):
        doc = json.loads(seen[503])
        if doc.get("status") != "wedged" or doc.get("loop", {}).get("last_turn_ms_ago", 0) <= 2000:
            fail("/health while wedged says: %s" % seen[503])
        else:
            say("/health while the loop stalls: 503 %s" % seen[503][:120])
    http(inv_addr, "/admin/chaos", "POST", json.dumps({"crash_points": ""}).encode(),
         {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"})
    if wait("/health 200 once the loop turns again", lambda: health_is(200), 30):
        say("/health once the loop turns again: 200")
    return 1 if failures else 0


if __name__ == "__main__":
    rc = 1
    try:
        rc = main()
    except Exception as e:  # a part that cannot start is a failure, said plainly
        fail("%s: %s" % (type(e).__name__, e))
    finally:
        stop_all()
    print("monitoring: %s" % ("PASS" if rc == 0 and not failures else "FAIL (%d)" % len(failures)), flush=True)
    sys.exit(0 if rc == 0 and not failures else 1)
