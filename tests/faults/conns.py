#!/usr/bin/env python3
"""conns.py: the connection faults of tests/faults/faults.sh, against a running gateway.

  conns.py flood ADDR PID IDLE SLOW IDLE_TIMEOUT_S BODY_TIMEOUT_MS
      IDLE TCP connections that send nothing and SLOW clients that send a POST /orders's headers
      and then trickle its body a byte every 200 ms; then a well-behaved POST /orders must be
      answered; the gateway's RSS (PID's VmRSS) before, with them open, and after they are gone;
      every trickler must be cut by the gateway within BODY_TIMEOUT_MS (+ slack) and every idle
      connection within IDLE_TIMEOUT_S (+ slack), without an answer.
  conns.py limit ADDR LIMIT IDLE_TIMEOUT_S
      LIMIT + 50 idle connections, more than the gateway takes: a new request waits unanswered (the
      gateway accepts nothing more; connections queue in the kernel's listen backlog); once the idle
      ones are closed, a request is answered again within IDLE_TIMEOUT_S (+ slack).

Prints one JSON object of figures on stdout; exits 1 with the reason on stderr when an expectation
fails. Every wait is bounded. Python's standard library only.
"""
import http.client
import json
import resource
import selectors
import socket
import sys
import threading
import time

ORDER = json.dumps({"customer_id": "fault-conns", "items": [{"product_id": "FAULT-NONE", "quantity": 1}]})


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def connect(host, port):
    s = socket.create_connection((host, port), timeout=5)
    s.setblocking(False)
    return s


def post(host, port, key, timeout=15):
    """A well-behaved POST /orders: (status, seconds, body) or (None, seconds, error)."""
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection(host, port, timeout=timeout)
        c.request("POST", "/orders", ORDER, {"Content-Type": "application/json", "Idempotency-Key": key})
        r = c.getresponse()
        body = r.read().decode(errors="replace")
        c.close()
        return r.status, time.monotonic() - t0, body
    except (OSError, http.client.HTTPException) as e:
        return None, time.monotonic() - t0, "%s: %s" % (type(e).__name__, e)


def wait_closed(socks, limit_s):
    """Waits until the peer closed each socket (EOF or reset), at most limit_s. Returns the seconds
    each took from now (None: still open) in the order of socks."""
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    when = [None] * len(socks)
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    left = len(socks)
    while left and time.monotonic() - t0 < limit_s:
        for key, _ in sel.select(timeout=0.5):
            i = key.data
            try:
                data = socks[i].recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                continue  # an answer: noted by the caller's expectations (idle ones get none)
            when[i] = time.monotonic() - t0
            sel.unregister(socks[i])
            left -= 1
    sel.close()
    return when


def fail(msg, figures):
    print(json.dumps(figures))
    sys.stderr.write("conns.py: %s\n" % msg)
    sys.exit(1)


