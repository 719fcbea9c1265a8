#!/usr/bin/env bash
# The Janus demo on one machine: Janus in a network namespace of its own (as a pod),
# reachable only through Turnpike (`turnpike run` on examples/janus/turnpike), the app
# server that hands out ICE configs and forwards Janus' API, and a client namespace
# behind a NAT router whose egress you can restrict (tests/netlab/netlab.sh). Needs root
# (namespaces), janus, node, openssl and tinyproxy (Debian: janus janus-demos nodejs
# openssl tinyproxy), and the release binary (cargo build --release).
#
#   sudo examples/janus/run.sh                 # starts it all, prints how to open it
#   sudo examples/janus/run.sh --check         # ... and makes one EchoTest call headless
#   examples/janus/run.sh up STATE [PROFILE] [cone|symmetric]   # for tests: start, return
#   examples/janus/run.sh down STATE           # stop what `up` started, remove namespaces
#
# PROFILE is one of tests/netlab/netlab.sh's (open, udp-blocked, tcp-443-only,
# tls-443-only, http-proxy-only, ipv6-only); `tests/netlab/netlab.sh profile PREFIX P`
# changes it while running. STATE gets the logs, the certificates, the token and `env`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
netlab=$root/tests/netlab/netlab.sh
turnpike=${TURNPIKE_BIN:-$root/target/release/turnpike}

