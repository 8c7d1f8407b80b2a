"""Open-loop HTTP load at a fixed rate, for benches/hydration.sh.

    python3 benches/rate.py HOST:PORT PATH RATE SECONDS [Header: value ...]

Sends RATE requests per second for SECONDS over 16 keep-alive connections,
each request at its scheduled time (latency is measured from the schedule,
so a stall is not hidden by the requests it delayed). Prints
"sent achieved_rate p50_ms p95_ms p99_ms ttfb_p95_ms errors", where ttfb is
the time to the first body byte.
"""
import http.client
import sys
import threading
import time

CONNS = 16


def main():
    hostport, path, rate, secs = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    headers = dict(h.split(": ", 1) for h in sys.argv[5:])
    host, port = hostport.rsplit(":", 1)
    total = int(rate * secs)
    start = time.perf_counter() + 0.2
    lat, ttfb, errors = [], [], [0]
    lock = threading.Lock()

    def worker(k):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        mine_lat, mine_ttfb, errs = [], [], 0
        for i in range(k, total, CONNS):
            due = start + i / rate
            now = time.perf_counter()
            if due > now:
                time.sleep(due - now)
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                first = resp.read(1)
                t1 = time.perf_counter()
                resp.read()
                t2 = time.perf_counter()
                if resp.status >= 400 or not first:
                    errs += 1
                mine_ttfb.append(t1 - due)
                mine_lat.append(t2 - due)
            except (OSError, http.client.HTTPException):
                errs += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
        with lock:
            lat.extend(mine_lat)
            ttfb.extend(mine_ttfb)
            errors[0] += errs

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(CONNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start

    def pct(xs, p):
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1e3 if xs else float("nan")

    print(f"{len(lat)} {len(lat) / elapsed:.0f} {pct(lat, 50):.3f} {pct(lat, 95):.3f} "
          f"{pct(lat, 99):.3f} {pct(ttfb, 95):.3f} {errors[0]}")


main()
