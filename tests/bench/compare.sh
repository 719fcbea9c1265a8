#!/usr/bin/env bash
# Side-by-side benchmark of Turnpike against coturn 4.6.1 (Debian), coturn 4.17.1 (built
# from source: ../shared/peers/coturn-4.17.1, or COTURN_417_BIN) and STUNner stunnerd
# 1.2.1 (built here once from its Go module, cached under ~/.cache/turnpike/peers).
#
#   tests/bench/compare.sh --docs      the long form: regenerates docs/benchmarks.md and
#                                      its plots (about 16 minutes on 2 cores)
#   tests/bench/compare.sh --quick     the short form tests/run.sh runs (about 2 minutes)
#
# Other options go to tests/bench/compare.py (--rounds, --load, --baseline BIN, ...).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/turnpike"
cd "$root"

[ -n "${TURNPIKE_BIN:-}" ] || cargo build --release --quiet
bin="${TURNPIKE_BIN:-$root/target/release/turnpike}"

# shellcheck source=tests/bench/peers.sh
. "$root/tests/bench/peers.sh"

python=python3
if [[ " $* " == *" --docs "* ]]; then
  venv="$cache/bench-venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import matplotlib' 2>/dev/null \
    || "$venv/bin/pip" install -q --disable-pip-version-check 'matplotlib>=3.8,<4'
  python="$venv/bin/python"
fi
exec "$python" tests/bench/compare.py --binary "$bin" --coturn-417 "$c417" --stunnerd "$stunnerd" "$@"
