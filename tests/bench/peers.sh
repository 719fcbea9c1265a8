# Sourced by the benchmark scripts: finds (or builds, once) the peers Turnpike is compared
# with and sets $c417 (coturn 4.17.1's turnserver, or empty) and $stunnerd (STUNner's
# stunnerd 1.2.1, or empty). Needs $root and $cache; installs coturn 4.6.1 and the
# libraries coturn 4.17.1 needs from Debian when missing.
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
