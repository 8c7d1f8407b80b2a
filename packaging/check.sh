#!/usr/bin/env bash
# Verifies what packaging/ ships, with the tools operators use (installed by
# packaging/tools.sh when missing):
#   - prometheus/: `promtool check rules`, and `promtool test rules` (every
#     alert fires on a breach and stays silent below it), also on series
#     recorded from the chaos drills on a live node (drills.py);
#   - grafana/: the dashboards are what generate.py makes, and every PromQL
#     expression in them passes promtool (Grafana variables substituted);
#   - a live node with every role: `promtool check metrics` is clean on the
#     first scrape and again after traffic; the planes' OpenAPI documents
#     (docs/openapi/: health, admin, registry, omnigate) pass
#     openapi-spec-validator,
#     are what the node serves, and schemathesis finds nothing against them;
#   - docker/: static binaries built once, both images built (buildah),
#     linted (hadolint), exported as docker-archive, and smoke-tested from
#     their unpacked rootfs (docker/smoke.sh);
#   - systemd/: `systemd-analyze verify` silent, exposure <= 2.0;
#   - helm/: lint, schema refusals, kubernetes-validate, and the chart's
#     config accepted by the very binaries the images hold (helm/check.py);
#   - edge/: the aarch64 cross build, a micronode smoke test and the oap and
#     storage unit tests under qemu.
# Called by .ci/run; run it alone with `bash packaging/check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash packaging/tools.sh
# shellcheck source=packaging/lib.sh
. packaging/lib.sh

