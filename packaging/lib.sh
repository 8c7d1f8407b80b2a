# Shared by the packaging scripts (source it): waiting for a node started
# in the background to log its ready=1 line, and reading a listener's
# bound address from that line.

# wait_ready LOG PID [TRIES]: returns once LOG holds the ready=1 line;
# fails (printing the log) if PID exits first or TRIES × 0.1 s pass.
wait_ready() {
  local log=$1 pid=$2 tries=${3:-600}
  for _ in $(seq 1 "$tries"); do
    grep -q '"ready":1' "$log" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; echo "node exited before it was ready" >&2; return 1; }
    sleep 0.1
  done
  cat "$log" >&2
  echo "node never became ready" >&2
  return 1
}

# ready_addr LOG NAME: the address listener NAME bound, from the ready=1 line.
ready_addr() {
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    try:
        v = json.loads(line)
    except ValueError:
        continue
    if v.get("ready") == 1:
        print(json.loads(v["addrs"])[sys.argv[2]])
        break
else:
    sys.exit(f"no ready=1 line in {sys.argv[1]}")
' "$1" "$2"
}

# ephemeral_env: RON_<LISTENER>__ADDR=127.0.0.1:0 for every listener, one per line.
ephemeral_env() {
  local l
  for l in METRICS ADMIN OMNIGATE OVERLAY REGISTRY STORAGE INDEX MAILBOX; do
    echo "RON_${l}__ADDR=127.0.0.1:0"
  done
}
