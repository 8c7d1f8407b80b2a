#!/usr/bin/env python3
"""Records the runbook's chaos drills on a live node and writes promtool
rule tests from what its /metrics said, so the alerts are tested on the
series a drill really produces, not on invented ones.

    python3 packaging/prometheus/drills.py MACRONODE OUT.yml

MACRONODE is a built binary (every role, `ctl` included). The script
starts it in a temporary directory with `chaos.enabled = true`, and runs
each drill in three phases — baseline traffic, the same traffic under an
injected fault (`macronode ctl chaos inject`), the same traffic after
`chaos clear` — scraping /metrics at each phase's end. A phase's counter
and bucket increments (and its gauges' values) are then replayed once a
minute: 10 minutes of baseline, 20 of fault, 20 after. Each drill's test
expects its alert silent at the end of the baseline, firing at the end of
the fault and resolved at the end of the after phase; so does
ChaosDrillActive, from `chaos_faults_active`.

packaging/check.sh runs it on every CI run and then `promtool test rules`
on OUT; packaging/prometheus/drills.rules.test.yml is one such recording,
kept to show what the drills produce (it is tested too).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "macronode.rules.yml")
BASE, FAULT, AFTER = 10, 20, 20  # minutes each phase is replayed


def http(method, url, body=None, timeout=30):
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class Node:
    def __init__(self, binary, work):
        self.binary, self.work = binary, work
        keys = os.path.join(work, "keys")
        out = self.ctl("registry", "keygen", "--signer", "s0", "--keys", keys, json_out=True)
        public = out["public_key"]
        self.keys = keys
        config = os.path.join(work, "node.toml")
        listeners = "".join(
            f'[{s}]\naddr = "127.0.0.1:0"\n' for s in ["metrics", "admin", "overlay", "registry", "storage", "index", "mailbox"]
        )
        with open(config, "w") as f:
            f.write(
                f'data_dir = "{work}/data"\n'
                f"{listeners}"
                '[omnigate]\naddr = "127.0.0.1:0"\ninflight_max = 8\n'
                "[chaos]\nenabled = true\n"
                f'[[registry.signers]]\nid = "s0"\npublic_key = "{public}"\n'
            )
        self.log = os.path.join(work, "node.log")
        env = dict(os.environ, RON_CONFIG="")
        self.proc = subprocess.Popen(
            [binary, "run", "--config", config],
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.addrs = self.wait_ready()

    def wait_ready(self):
        end = time.time() + 300
        while time.time() < end:
            if self.proc.poll() is not None:
                sys.exit(f"the node exited:\n{open(self.log).read()}")
            for line in open(self.log):
                try:
                    v = json.loads(line)
                except ValueError:
                    continue
                if v.get("ready") == 1:
                    return json.loads(v["addrs"])
            time.sleep(0.1)
        sys.exit(f"the node never became ready:\n{open(self.log).read()}")

    def url(self, listener, path):
        return f"http://{self.addrs[listener]}{path}"

    def ctl(self, *args, json_out=False):
        extra = []
        if hasattr(self, "addrs"):
            extra = ["--admin", self.url("admin", ""), "--url", self.url("omnigate", "")]
        cmd = [self.binary, "ctl", *extra, *(["--json"] if json_out else []), *args]
        r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RON_CONFIG=""))
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
        return json.loads(r.stdout) if json_out else r.stdout

    def scrape(self):
        status, body = http("GET", self.url("metrics", "/metrics"))
        assert status == 200, status
        series = {}
        for line in body.decode().splitlines():
            if not line or line.startswith("#"):
                continue
            name, value = line.rsplit(" ", 1)
            series[name] = float(value)
        return series

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def put(node, data):
    status, body = http("PUT", node.url("omnigate", "/v1/o"), data)
    assert status in (200, 201), (status, body)
    return json.loads(body)["address"]


# ---------------------------------------------------------------- drills
# Each: (name, alert, metric names its alert reads, fault, setup, traffic).
# `traffic(node, ctx, phase)` runs one phase's requests; it may return a
# scrape taken while the phase's load was still running (gauges).


def hydration_setup(node):
    address = put(node, b"drill object " * 100)
    status, body = http(
        "PUT",
        node.url("omnigate", "/v1/names/drill/view"),
        json.dumps({"address": address}).encode(),
    )
    assert status in (200, 201), (status, body)
    return {}


def hydration_traffic(node, ctx, phase):
    for _ in range(20):
        status, _ = http("GET", node.url("omnigate", "/v1/view/drill/view"))
        assert status == 200, status


def commit_setup(node):
    return {"n": 0}


def commit_traffic(node, ctx, phase):
    reg = ["registry", "--registry", node.url("registry", "")]
    for _ in range(2):
        ctx["n"] += 1
        f = os.path.join(node.work, f"payload-{ctx['n']}.json")
        with open(f, "w") as out:
            json.dump({"items": [{"region": {"id": f"r{ctx['n']}", "name": "drill", "parent": None}}]}, out)
        p = node.ctl(*reg, "propose", f, json_out=True)
        node.ctl(*reg, "approve", p["proposal_id"], "--signer", "s0", "--keys", node.keys)
        node.ctl(*reg, "commit", p["proposal_id"])


def errors_setup(node):
    return {"address": put(node, b"errors drill")}


def errors_traffic(node, ctx, phase):
    for _ in range(200):
        status, body = http("GET", node.url("omnigate", f"/v1/o/{ctx['address']}"))
        assert status in (200, 502), (status, body)


def bus_setup(node):
    return {"n": 0}


def bus_traffic(node, ctx, phase):
    # Each stored object is an event for the bus's subscribers.
    for _ in range(20):
        ctx["n"] += 1
        put(node, f"bus drill {ctx['n']}".encode())


def overload_setup(node):
    return {"address": put(node, b"overload drill")}


def overload_traffic(node, ctx, phase):
    if phase != "fault":
        for _ in range(20):
            http("GET", node.url("omnigate", f"/v1/o/{ctx['address']}"))
        return None
    # Twice the in-flight cap (8) of clients, until /readyz turns 503 (at
    # most 30 s); the scrape is taken while the load still runs.
    stop = threading.Event()

    def client():
        end = time.time() + 60
        while not stop.is_set() and time.time() < end:
            http("GET", node.url("omnigate", f"/v1/o/{ctx['address']}"))

    clients = [threading.Thread(target=client) for _ in range(16)]
    for c in clients:
        c.start()
    end = time.time() + 30
    while time.time() < end and http("GET", node.url("metrics", "/readyz"))[0] != 503:
        time.sleep(0.05)
    during = node.scrape()
    stop.set()
    for c in clients:
        c.join()
    end = time.time() + 30
    while time.time() < end and http("GET", node.url("metrics", "/readyz"))[0] != 200:
        time.sleep(0.05)
    return during


DRILLS = [
    ("hydration", "OmnigateHydrationP95High", ["omnigate_hydration_latency_seconds_bucket"],
     ["--target=storage", "--fault=latency", "--ms=200", "--jitter-ms=20"], hydration_setup, hydration_traffic),
    ("commit", "RegistryCommitP95High", ["commit_latency_seconds_bucket"],
     ["--target=registry", "--fault=latency", "--ms=800"], commit_setup, commit_traffic),
    ("errors", "RegistryErrorBudgetBurn", ["http_requests_total"],
     ["--target=storage", "--fault=error", "--rate=0.01"], errors_setup, errors_traffic),
    ("bus", "RegistryBusLag", ["bus_lagged_total"],
     ["--target=bus", "--fault=drop"], bus_setup, bus_traffic),
    ("overload", "RegistryNotReady", ["node_ready"],
     ["--target=storage", "--fault=latency", "--ms=500"], overload_setup, overload_traffic),
]
GAUGES = {"node_ready", "chaos_faults_active"}


def name_of(series):
    return series.split("{", 1)[0]


def replay(phases, names):
    """promtool input_series: each series' per-phase increments (counters)
    or values (gauges), once a minute."""
    out = []
    keys = sorted({k for s in phases for k in s if name_of(k) in names})
    for key in keys:
        vals = [s.get(key, 0.0) for s in phases]  # S0, S1, S2, S3
        if name_of(key) in GAUGES:
            seq = [vals[1]] * (BASE + 1) + [vals[2]] * FAULT + [vals[3]] * AFTER
        else:
            steps = [max(vals[1] - vals[0], 0), max(vals[2] - vals[1], 0), max(vals[3] - vals[2], 0)]
            seq, total = [0.0], 0.0
            for step, minutes in zip(steps, (BASE, FAULT, AFTER)):
                for _ in range(minutes):
                    total += step
                    seq.append(total)
        out.append({"series": key, "values": " ".join(f"{v:g}" for v in seq)})
    return out


def expectation(rules, alert, firing):
    if not firing:
        return []
    rule = rules[alert]
    return [{"exp_labels": dict(rule["labels"]), "exp_annotations": dict(rule["annotations"])}]


def main():
    binary, out = sys.argv[1], sys.argv[2]
    rules = {
        r["alert"]: r
        for g in yaml.safe_load(open(RULES))["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tests = []
    with tempfile.TemporaryDirectory() as work:
        node = Node(binary, work)
        try:
            for name, alert, names, fault, setup, traffic in DRILLS:
                ctx = setup(node)
                s0 = node.scrape()
                traffic(node, ctx, "base")
                s1 = node.scrape()
                fid = node.ctl("chaos", "inject", *fault, json_out=True)["id"]
                during = traffic(node, ctx, "fault")
                s2 = during or node.scrape()
                node.ctl("chaos", "clear", "--id", fid)
                traffic(node, ctx, "after")
                s3 = node.scrape()
                series = replay([s0, s1, s2, s3], set(names) | {"chaos_faults_active"})
                checks = []
                for a in (alert, "ChaosDrillActive"):
                    for minute, firing in ((BASE, False), (BASE + FAULT, True), (BASE + FAULT + AFTER, False)):
                        checks.append({"eval_time": f"{minute}m", "alertname": a, "exp_alerts": expectation(rules, a, firing)})
                tests.append({
                    "name": f"drill {name}: {alert} fires during the fault and resolves after",
                    "interval": "1m",
                    "input_series": series,
                    "alert_rule_test": checks,
                })
                print(f"drill {name}: recorded {len(series)} series", file=sys.stderr)
        finally:
            node.stop()
    doc = {"rule_files": [os.path.relpath(RULES, os.path.dirname(os.path.abspath(out)))],
           "evaluation_interval": "1m", "tests": tests}
    with open(out, "w") as f:
        f.write("# Recorded by packaging/prometheus/drills.py from a live node's drills\n")
        f.write("# (see its docstring); promtool test rules runs it.\n")
        yaml.safe_dump(doc, f, sort_keys=False, width=200)


if __name__ == "__main__":
    main()
