# Shared by the side-by-side scripts in benches/: installs the load tools,
# starts a release macronode with the gateway roles and nginx on loopback,
# and stops both on exit. Source it from the repository root.
#
# Set BENCH_ROLES (a --roles list, or `all`) before `bench_setup` to start
# other roles, BENCH_BIN=micronode for the edge binary (its own defaults).
# After `bench_setup`: $WORK (temp dir), $SPORT (omnigate port), $NPORT
# (nginx port, root $WORK/www), $HEALTH (the node's metrics address),
# $NODE_PID.

need() { command -v "$1" >/dev/null 2>&1; }

bench_setup() {
  if ! need wrk || ! need nginx || ! need python3 || ! need curl; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light python3 curl >/dev/null
  fi
  cargo build --release --quiet
  WORK="$(mktemp -d)"
  trap bench_cleanup EXIT
  SPORT=$(free_port); NPORT=$(free_port); MPORT=$(free_port)
  HEALTH="127.0.0.1:$MPORT"

  cat > "$WORK/node.toml" <<TOML
data_dir = "$WORK/data"
[log]
filter = "warn"
[metrics]
addr = "$HEALTH"
[admin]
addr = "127.0.0.1:0"
[omnigate]
addr = "127.0.0.1:$SPORT"
[overlay]
addr = "127.0.0.1:0"
[registry]
addr = "127.0.0.1:0"
TOML
  # BENCH_ROLES=all runs every compiled role (no --roles); default: the gateway's.
  local roles=(--roles "${BENCH_ROLES:-omnigate,storage,index,mailbox}")
  [ "${BENCH_ROLES:-}" = "all" ] && roles=()
  "./target/release/${BENCH_BIN:-macronode}" run --config "$WORK/node.toml" "${roles[@]}" >"$WORK/node.log" 2>&1 &
  NODE_PID=$!
  wait_ready

  mkdir -p "$WORK/www"
  # nginx workers run as an unprivileged user: let them read the files.
  chmod 755 "$WORK" "$WORK/www"
  cat > "$WORK/nginx.conf" <<NGINX
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$NPORT; root $WORK/www; }
}
NGINX
  nginx -c "$WORK/nginx.conf"
}

bench_cleanup() {
  [ -n "${NODE_PID:-}" ] && kill "$NODE_PID" 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}

# Waits (up to 20 s) for the node $NODE_PID to answer /readyz 200 at
# $HEALTH; exits with its log if it dies or never gets there.
wait_ready() {
  for _ in $(seq 1 400); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$HEALTH/readyz" || true)" = "200" ] && return 0
    kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/node.log" >&2; exit 1; }
    sleep 0.05
  done
  echo "the node never became ready" >&2; cat "$WORK/node.log" >&2; exit 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Stores the file at $1 through the gateway; prints its address.
put_object() {
  curl -fsS -X PUT --data-binary "@$1" "http://127.0.0.1:$SPORT/v1/o" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["address"])'
}

# Summarises wrk --latency output in file $1: "req/s MB/s p50ms p99ms non2xx".
wrk_summary() { python3 benches/wrk_summary.py "$1"; }