work=$(mktemp -d)
node_pid=""
cleanup() {
  [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== alert rules"
promtool check rules packaging/prometheus/*.rules.yml
promtool test rules packaging/prometheus/*.rules.test.yml

echo "== dashboards"
cp -r packaging/grafana "$work/grafana"
python3 "$work/grafana/generate.py"
for f in packaging/grafana/*.json; do
  if ! cmp -s "$f" "$work/grafana/$(basename "$f")"; then
    echo "packaging/check.sh: $f differs from what generate.py writes; run python3 packaging/grafana/generate.py" >&2
    exit 1
  fi
done
python3 - "$work/dashboards.rules.yml" packaging/grafana/*.json <<'PY'
import json, sys
out, files = sys.argv[1], sys.argv[2:]
subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$instance": ".*"}
def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from exprs(v)
lines = ["groups:"]
n = 0
for f in files:
    d = json.load(open(f))
    assert d.get("schemaVersion", 0) >= 39, f"{f}: schemaVersion {d.get('schemaVersion')}"
    lines += [f"  - name: {json.dumps(d['uid'])}", "    rules:"]
    for e in exprs(d):
        for k, v in subst.items():
            e = e.replace(k, v)
        assert "$" not in e, f"{f}: unsubstituted variable in {e}"
        n += 1
        lines += [f"      - record: dashboard:expr_{n}", f"        expr: {json.dumps(e)}"]
open(out, "w").write("\n".join(lines) + "\n")
print(f"{n} dashboard expressions")
PY
promtool check rules "$work/dashboards.rules.yml"

echo "== live node metrics"
bin="${CARGO_TARGET_DIR:-$root/target}/debug/macronode"
cargo build -q --all-features --bin macronode
cat > "$work/node.toml" <<TOML
data_dir = "$work/data"
[metrics]
addr = "127.0.0.1:0"
[admin]
addr = "127.0.0.1:0"
[omnigate]
addr = "127.0.0.1:0"
[overlay]
addr = "127.0.0.1:0"
[registry]
addr = "127.0.0.1:0"
[storage]
addr = "127.0.0.1:0"
[index]
addr = "127.0.0.1:0"
[mailbox]
addr = "127.0.0.1:0"
TOML
RON_CONFIG="" "$bin" run --config "$work/node.toml" >"$work/node.log" 2>&1 &
node_pid=$!
wait_ready "$work/node.log" "$node_pid" 300
addr() { ready_addr "$work/node.log" "$1"; }
metrics=$(addr metrics)
gate=$(addr omnigate)
registry=$(addr registry)
curl -sf "http://$metrics/metrics" >"$work/first.prom"
promtool check metrics <"$work/first.prom"
if grep -q 'quantile=' "$work/first.prom"; then
  echo "a summary is exported; every latency metric must be a histogram" >&2
  exit 1
fi
# Traffic on every role, then check again.
head -c 200000 /dev/urandom >"$work/obj"
a=$(curl -sf -T "$work/obj" "http://$gate/v1/o" | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])')
curl -sf -o /dev/null -H 'Range: bytes=0-99' "http://$gate/v1/o/$a"
curl -sf -o /dev/null -X PUT -d "{\"address\":\"$a\",\"feed\":\"news\"}" "http://$gate/v1/names/site/logo"
curl -sf -o /dev/null -X POST -d hello "http://$gate/v1/topics/news/messages"
curl -sf -o /dev/null "http://$gate/v1/view/site/logo"
curl -sf -o /dev/null "http://$registry/registry/head"
curl -s -o /dev/null "http://$gate/v1/o/b3:nope" || true
curl -sf "http://$metrics/metrics" >"$work/after.prom"
promtool check metrics <"$work/after.prom"
grep -q '^omnigate_hydration_latency_seconds_bucket' "$work/after.prom"

echo "== drills fire the alerts"
# The runbook's chaos drills on a node of their own (chaos.enabled), and
# promtool tests built from the series its /metrics gave: each drill's
# alert is silent before the fault, fires during it, resolves after.
python3 packaging/prometheus/drills.py "$bin" "$work/drills.rules.test.yml"
promtool test rules "$work/drills.rules.test.yml"

echo "== openapi"
# Each plane's document: valid OpenAPI 3.1, served as committed, and
# schemathesis (bounded: examples per operation and seconds per plane)
# finds no 5xx, no status, header, content type or body the document does
# not name, and no bad input accepted. Left out of the runs: the admin
# calls that change the node under test (shutdown, drain, token rotation)
# and the endless bus stream; tests/host.rs, tests/ctl.rs and tests/cap.rs
# cover those.
admin=$(addr admin)
for plane in health admin registry omnigate; do
  openapi-spec-validator "docs/openapi/$plane.json"
done
python3 - "http://$metrics/openapi.json" docs/openapi/health.json \
  "http://$admin/openapi.json" docs/openapi/admin.json \
  "http://$registry/openapi.json" docs/openapi/registry.json \
  "http://$gate/openapi.json" docs/openapi/omnigate.json <<'PY'
import json, sys, urllib.request
args = sys.argv[1:]
for url, path in zip(args[::2], args[1::2]):
    with urllib.request.urlopen(url) as r:
        assert r.headers["content-type"] == "application/json", url
        assert json.load(r) == json.load(open(path)), f"{url} is not {path}"
PY
schemathesis_run() { # url, then options; the node is still ready after
  (cd "$work" && st run "$@" --checks all --max-examples 50 --max-time 30 \
    --generation-database none --no-color --report-dir "$work/schemathesis")
  curl -sf -o /dev/null "http://$metrics/readyz"
}
schemathesis_run "http://$metrics/openapi.json"
schemathesis_run "http://$admin/openapi.json" \
  --exclude-operation-id shutdown --exclude-operation-id drain \
  --exclude-operation-id rotateCap --exclude-operation-id bus
# A proposal the schema accepts must still extend the chain (409 otherwise)
# and carry real keys: schemathesis cannot make one the node takes, so the
# check that schema-valid data is accepted is left out here. The endless
# stream is left out; tests/registry.rs covers it.
schemathesis_run "http://$registry/openapi.json" \
  --exclude-operation-id stream --exclude-checks positive_data_acceptance
# The gateway: a request its schema accepts can still rightly be refused
# (412 for a stale If-Match, 416 for a range past the end, 422 for bytes
# that are not the address named), and a created upload that the run then
# aborts is rightly gone (schemathesis links create to abort and counts
# the 404 after): those two checks are left out.
schemathesis_run "http://$gate/openapi.json" \
  --exclude-checks positive_data_acceptance,ensure_resource_availability
kill -TERM "$node_pid"
wait "$node_pid"
node_pid=""
tail -n 1 "$work/node.log" | grep -q 'shutdown_complete=1'

echo "== images"
# The one heavy artefact: release binaries for x86_64-unknown-linux-musl,
# built once and used by the image, the unit and the chart checks.
bash packaging/docker/build.sh "$work/images"
bin_dir="${CARGO_TARGET_DIR:-$root/target}/x86_64-unknown-linux-musl/release"
bash packaging/docker/smoke.sh "$work/images"

echo "== systemd units"
bash packaging/systemd/check.sh "$bin_dir"

echo "== helm chart"
python3 packaging/helm/check.py --bin-dir "$bin_dir"

echo "== edge (aarch64 under qemu)"
bash packaging/edge/check.sh

echo "packaging/check.sh: ok"
