#!/usr/bin/env bash
# A real single-node Kubernetes cluster for tests: etcd, kube-apiserver, kube-controller-
# manager, kube-scheduler, kubelet and kube-proxy of one Kubernetes version, containerd 2.x
# with runc and the CNI plugins, and CoreDNS. Pods are real: Deployments become pods,
# probes and grace periods run, owner references are garbage-collected, Services forward.
#
#   tests/k8s/cluster.sh start   # builds (first run, cached), starts, prints export lines
#   tests/k8s/cluster.sh env     # prints the export lines of the running cluster
#   tests/k8s/cluster.sh import ARCHIVE   # imports an OCI/Docker image archive into containerd
#   tests/k8s/cluster.sh ctr ARGS...      # ctr against the cluster's containerd (k8s.io)
#   tests/k8s/cluster.sh stop    # removes every process, mount, cgroup, namespace and rule
#
# Network (all of it in 198.18.0.0/15, on interfaces and namespaces made here):
#   - the node is a network namespace of its own ("tpk-node"): every component runs in it
#     (nsenter --net, so they share the machine's mount namespace as a node's daemons do),
#     and kube-proxy's nftables rules, the pod bridge and the pods' veths live only there;
#   - host <-> node: veth 198.18.255.1 (host) / 198.18.255.2 (node IP, API server :6443);
#     the host routes pods (198.18.0.0/24) and Services (198.19.0.0/24) through it;
#   - pods: bridge cni0 198.18.0.1/24 in the node (CNI bridge + host-local);
#   - "internet": namespace "tpk-inet", 198.18.254.2, joined to the node at 198.18.254.1; it
#     routes the load-balancer range 198.18.253.0/24 to the node, as a cloud LB would;
#   - cluster DNS: CoreDNS on the node IP (kubelet clusterDNS).
# One cluster per machine at a time (start removes one left by a dead owner and waits for a
# live one). Binaries are cached under ~/.cache/turnpike by version.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=tests/k8s/build.sh
. "$root/tests/k8s/build.sh"
run="${TURNPIKE_CLUSTER_DIR:-$cache/cluster-run}"
owner_pid=${TURNPIKE_CLUSTER_OWNER:-$PPID}

NODE_NS=tpk-node
INET_NS=tpk-inet
HOST_IF=tpk-host
NODE_NAME=turnpike-node
HOST_IP=198.18.255.1
NODE_IP=198.18.255.2
POD_CIDR=198.18.0.0/24
POD_GW=198.18.0.1
SERVICE_CIDR=198.19.0.0/24
KUBERNETES_SVC_IP=198.19.0.1
INET_NODE_IP=198.18.254.1
INET_IP=198.18.254.2
LB_CIDR=198.18.253.0/24
PAUSE_IMAGE=registry.k8s.io/pause:3.10.2
APISERVER_PORT=6443

in_node() { nsenter --net="/var/run/netns/$NODE_NS" -- "$@"; }

ctr_cmd() { "$containerd_bin/ctr" --address "$run/containerd/containerd.sock" -n k8s.io "$@"; }

