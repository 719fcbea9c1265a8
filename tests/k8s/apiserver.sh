#!/usr/bin/env bash
# A real Kubernetes API (kube-apiserver + etcd, RBAC on) on 127.0.0.1 for tests, without a
# cluster: no scheduler, kubelet or controller-manager run.
#
#   tests/k8s/apiserver.sh start   # builds (first run, cached), starts, installs CRDs, prints
#                                  #   export KUBECONFIG=...            (admin)
#                                  #   export TURNPIKE_OPERATOR_KUBECONFIG=...  (operator user)
#   tests/k8s/apiserver.sh env     # prints the two export lines of the running fixture
#   tests/k8s/apiserver.sh restart # restarts kube-apiserver (same port, same etcd)
#   tests/k8s/apiserver.sh stop    # stops it and removes its state
#
# Binaries are built from their Go modules and cached under ~/.cache/turnpike/ keyed by
# version (tests/k8s/build.sh). Gateway API CRDs come from sigs.k8s.io/gateway-api.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/k8s/build.sh
. "$root/tests/k8s/build.sh"
run="${TURNPIKE_K8S_DIR:-$cache/k8s-run}"

# Ports below the kernel's ephemeral range and below the tests' own (tests/src/lib.rs
# free_udp_port, 20000+): no outgoing connection can take kube-apiserver's port while
# `restart` has it down.
free_port() {
  python3 -c '
import random, socket
while True:
    p = random.randrange(15000, 20000)
    try:
        socket.socket().bind(("127.0.0.1", p))
        print(p)
        break
    except OSError:
        pass'
}

kubeconfig() { # file user cert key
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fixture
  cluster: {server: "https://127.0.0.1:$(cat "$run/port")", certificate-authority: "$run/pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$3", client-key: "$4"}
contexts:
- name: fixture
  context: {cluster: fixture, user: $2}
current-context: fixture
EOF
}

client_cert() { # name CN O
  openssl req -newkey rsa:2048 -nodes -keyout "$run/pki/$1.key" -subj "/CN=$2${3:+/O=$3}" -out "$run/pki/$1.csr" 2>/dev/null
  # X.509 v3 with extensions: rustls (kube-rs) refuses v1 certificates that Go accepts.
  printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' > "$run/pki/client.ext"
  openssl x509 -req -in "$run/pki/$1.csr" -CA "$run/pki/ca.crt" -CAkey "$run/pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$run/pki/client.ext" -out "$run/pki/$1.crt" 2>/dev/null
}

print_env() {
  echo "export KUBECONFIG=$run/admin.kubeconfig"
  echo "export TURNPIKE_OPERATOR_KUBECONFIG=$run/operator.kubeconfig"
}

launch_apiserver() {
  "$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$(cat "$run/etcd-port")" --bind-address 127.0.0.1 \
    --secure-port "$(cat "$run/port")" --advertise-address 127.0.0.1 \
    --tls-cert-file "$run/pki/apiserver.crt" --tls-private-key-file "$run/pki/apiserver.key" \
    --client-ca-file "$run/pki/ca.crt" --authorization-mode RBAC \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$run/pki/sa.pub" \
    --service-account-signing-key-file "$run/pki/sa.key" --service-cluster-ip-range 10.96.0.0/16 \
    --cert-dir "$run/pki" >>"$run/apiserver.log" 2>&1 &
  echo $! > "$run/apiserver.pid"
}

wait_ready() {
  local kubectl=$1
  for _ in $(seq 120); do
    if "$kubectl" --kubeconfig "$run/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "kube-apiserver did not become ready:"; tail -20 "$run/apiserver.log" >&2
  return 1
}

stop_process() {
  local p=$1
  if [ -f "$run/$p.pid" ]; then
    kill "$(cat "$run/$p.pid")" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$(cat "$run/$p.pid")" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$(cat "$run/$p.pid")" 2>/dev/null || true
  fi
}

# Stops kube-apiserver and starts it again on the same port and etcd (what a control-plane
# upgrade or crash looks like to clients); returns once it is ready.
restart() {
  [ -f "$run/port" ] || { log "not running"; exit 1; }
  stop_process apiserver
  launch_apiserver
  wait_ready "$(kubectl_bin)"
}

start() {
  command -v go >/dev/null || { log "go is required to build the fixture"; exit 2; }
  # Test processes may start fixtures side by side: one builds, the others wait for it.
  with_build_lock build_k8s kube-apiserver
  with_build_lock build_etcd
  local kubectl
  kubectl=$(kubectl_bin)
  [ -f "$run/apiserver.pid" ] && stop
  mkdir -p "$run/pki" "$run/etcd"
  local etcd_port peer_port port
  etcd_port=$(free_port) peer_port=$(free_port) port=$(free_port)
  echo "$port" > "$run/port"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$run/pki/ca.key" -out "$run/pki/ca.crt" -days 2 -subj "/CN=turnpike-test-ca" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$run/pki/apiserver.key" -subj "/CN=kube-apiserver" -out "$run/pki/apiserver.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes.default.svc\n' > "$run/pki/san.ext"
  openssl x509 -req -in "$run/pki/apiserver.csr" -CA "$run/pki/ca.crt" -CAkey "$run/pki/ca.key" -CAcreateserial \
    -days 2 -extfile "$run/pki/san.ext" -out "$run/pki/apiserver.crt" 2>/dev/null
  openssl genrsa -out "$run/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$run/pki/sa.key" -pubout -out "$run/pki/sa.pub" 2>/dev/null
  client_cert admin admin system:masters
  client_cert operator system:serviceaccount:turnpike-system:turnpike-operator ""

  "$bin/etcd" --data-dir "$run/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" >"$run/etcd.log" 2>&1 &
  echo $! > "$run/etcd.pid"
  echo "$etcd_port" > "$run/etcd-port"
  launch_apiserver
  # From here on a failure must not leave processes behind.
  trap 'log "start failed; stopping"; stop' ERR
  kubeconfig "$run/admin.kubeconfig" admin "$run/pki/admin.crt" "$run/pki/admin.key"
  kubeconfig "$run/operator.kubeconfig" operator "$run/pki/operator.crt" "$run/pki/operator.key"
  wait_ready "$kubectl" || { stop; exit 1; }

  # Gateway API experimental CRDs (UDPRoute) from the module our gateway-api crate was
  # generated from, then ours when the repository has them.
  local gw
  gw=$(gateway_api_dir)
  local f
  for f in "$gw"/config/crd/experimental/gateway.networking.k8s.io_*.yaml; do
    "$kubectl" --kubeconfig "$run/admin.kubeconfig" apply --server-side -f "$f" >/dev/null
  done
  if [ -d "$root/manifests/crds" ]; then
    "$kubectl" --kubeconfig "$run/admin.kubeconfig" apply --server-side -f "$root/manifests/crds" >/dev/null
  fi
  trap - ERR
  print_env
}

stop() {
  stop_process apiserver
  stop_process etcd
  rm -rf "$run"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) restart ;;
  env) [ -f "$run/port" ] || { log "not running"; exit 1; }; print_env ;;
  *) log "usage: $0 start|stop|restart|env"; exit 2 ;;
esac
