#!/usr/bin/env bash
# Runs Turnpike's whole test suite on a fresh machine. It installs what the tests need
# (Debian's coturn, Chromium, wrk, buildah/podman, runc, the CNI plugins and nftables, a
# Python venv with aioice/aiortc under ~/.cache, playwright-core from npm, clang and
# libbpf-dev for the kernel relay, and the
# Kubernetes, containerd, CoreDNS and helm binaries built from their Go modules, cached),
# checks formatting and lints, builds the release binary and the image, and runs every
# test: the protocol core, RFC 5769 vectors, the fuzz corpora, the end-to-end tests with
# real third-party clients on 127.0.0.1, the Kubernetes API suite and the single-node
# cluster suite. Finally it runs a short side-by-side benchmark against coturn 4.6.1 and
# 4.17.1 and STUNner (tests/bench/compare.sh --quick; stunnerd is built once, cached) and the
# control-plane benchmarks (TURNPIKE_SKIP_BENCH=1 leaves them out). Every stage's time is
# printed at its end and summed up last.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/turnpike"
mkdir -p "$cache"

stage_start=$SECONDS stage_name="" timings=()
step() {
  [ -n "$stage_name" ] && timings+=("$(printf '%5ds  %s' $((SECONDS - stage_start)) "$stage_name")")
  stage_name=$* stage_start=$SECONDS
  printf '\n==> [%ds] %s\n' "$SECONDS" "$*"
}
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)

packages=()
command -v turnutils_uclient >/dev/null 2>&1 || packages+=(coturn)
[ -x /usr/bin/chromium ] || packages+=(chromium)
command -v wrk >/dev/null 2>&1 || packages+=(wrk)
command -v python3 >/dev/null 2>&1 || packages+=(python3 python3-venv)
command -v ip >/dev/null 2>&1 || packages+=(iproute2)
command -v openssl >/dev/null 2>&1 || packages+=(openssl)
# The image and the single-node cluster.
command -v buildah >/dev/null 2>&1 || packages+=(buildah)
command -v podman >/dev/null 2>&1 || packages+=(podman)
[ -x /usr/sbin/runc ] || packages+=(runc)
[ -x /usr/lib/cni/bridge ] || packages+=(containernetworking-plugins)
command -v nft >/dev/null 2>&1 || packages+=(nftables)
command -v conntrack >/dev/null 2>&1 || packages+=(conntrack)
command -v iptables >/dev/null 2>&1 || packages+=(iptables)
[ -f /usr/lib/x86_64-linux-gnu/libc.a ] || packages+=(libc6-dev)
# Kernel offload: the eBPF object is rebuilt and compared (clang, libbpf-dev); the netns
# tests turn veth offloads on and off (ethtool).
command -v clang >/dev/null 2>&1 || packages+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || packages+=(libbpf-dev)
command -v ethtool >/dev/null 2>&1 || packages+=(ethtool)
# Real media (tests/tests/janus.rs): Janus, its demo pages and janus.js, an HTTP proxy for
# the proxy-only network profile.
command -v janus >/dev/null 2>&1 || packages+=(janus janus-demos libjs-janus-gateway)
command -v tinyproxy >/dev/null 2>&1 || packages+=(tinyproxy)
command -v curl >/dev/null 2>&1 || packages+=(curl)
# Monitoring (tests/tests/observability.rs): promtool and a Prometheus server.
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
# The cluster's Janus image is laid out from Debian packages (examples/janus/image.sh).
command -v mmdebstrap >/dev/null 2>&1 || packages+=(mmdebstrap)
if [ ${#packages[@]} -gt 0 ]; then
  step "apt-get install ${packages[*]}"
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${packages[@]}" >/dev/null
fi

venv="$cache/venv"
want=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
  step "Python venv: aioice, aiortc, schemathesis, openapi-spec-validator, kubectl ($venv)"
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/python/requirements.txt
  echo "$want" > "$venv/.requirements.sha256"
fi
export TURNPIKE_PYTHON="$venv/bin/python"

if [ ! -d tests/browser/node_modules/playwright-core ]; then
  step "playwright-core (drives Debian's Chromium; no browser download)"
  (cd tests/browser && npm ci --no-audit --no-fund --silent)
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo build --release"
cargo build --release --workspace --quiet
export TURNPIKE_BIN="$root/target/release/turnpike"

step "image: FROM scratch with buildah (tests/image/build.sh)"
tests/image/build.sh --binary "$TURNPIKE_BIN"

step "Kubernetes binaries: kube-*, etcd, containerd, CoreDNS, helm (built once, cached)"
tests/k8s/build.sh all
tests/k8s/helm.sh >/dev/null

step "cargo test (unit, RFC 5769, fuzz corpora, end-to-end with real clients, Kubernetes API)"
cargo test --workspace --release --no-fail-fast -- --skip turnpike_on_a_real_single_node_cluster 2>&1 |
  tee "$cache/test.log"

step "cluster: the image as pods on a real single-node cluster (tests/tests/cluster.rs)"
cargo test --release -p turnpike-tests --test cluster 2>&1 | tee "$cache/cluster-test.log"

if [ -z "${TURNPIKE_SKIP_BENCH:-}" ]; then
  step "benchmark: Turnpike, coturn 4.6.1/4.17.1, STUNner side by side (short form)"
  tests/bench/compare.sh --quick
  step "benchmark: kernel offload in network namespaces (short form)"
  tests/bench/offload.sh --quick
  step "benchmark: Turnpike and coturn over TURN-TCP and TURN-TLS (uclient)"
  tests/bench/uclient-vs-coturn.sh --transport tcp --clients 50 --messages 1000 --rounds 1
  # Over TLS at this rate coturn loses packets (about a quarter on a 2-core machine).
  tests/bench/uclient-vs-coturn.sh --transport tls --clients 50 --messages 1000 --rounds 1
  step "benchmark: render time and config propagation"
  target/release/render_bench
  target/release/propagation_bench 50
  step "benchmark: auth service /ice-config under wrk"
  tests/bench/ice-config-wrk.sh --duration 5s
fi

step "all tests passed"
printf '\nstage times:\n'
printf '%s\n' "${timings[@]}"
printf '%5ds  total\n' "$SECONDS"
