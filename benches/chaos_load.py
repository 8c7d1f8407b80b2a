"""Closed-loop load for benches/chaos.sh: CLIENTS keep-alive clients GET
PATH back to back for SECONDS; a client that is shed (503) waits SHED_WAIT
seconds before its next request (a well-behaved client honours
Retry-After; the wait is shortened so the drill stays short). Meanwhile
/readyz at HEALTH is polled every 50 ms; after the load stops, until it
answers 200 again (at most 30 s).

    python3 benches/chaos_load.py HOST:PORT PATH CLIENTS SECONDS HEALTH [SHED_WAIT]

Prints one JSON object: requests by status; p50/p95/p99 (ms) of the
admitted (2xx) and of the shed (503) requests; the share of /readyz
polls that were 503 during the load; and how long /readyz took to turn
200 after the load stopped.
"""
import http.client
import json
import sys
import threading
import time


def pct(xs, p):
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1e3, 3) if xs else None


def main():
    hostport, path, clients, secs, health = sys.argv[1:6]
    shed_wait = float(sys.argv[6]) if len(sys.argv) > 6 else 0.1
    host, port = hostport.rsplit(":", 1)
    clients, secs = int(clients), float(secs)
    end = time.perf_counter() + secs
    lock = threading.Lock()
    by_status, admitted, shed = {}, [], []

    def client():
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        mine = []
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                status = 0
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            mine.append((status, time.perf_counter() - t0))
            if status == 503:
                time.sleep(shed_wait)
        with lock:
            for status, d in mine:
                by_status[status] = by_status.get(status, 0) + 1
                (admitted if 200 <= status < 300 else shed if status == 503 else []).append(d)

    hhost, hport = health.rsplit(":", 1)

    def readyz():
        c = http.client.HTTPConnection(hhost, int(hport), timeout=5)
        c.request("GET", "/readyz")
        r = c.getresponse()
        r.read()
        c.close()
        return r.status

    polls = []

    def poller():
        while time.perf_counter() < end:
            polls.append(readyz())
            time.sleep(0.05)

    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=poller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stopped = time.perf_counter()
    recovered = None
    while time.perf_counter() - stopped < 30:
        if readyz() == 200:
            recovered = round(time.perf_counter() - stopped, 3)
            break
        time.sleep(0.05)
    total = sum(by_status.values())
    print(json.dumps({
        "clients": clients,
        "seconds": secs,
        "requests": total,
        "by_status": {str(k): v for k, v in sorted(by_status.items())},
        "admitted_ms": {"p50": pct(admitted, 50), "p95": pct(admitted, 95), "p99": pct(admitted, 99)},
        "shed_ms": {"p50": pct(shed, 50), "p95": pct(shed, 95), "p99": pct(shed, 99)},
        "readyz_503_share": round(polls.count(503) / len(polls), 3) if polls else None,
        "readyz_recovered_after_s": recovered,
    }))


main()