install_packages() {
  local pkgs=()
  [ -x /usr/sbin/runc ] || pkgs+=(runc)
  [ -x /usr/lib/cni/bridge ] || pkgs+=(containernetworking-plugins)
  command -v nft >/dev/null || pkgs+=(nftables)
  command -v conntrack >/dev/null || pkgs+=(conntrack)
  command -v iptables >/dev/null || pkgs+=(iptables)
  command -v buildah >/dev/null || pkgs+=(buildah)
  command -v gcc >/dev/null || pkgs+=(gcc libc6-dev)
  [ ${#pkgs[@]} -eq 0 ] && return
  log "installing ${pkgs[*]} (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
}

# The sandbox ("pause") image, built here from the pause.c that ships in the Kubernetes
# module (no registry to pull registry.k8s.io/pause from).
build_pause() {
  local dir="$cache/pause-$K8S_VERSION" src
  [ -f "$dir/pause.tar" ] && return
  log "building the pause image"
  mkdir -p "$dir"
  src="$(go env GOMODCACHE)/k8s.io/kubernetes@v$K8S_VERSION/build/pause/linux/pause.c"
  [ -f "$src" ] || (cd "$(k8s_module)" && go mod download "k8s.io/kubernetes@v$K8S_VERSION")
  gcc -Os -Wall -Werror -static -DVERSION="v3.10.2-turnpike" -o "$dir/pause" "$src"
  strip "$dir/pause"
  . "$root/tests/image/containers-env.sh"
  local c
  c=$(buildah "${storage[@]}" from --quiet scratch)
  buildah "${storage[@]}" copy --quiet "$c" "$dir/pause" /pause >/dev/null
  buildah "${storage[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c"
  buildah "${storage[@]}" commit --quiet --rm "$c" "$PAUSE_IMAGE" >/dev/null
  buildah "${storage[@]}" push --quiet "$PAUSE_IMAGE" "docker-archive:$dir/pause.tar:$PAUSE_IMAGE" >/dev/null
}

# --- PKI ---------------------------------------------------------------------------------

cert() { # name CN O [SANs]  (signed by the fixture CA)
  local name=$1 cn=$2 o=$3 san=${4:-} ext="$run/pki/$1.ext"
  openssl req -newkey rsa:2048 -nodes -keyout "$run/pki/$name.key" -subj "/CN=$cn${o:+/O=$o}" \
    -out "$run/pki/$name.csr" 2>/dev/null
  # X.509 v3 with extensions: rustls (kube-rs) refuses v1 certificates that Go accepts.
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=digitalSignature,keyEncipherment"
    if [ -n "$san" ]; then
      echo "extendedKeyUsage=serverAuth,clientAuth"
      echo "subjectAltName=$san"
    else
      echo "extendedKeyUsage=clientAuth"
    fi
  } > "$ext"
  openssl x509 -req -in "$run/pki/$name.csr" -CA "$run/pki/ca.crt" -CAkey "$run/pki/ca.key" \
    -CAcreateserial -days 2 -extfile "$ext" -out "$run/pki/$name.crt" 2>/dev/null
}

kubeconfig() { # name user (uses pki/NAME.crt/key)
  cat > "$run/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: turnpike-node
  cluster: {server: "https://$NODE_IP:$APISERVER_PORT", certificate-authority: "$run/pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$run/pki/$1.crt", client-key: "$run/pki/$1.key"}
contexts:
- name: turnpike-node
  context: {cluster: turnpike-node, user: $2}
current-context: turnpike-node
EOF
}

make_pki() {
  mkdir -p "$run/pki"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$run/pki/ca.key" -out "$run/pki/ca.crt" \
    -days 2 -subj "/CN=turnpike-cluster-ca" 2>/dev/null
  cert apiserver kube-apiserver "" \
    "IP:$NODE_IP,IP:$KUBERNETES_SVC_IP,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert kubelet-serving "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME"
  openssl genrsa -out "$run/pki/sa.key" 2048 2>/dev/null
  openssl rsa -in "$run/pki/sa.key" -pubout -out "$run/pki/sa.pub" 2>/dev/null
  cert admin admin system:masters
  cert kubelet "system:node:$NODE_NAME" system:nodes
  cert controller-manager system:kube-controller-manager ""
  cert scheduler system:kube-scheduler ""
  cert kube-proxy system:kube-proxy ""
  cert operator system:serviceaccount:turnpike-system:turnpike-operator ""
  for k in admin kubelet controller-manager scheduler kube-proxy operator; do kubeconfig "$k" "$k"; done
}

# --- network -----------------------------------------------------------------------------

make_network() {
  ip netns add "$NODE_NS"
  ip netns add "$INET_NS"
  # host <-> node
  ip link add "$HOST_IF" type veth peer name host0 netns "$NODE_NS"
  ip addr add "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip -n "$NODE_NS" addr add "$NODE_IP/30" dev host0
  ip -n "$NODE_NS" link set host0 up
  ip -n "$NODE_NS" link set lo up
  ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_IF"
  ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$HOST_IF"
  # node <-> "internet" (the test's clients)
  ip link add inet0 netns "$NODE_NS" type veth peer name eth0 netns "$INET_NS"
  ip -n "$NODE_NS" addr add "$INET_NODE_IP/24" dev inet0
  ip -n "$NODE_NS" link set inet0 up
  ip -n "$INET_NS" addr add "$INET_IP/24" dev eth0
  ip -n "$INET_NS" link set eth0 up
  ip -n "$INET_NS" link set lo up
  ip -n "$INET_NS" route add "$LB_CIDR" via "$INET_NODE_IP"
  # The node routes between its pods, the host and the internet; bridged pod traffic goes
  # through the netfilter hooks, so Service DNAT works between pods on one bridge.
  in_node sysctl -qw net.ipv4.ip_forward=1
  in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true
  in_node sysctl -qw net.bridge.bridge-nf-call-ip6tables=1 2>/dev/null || true
  mkdir -p "$run/cni/net.d"
  cat > "$run/cni/net.d/10-turnpike.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "turnpike-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$run/cni/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# --- processes ---------------------------------------------------------------------------

# spawn NAME CMD...: runs CMD in the node's network namespace, logs to NAME.log.
spawn() {
  local name=$1; shift
  nsenter --net="/var/run/netns/$NODE_NS" -- "$@" >>"$run/$name.log" 2>&1 &
  echo $! > "$run/$name.pid"
}

wait_until() { # what seconds cmd...
  local what=$1 secs=$2; shift 2
  for _ in $(seq $((secs * 4))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  log "$what did not come up in ${secs}s"
  return 1
}

start_etcd() {
  mkdir -p "$run/etcd"
  spawn etcd "$bin/etcd" --data-dir "$run/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --initial-advertise-peer-urls http://127.0.0.1:2380 --initial-cluster default=http://127.0.0.1:2380 \
    --listen-metrics-urls http://127.0.0.1:2381
}

start_apiserver() {
  spawn apiserver "$bin/kube-apiserver" --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --secure-port "$APISERVER_PORT" --advertise-address "$NODE_IP" \
    --tls-cert-file "$run/pki/apiserver.crt" --tls-private-key-file "$run/pki/apiserver.key" \
    --client-ca-file "$run/pki/ca.crt" --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$run/pki/admin.crt" --kubelet-client-key "$run/pki/admin.key" \
    --service-account-issuer https://kubernetes.default.svc --service-account-key-file "$run/pki/sa.pub" \
    --service-account-signing-key-file "$run/pki/sa.key" --service-cluster-ip-range "$SERVICE_CIDR" \
    --allow-privileged=true --cert-dir "$run/pki"
}

start_controllers() {
  spawn controller-manager "$bin/kube-controller-manager" --kubeconfig "$run/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$run/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$run/controller-manager.kubeconfig" \
    --leader-elect=false --use-service-account-credentials \
    --service-account-private-key-file "$run/pki/sa.key" --root-ca-file "$run/pki/ca.crt" \
    --cluster-signing-cert-file "$run/pki/ca.crt" --cluster-signing-key-file "$run/pki/ca.key" \
    --bind-address 127.0.0.1 --secure-port 10257 --cluster-name turnpike
  spawn scheduler "$bin/kube-scheduler" --kubeconfig "$run/scheduler.kubeconfig" \
    --authentication-kubeconfig "$run/scheduler.kubeconfig" \
    --authorization-kubeconfig "$run/scheduler.kubeconfig" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 10259
}

start_containerd() {
  mkdir -p "$run/containerd"
  cat > "$run/containerd/config.toml" <<EOF
version = 3
root = "$run/containerd/root"
state = "$run/containerd/state"
[grpc]
  address = "$run/containerd/containerd.sock"
[ttrpc]
  address = "$run/containerd/containerd.sock.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "$run/containerd/opt"
[plugins.'io.containerd.nri.v1.nri']
  disable = true
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$PAUSE_IMAGE"
[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  # This machine refuses a negative oom_score_adj even to root; the kubelet asks -998 for
  # sandboxes and runc's init dies on the write. Clamp to containerd's own, as rootless does.
  restrict_oom_score_adj = true
  # containerd 2 opens every port to non-root containers by default; other runtimes (and
  # containerd 1.x) do not. Off here, so the pods' own sysctl is what lets them bind 443.
  enable_unprivileged_ports = false
  enable_unprivileged_icmp = false
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$run/cni/net.d"
EOF
  PATH="$containerd_bin:$PATH" spawn containerd "$containerd_bin/containerd" --config "$run/containerd/config.toml"
  wait_until containerd 30 ctr_cmd version
}

cgroup_root=/turnpike-cluster

start_kubelet() {
  mkdir -p "$run/kubelet" "$run/pod-logs"
  local c
  # cgroupfs driver on (hybrid) cgroup v1: the pods' cgroups live under one root of ours
  # in every hierarchy, so stop can remove them.
  for c in /sys/fs/cgroup/*/; do
    [ -L "${c%/}" ] && continue
    [ "$(basename "$c")" = unified ] && continue
    mkdir -p "$c${cgroup_root#/}" 2>/dev/null || true
  done
  printf 'nameserver %s\nsearch cluster.local\n' "$NODE_IP" > "$run/resolv.conf"
  cat > "$run/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
containerRuntimeEndpoint: unix://$run/containerd/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $run/pki/kubelet-serving.crt
tlsPrivateKeyFile: $run/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $run/pki/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $run/resolv.conf
podLogsDir: $run/pod-logs
volumePluginDir: $run/kubelet/volume-plugins
failSwapOn: false
syncFrequency: 10s
fileCheckFrequency: 10s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
EOF
  spawn kubelet "$bin/kubelet" --config "$run/kubelet.yaml" --kubeconfig "$run/kubelet.kubeconfig" \
    --root-dir "$run/kubelet" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v 1
}

start_kube_proxy() {
  cat > "$run/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $run/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
# The conntrack sysctls are the machine's, not the node namespace's: leave them alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  spawn kube-proxy "$bin/kube-proxy" --config "$run/kube-proxy.yaml"
}

start_coredns() {
  cat > "$run/Corefile" <<EOF
.:53 {
    bind $NODE_IP
    errors
    health 127.0.0.1:18080
    ready 127.0.0.1:18181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $run/admin.kubeconfig turnpike-node
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }
    cache 5
    loadbalance
}
EOF
  spawn coredns "$coredns_bin/coredns" -conf "$run/Corefile"
}

kubectl_admin() { "$(kubectl_bin)" --kubeconfig "$run/admin.kubeconfig" "$@"; }

print_env() {
  echo "export KUBECONFIG=$run/admin.kubeconfig"
  echo "export TURNPIKE_OPERATOR_KUBECONFIG=$run/operator.kubeconfig"
  echo "export TURNPIKE_CLUSTER_INET_NS=$INET_NS"
  echo "export TURNPIKE_CLUSTER_NODE_NS=$NODE_NS"
  echo "export TURNPIKE_CLUSTER_LB_CIDR=$LB_CIDR"
}

import_image() { # archive
  ctr_cmd images import --snapshotter overlayfs "$1" >&2
}

cluster_present() { ip netns list | grep -qw "$NODE_NS" || ip link show "$HOST_IF" >/dev/null 2>&1; }

process_start_time() { # pid -> its start time in clock ticks (field 22), empty if gone
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo "${20}"
}

# The owner of the cluster that is up, if that process still lives ("" otherwise). A pid
# is only the owner while its start time matches the one recorded: pids are reused.
live_owner() {
  local pid started
  read -r pid started < "$run/owner" 2>/dev/null || return 0
  [ -n "$pid" ] && [ -n "$started" ] && [ "$(process_start_time "$pid")" = "$started" ] && echo "$pid"
  return 0
}

# One cluster per machine: a cluster whose owner died (a killed test run, a machine
# stopped mid-run) is removed; one whose owner still runs is waited for, up to
# TURNPIKE_CLUSTER_WAIT seconds (default 30 minutes: one cluster suite), then start fails.
claim_machine() {
  local waited=0 limit=${TURNPIKE_CLUSTER_WAIT:-1800} owner
  while cluster_present; do
    owner=$(live_owner)
    if [ -z "$owner" ]; then
      log "removing a cluster whose owner is gone ($(cat "$run/owner" 2>/dev/null || echo "no owner recorded"))"
      stop_everything
      rm -rf "$run"
      continue
    fi
    if [ "$waited" -ge "$limit" ]; then
      log "a cluster owned by running pid $owner is still up after ${limit}s (tests/k8s/cluster.sh stop removes it)"
      exit 1
    fi
    [ "$waited" -eq 0 ] && log "a cluster owned by running pid $owner is up; waiting for it to stop"
    sleep 5
    waited=$((waited + 5))
  done
}

start() {
  command -v go >/dev/null || { log "go is required to build the fixture"; exit 2; }
  [ "$(id -u)" -eq 0 ] || { log "the cluster needs root (namespaces, mounts, cgroups)"; exit 2; }
  install_packages
  with_build_lock build_k8s kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
  with_build_lock build_etcd
  with_build_lock build_containerd
  with_build_lock build_coredns
  with_build_lock build_pause
  kubectl_bin >/dev/null
  claim_machine
  rm -rf "$run"
  mkdir -p "$run"
  # Who owns this cluster: the process that ran start (the test binary, or your shell).
  echo "$owner_pid $(process_start_time "$owner_pid")" > "$run/owner"
  # From here on a failure must not leave anything behind.
  trap 'log "start failed; logs in $run (kept until stop)"; stop_everything' ERR
  make_pki
  make_network
  start_etcd
  start_apiserver
  wait_until kube-apiserver 60 kubectl_admin get --raw /readyz
  start_controllers
  start_containerd
  import_image "$cache/pause-$K8S_VERSION/pause.tar"
  start_kubelet
  start_kube_proxy
  start_coredns
  wait_until "node Ready" 120 sh -c "'$(kubectl_bin)' --kubeconfig '$run/admin.kubeconfig' get node $NODE_NAME -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
  wait_until "the default ServiceAccount" 60 kubectl_admin -n default get serviceaccount default
  wait_until "CoreDNS" 60 in_node bash -c "exec 3<>/dev/tcp/127.0.0.1/18181"

  # Gateway API experimental CRDs (UDPRoute) from the module our gateway-api crate was
  # generated from, then ours.
  local gw f
  gw=$(gateway_api_dir)
  for f in "$gw"/config/crd/experimental/gateway.networking.k8s.io_*.yaml; do
    kubectl_admin apply --server-side -f "$f" >/dev/null
  done
  kubectl_admin apply --server-side -f "$root/manifests/crds" >/dev/null
  trap - ERR
  print_env
}

# Every process this cluster started, the containers included, then mounts, cgroups,
# namespaces (the node's nftables rules and interfaces go with its namespace) and files.
stop_everything() {
  local p pid
  stop_pid() {
    [ -f "$run/$1.pid" ] || return 0
    pid=$(cat "$run/$1.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$run/$1.pid"
  }
  stop_pid kubelet
  # Containers: every process in the pods' cgroups (kubelet put them all under ours;
  # pods are ROOT/kubepods/QOS/POD/CONTAINER).
  local procs
  for _ in 1 2 3 4 5; do
    procs=$(find "/sys/fs/cgroup/pids$cgroup_root" -name cgroup.procs -exec cat {} + 2>/dev/null || true)
    [ -z "$procs" ] && break
    # shellcheck disable=SC2086
    kill -9 $procs 2>/dev/null || true
    sleep 0.3
  done
  stop_pid containerd
  # The runc shims this containerd started (they outlive it by design): found by the
  # socket address only this cluster uses.
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' < "$p/cmdline" 2>/dev/null | grep -q -- "-address $run/containerd/containerd.sock"; then
      kill -9 "${p#/proc/}" 2>/dev/null || true
    fi
  done
  for p in coredns kube-proxy scheduler controller-manager apiserver etcd; do stop_pid "$p"; done
  # Mounts under the run directory (container root filesystems, secret volumes, pod
  # network namespaces), deepest first.
  if [ -d "$run" ]; then
    awk -v r="$run" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
  fi
  # Cgroups, deepest first.
  local c
  for c in /sys/fs/cgroup/*/; do
    [ -d "$c${cgroup_root#/}" ] || continue
    find "$c${cgroup_root#/}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  ip route del "$POD_CIDR" 2>/dev/null || true
  ip route del "$SERVICE_CIDR" 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
  ip netns del "$INET_NS" 2>/dev/null || true
  ip netns del "$NODE_NS" 2>/dev/null || true
}

stop() {
  stop_everything
  rm -rf "$run"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  import) [ $# -eq 2 ] || { log "usage: $0 import ARCHIVE"; exit 2; }; import_image "$2" ;;
  ctr) shift; ctr_cmd "$@" ;;
  env) [ -f "$run/admin.kubeconfig" ] || { log "not running"; exit 1; }; print_env ;;
  *) log "usage: $0 start|stop|env|import ARCHIVE|ctr ARGS..."; exit 2 ;;
esac
