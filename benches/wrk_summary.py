"""Summarises `wrk --latency` output for the scripts in benches/.

    python3 benches/wrk_summary.py FILE

Prints "req/s MB/s p50_ms p99_ms non2xx".
"""
import re
import sys

t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", t)
mbs = float(m.group(1)) * {"B": 1e-6, "KB": 1e-3, "MB": 1, "GB": 1e3}[m.group(2)]


def lat(p):
    v = re.search(rf"\s{p}%\s+([\d.]+)(\w+)", t)
    return float(v.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[v.group(2)]


bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
print(f"{rps:.0f} {mbs:.1f} {lat(50):.3f} {lat(99):.3f} {bad.group(1) if bad else 0}")
