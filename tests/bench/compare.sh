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

need=()
command -v turnutils_uclient >/dev/null || need+=(coturn)
# coturn 4.17.1 sits beside the repository in this workplace (../shared/peers); a clone
# elsewhere finds it through COTURN_417_BIN or the workplace's own path.
c417="${COTURN_417_BIN:-}"
for candidate in "$root/../shared/peers/coturn-4.17.1/bin/turnserver" \
                 /work/shared/peers/coturn-4.17.1/bin/turnserver; do
  if [ -z "$c417" ] && [ -x "$candidate" ]; then c417=$candidate; fi
done
c417=${c417:-$root/../shared/peers/coturn-4.17.1/bin/turnserver}
if [ -x "$c417" ] && ldd "$c417" | grep -q 'not found'; then
  need+=(libevent-2.1-7 libevent-openssl-2.1-7 libevent-pthreads-2.1-7 libevent-extra-2.1-7
         libmicrohttpd12 libsqlite3-0 libpq5)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y -q "${need[@]}" >/dev/null
fi
[ -x "$c417" ] || { echo "coturn 4.17.1 not found at $c417: comparing without it" >&2; c417=""; }

# STUNner: `go install …@v1.2.1` is refused by the module proxy (403 on the version
# list); a wrapper module that requires the exact version builds it.
stunnerd="${STUNNERD_BIN:-$cache/peers/stunnerd-1.2.1/stunnerd}"
if [ ! -x "$stunnerd" ] && command -v go >/dev/null; then
  w="$cache/peers/stunnerd-1.2.1"
  mkdir -p "$w"
  printf 'module peers\ngo 1.26\nrequire github.com/l7mp/stunner v1.2.1\n' > "$w/go.mod"
  printf '//go:build tools\npackage peers\nimport _ "github.com/l7mp/stunner/cmd/stunnerd"\n' > "$w/tools.go"
  echo "building stunnerd 1.2.1 (once; several minutes)" >&2
  (cd "$w" && go mod tidy >/dev/null 2>&1 && go build -o stunnerd github.com/l7mp/stunner/cmd/stunnerd) \
    || echo "stunnerd did not build: comparing without it" >&2
fi
[ -x "$stunnerd" ] || stunnerd=""

python=python3
if [[ " $* " == *" --docs "* ]]; then
  venv="$cache/bench-venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import matplotlib' 2>/dev/null \
    || "$venv/bin/pip" install -q --disable-pip-version-check 'matplotlib>=3.8,<4'
  python="$venv/bin/python"
fi
exec "$python" tests/bench/compare.py --binary "$bin" --coturn-417 "$c417" --stunnerd "$stunnerd" "$@"
