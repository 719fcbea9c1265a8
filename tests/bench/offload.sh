#!/usr/bin/env bash
# Kernel offload, side by side: the relay cost (machine CPU per relayed packet above the
# same load forwarded without a relay) of Turnpike with TC and XDP offload, Turnpike in
# userspace, coturn 4.17.1 and 4.6.1 and STUNner 1.2.1, in network namespaces joined by
# veth pairs as pods are. Needs root.
#
#   tests/bench/offload.sh --docs     the long form: rounds, the loss-free search, and the
#                                     "Kernel offload" section of docs/benchmarks.md
#   tests/bench/offload.sh --quick    the short form tests/run.sh runs (under a minute)
#
# Other options go to tests/bench/offload.py (--rate, --rounds, --secs, ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/turnpike"
cd "$root"

[ -n "${TURNPIKE_BIN:-}" ] || cargo build --release --quiet
bin="${TURNPIKE_BIN:-$root/target/release/turnpike}"
# shellcheck source=tests/bench/peers.sh
. "$root/tests/bench/peers.sh"
command -v ethtool >/dev/null || apt-get install -y -q ethtool >/dev/null

out="$root/target/bench/offload-$(date +%Y%m%d-%H%M%S).json"
mkdir -p "$(dirname "$out")"
args=()
docs=false
for a in "$@"; do
  if [ "$a" = "--docs" ]; then docs=true; args+=(--search); else args+=("$a"); fi
done
python3 tests/bench/offload.py --binary "$bin" --coturn-417 "$c417" --stunnerd "$stunnerd" \
  --json "$out" "${args[@]}"
echo "results: $out"
if $docs; then
  python3 tests/bench/offload_report.py "$out" docs/benchmarks.md \
    "tests/bench/offload.sh --docs"
fi
