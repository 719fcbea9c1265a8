#!/usr/bin/env bash
# Load on the auth service: GET /ice-config with an HS256 token, from wrk on loopback, with
# `turnpike run` serving the quickstart (ports moved to free ones). Prints wrk's report
# (requests/s and latency percentiles).
#
#   tests/bench/ice-config-wrk.sh [--duration 10s] [--connections 32] [--threads 2]
set -euo pipefail
duration=10s connections=32 threads=2
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift 2 ;;
    --connections) connections=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="${TURNPIKE_BIN:-$root/target/release/turnpike}"
[ -x "$bin" ] || (cd "$root" && cargo build --release --quiet)
command -v wrk >/dev/null || { echo "wrk missing: apt-get install wrk" >&2; exit 2; }

work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
turn=$(free_port) admin=$(free_port) dpadmin=$(free_port) auth=$(free_port)
mkdir "$work/quickstart"
for f in "$root"/examples/quickstart/*.yaml; do
  sed "s/port: 3478/port: $turn/" "$f" > "$work/quickstart/$(basename "$f")"
done
RUST_LOG=warn "$bin" run "$work/quickstart" --admin "127.0.0.1:$admin" --dataplane-admin "127.0.0.1:$dpadmin" \
  --cds 127.0.0.1:0 --auth "127.0.0.1:$auth" >"$work/run.log" 2>&1 &
pid=$!
token=$("$bin" token --dir "$work/quickstart")
for _ in $(seq 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$auth/ice-config" || true)
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || { echo "auth service not answering 200 (got $code)" >&2; cat "$work/run.log" >&2; exit 1; }
echo "wrk: $threads threads, $connections connections, $duration, GET /ice-config with an HS256 token"
wrk -t"$threads" -c"$connections" -d"$duration" --latency -H "Authorization: Bearer $token" \
  "http://127.0.0.1:$auth/ice-config"
