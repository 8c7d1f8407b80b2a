"""Times scrapes of a node's health plane, for benches/scrape.sh.

    python3 benches/scrape_probe.py HOST:PORT COUNT

Sends COUNT pairs of `GET /metrics` and `GET /healthz` (the peer: the
same listener and connection handling with a trivial body), one pair every
20 ms, each over its own keep-alive connection, on raw sockets so the
client adds as little as it can: a sample is the time from sending the
request to holding the whole response. Also reads the node's own
`request_latency_seconds{route="/metrics"}` histogram before and after, so
the server-side time of the same scrapes is known: the share of them done
within 1 ms and within 2.5 ms. Prints
"metrics_p50_ms metrics_p99_ms healthz_p50_ms healthz_p99_ms metrics_bytes
errors server_le_1ms_pct server_le_2.5ms_pct".
"""
import socket
import sys
import time


class Conn:
    """One keep-alive HTTP/1.1 connection that reads Content-Length bodies."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def get(self, path):
        """Returns (status, body)."""
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            self.recv()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        while len(self.buf) < length:
            self.recv()
        body, self.buf = self.buf[:length], self.buf[length:]
        return status, body

    def recv(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise OSError("connection closed")
        self.buf += chunk


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1e3


def server_buckets(conn):
    """Cumulative counts of the node's /metrics latency histogram, by le."""
    _, body = conn.get("/metrics")
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("request_latency_seconds_bucket{") and 'route="/metrics"' in line:
            le = line.split('le="', 1)[1].split('"', 1)[0]
            out[le] = float(line.rsplit(" ", 1)[1])
    return out


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    count = int(sys.argv[2])
    conns = {p: Conn(host, int(port)) for p in ("/metrics", "/healthz")}
    lat = {p: [] for p in conns}
    size, errors = 0, 0
    before = server_buckets(conns["/metrics"])
    for _ in range(count):
        for path in conns:
            t0 = time.perf_counter()
            try:
                status, body = conns[path].get(path)
                ok = status == 200
            except (OSError, ValueError, IndexError):
                ok = False
                conns[path] = Conn(host, int(port))
            t1 = time.perf_counter()
            if ok:
                lat[path].append(t1 - t0)
                if path == "/metrics":
                    size = len(body)
            else:
                errors += 1
        time.sleep(0.02)
    after = server_buckets(conns["/metrics"])
    # The snapshot scrape itself is counted once in the difference.
    d = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = d.get("+Inf", 0) or 1
    le1, le25 = 100 * d.get("0.001", 0) / total, 100 * d.get("0.0025", 0) / total
    m, h = lat["/metrics"], lat["/healthz"]
    if not m or not h:
        print(f"0 0 0 0 0 {errors} 0 0")
        return
    print(f"{pct(m, .5):.3f} {pct(m, .99):.3f} {pct(h, .5):.3f} {pct(h, .99):.3f} {size} {errors} "
          f"{le1:.1f} {le25:.1f}")


main()