up() {
  local state=$1 profile=${2:-open} nat=${3:-cone}
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  local prefix=${NETLAB_PREFIX:-jd$$}
  prefix=${prefix:0:6}
  [ -x "$turnpike" ] || { echo "no $turnpike: cargo build --release first" >&2; exit 1; }
  for tool in janus node openssl tinyproxy; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 1; }
  done
  echo "$prefix" > "$state/prefix"
  "$netlab" up "$prefix" "$nat"

  # A CA and one certificate for the Gateway's TLS name and the web server.
  local tls=$state/tls
  mkdir -p "$tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=Turnpike demo CA" -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=turn.netlab.test" \
    -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
  printf 'subjectAltName=%s\n' "DNS:turn.netlab.test,DNS:app.netlab.test,DNS:turn6.netlab.test,DNS:app6.netlab.test,IP:198.18.100.1,IP:198.18.100.2,IP:2001:2:0:100::1,IP:2001:2:0:100::2" \
    > "$tls/ext"
  openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" \
    -CAcreateserial -days 2 -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
  # Chromium trusts the leaf by its key (--ignore-certificate-errors-spki-list).
  openssl x509 -in "$tls/server.pem" -noout -pubkey | openssl pkey -pubin -outform der |
    openssl dgst -sha256 -binary | base64 > "$tls/spki"

  # Turnpike's YAML plus the certificate Secret.
  local dir=$state/turnpike
  mkdir -p "$dir"
  cp "$here"/turnpike/*.yaml "$dir/"
  {
    echo "apiVersion: v1"
    echo "kind: Secret"
    echo "metadata: {name: turn-tls, namespace: default}"
    echo "type: kubernetes.io/tls"
    echo "stringData:"
    echo "  tls.crt: |"
    sed 's/^/    /' "$tls/server.pem"
    echo "  tls.key: |"
    sed 's/^/    /' "$tls/server.key"
  } > "$dir/40-tls-secret.yaml"

  local g=$prefix-g m=$prefix-m r=$prefix-r
  ip netns exec "$m" janus -F "$here/janus" -L "$state/janus.log" -N >/dev/null 2>&1 &
  echo $! > "$state/janus.pid"
  ip netns exec "$g" "$turnpike" run "$dir" --admin 127.0.0.1:9080 \
    --dataplane-admin 127.0.0.1:9086 --auth 127.0.0.1:8088 --cds 127.0.0.1:0 \
    > "$state/turnpike.log" 2>&1 &
  echo $! > "$state/turnpike.pid"
  "$turnpike" token --dir "$dir" --sub janus-demo-app > "$state/token"

  cat > "$state/tinyproxy.conf" <<CONF
Port 3128
Listen 198.18.121.1
Timeout 600
MaxClients 100
Allow 198.18.121.0/24
ConnectPort 443
LogLevel Notice
CONF
  ip netns exec "$r" tinyproxy -d -c "$state/tinyproxy.conf" > "$state/tinyproxy.log" 2>&1 &
  echo $! > "$state/tinyproxy.pid"

  wait_for "Janus' API" ip netns exec "$m" curl -sf -o /dev/null --max-time 2 \
    http://198.18.110.2:8188/janus/info
  wait_for "Turnpike's auth service" ip netns exec "$g" curl -sf -o /dev/null --max-time 2 \
    http://127.0.0.1:8088/livez
  APP_LISTEN=198.18.100.2:443,[2001:2:0:100::2]:443 APP_TLS_CERT=$tls/server.pem APP_TLS_KEY=$tls/server.key \
    AUTH_URL=http://127.0.0.1:8088 AUTH_TOKEN=$(cat "$state/token") NAMESPACE=default \
    JANUS_URL=http://198.18.110.2:8188/janus \
    ip netns exec "$g" node "$here/app/server.mjs" > "$state/app.log" 2>&1 &
  echo $! > "$state/app.pid"
  wait_for "the app server" ip netns exec "$prefix-c" curl -sf -o /dev/null --max-time 2 \
    --cacert "$tls/ca.pem" https://app.netlab.test/
  # The client's network gets its profile once everything answers.
  "$netlab" profile "$prefix" "$profile"
  cat > "$state/env" <<ENV
NETLAB_PREFIX=$prefix
CLIENT_NS=$prefix-c
APP_URL=https://app.netlab.test/
APP_URL6=https://app6.netlab.test/
SPKI=$(cat "$tls/spki")
PROXY=http://198.18.121.1:3128
ENV
}

wait_for() {
  local what=$1
  shift
  for _ in $(seq 100); do
    "$@" && return 0
    sleep 0.2
  done
  echo "$what did not come up" >&2
  return 1
}

down() {
  local state=$1
  for p in app tinyproxy turnpike janus; do
    [ -f "$state/$p.pid" ] || continue
    kill "$(cat "$state/$p.pid")" 2>/dev/null || true
    rm -f "$state/$p.pid"
  done
  sleep 0.5
  [ -f "$state/prefix" ] && "$netlab" down "$(cat "$state/prefix")"
  return 0
}

case "${1:-}" in
  up) up "${2:?STATE}" "${3:-open}" "${4:-cone}" ;;
  down) down "${2:?STATE}" ;;
  ""|--check)
    state=$(mktemp -d /tmp/turnpike-janus.XXXX)
    trap 'down "$state"' EXIT
    up "$state" open cone
    . "$state/env"
    echo
    echo "Janus behind Turnpike is up (logs in $state)."
    if [ "${1:-}" = --check ]; then
      CLIENT_NS=$CLIENT_NS CHROMIUM_FLAGS="--ignore-certificate-errors-spki-list=$SPKI" \
        node "$root/tests/browser/janus-call.mjs" "$APP_URL" echotest "$state/echotest.png"
      echo "screenshot: $state/echotest.png"
      exit 0
    fi
    echo "Open it in a browser inside the client namespace (behind the NAT router):"
    echo "  sudo ip netns exec $CLIENT_NS chromium --user-data-dir=$state/chromium \\"
    echo "    --ignore-certificate-errors-spki-list=$SPKI $APP_URL"
    echo "Restrict the client's network:  sudo $netlab profile $NETLAB_PREFIX tcp-443-only"
    echo "Ctrl-C stops everything."
    sleep infinity &
    wait $!
    ;;
  *) echo "usage: run.sh [--check] | up STATE [PROFILE] [NAT] | down STATE" >&2; exit 2 ;;
esac