def flood(addr, pid, nidle, nslow, idle_timeout_s, body_timeout_ms):
    host, port = addr.rsplit(":", 1)
    port = int(port)
    raise_fd_limit()
    fig = {"idle": nidle, "slow": nslow, "rss_before_kib": rss_kib(pid)}
    idle = [connect(host, port) for _ in range(nidle)]
    slow = []
    for _ in range(nslow):
        s = connect(host, port)
        s.setblocking(True)
        s.sendall(("POST /orders HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                   "Idempotency-Key: fault-slow\r\nContent-Length: 100000\r\n\r\n{" % addr).encode())
        s.setblocking(False)
        slow.append(s)
    t_slow = time.monotonic()
    stop = threading.Event()
    cut = [None] * nslow

    def trickle():
        while not stop.is_set():
            for i, s in enumerate(slow):
                if cut[i] is not None:
                    continue
                try:
                    if s.send(b" ") == 0:
                        raise OSError("closed")
                except BlockingIOError:
                    pass
                except OSError:
                    cut[i] = time.monotonic() - t_slow
            stop.wait(0.2)

    th = threading.Thread(target=trickle, daemon=True)
    th.start()
    time.sleep(1.0)
    fig["rss_open_kib"] = rss_kib(pid)
    status, secs, body = post(host, port, "fault-conns-%d" % int(time.time() * 1000))
    fig["post_status"], fig["post_ms"] = status, round(secs * 1000)
    if status is None or status >= 500:
        stop.set()
        fail("a well-behaved POST /orders beside %d idle and %d slow connections got %s: %s"
             % (nidle, nslow, status, body[:200]), fig)
    # The tricklers: cut by the gateway within the body timeout (a write fails once it closed).
    deadline = time.monotonic() + body_timeout_ms / 1000.0 + 5
    while None in cut and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    th.join()
    fig["slow_cut_s_max"] = round(max(c for c in cut if c is not None), 1) if any(c is not None for c in cut) else None
    if None in cut:
        fail("%d of %d trickling clients were still open %.1f s after their headers (body timeout %d ms)"
             % (cut.count(None), nslow, time.monotonic() - t_slow, body_timeout_ms), fig)
    # The idle ones: closed by the gateway, unanswered, within the idle timeout.
    when = wait_closed(idle, idle_timeout_s + 10)
    fig["idle_closed"] = sum(w is not None for w in when)
    fig["idle_closed_s_max"] = round(max(w for w in when if w is not None), 1) if fig["idle_closed"] else None
    for s in idle + slow:
        s.close()
    time.sleep(0.5)
    fig["rss_after_kib"] = rss_kib(pid)
    if fig["idle_closed"] != nidle:
        fail("%d of %d idle connections were not closed by the gateway within %d s"
             % (nidle - fig["idle_closed"], nidle, idle_timeout_s + 10), fig)
    status, secs, body = post(host, port, "fault-conns-after-%d" % int(time.time() * 1000))
    fig["post_after_status"] = status
    if status is None or status >= 500:
        fail("POST /orders after the flood got %s: %s" % (status, body[:200]), fig)
    print(json.dumps(fig))


def limit(addr, lim, idle_timeout_s):
    host, port = addr.rsplit(":", 1)
    port = int(port)
    raise_fd_limit()
    fig = {"limit": lim, "idle": lim + 50}
    idle = []
    for _ in range(lim + 50):
        try:
            idle.append(connect(host, port))
        except OSError:
            break  # the listen backlog is full: past the limit either way
    time.sleep(1.0)
    # Past the limit the gateway accepts nothing more: the connections wait in the kernel's backlog,
    # none is answered or closed.
    when = wait_closed(idle, 2)
    fig["closed_by_gateway"] = sum(w is not None for w in when)
    status, secs, body = post(host, port, "fault-limit-%d" % int(time.time() * 1000), timeout=5)
    fig["at_limit"] = {"status": status, "ms": round(secs * 1000), "error": None if status else body}
    for s in idle:
        s.close()
    t0 = time.monotonic()
    while True:  # a slot frees when a connection ends: at once, or by the idle timeout at worst
        status, secs, body = post(host, port, "fault-limit-after-%d" % int(time.time() * 1000), timeout=2)
        if status is not None or time.monotonic() - t0 > idle_timeout_s + 10:
            break
        time.sleep(0.5)
    fig["after"] = {"status": status, "answered_after_s": round(time.monotonic() - t0, 1)}
    if fig["at_limit"]["status"] is not None:
        fail("a request past the connection limit was answered %s: the limit did not hold" % status, fig)
    if status is None or status >= 500:
        fail("once the idle connections were gone, POST /orders got %s: %s" % (status, body[:200]), fig)
    print(json.dumps(fig))


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) == 7 and a[0] == "flood":
        flood(a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]), int(a[6]))
    elif len(a) == 4 and a[0] == "limit":
        limit(a[1], int(a[2]), int(a[3]))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)
