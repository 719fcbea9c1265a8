#!/usr/bin/env bash
# Builds the kernel relay program: dataplane/bpf/relay.bpf.c -> relay.bpf.o (committed;
# dataplane/tests/bpf_object.rs rebuilds it and fails when the two differ).
#
#   dataplane/bpf/build.sh            # writes relay.bpf.o next to this script
#   dataplane/bpf/build.sh OUT.o      # writes OUT.o instead (what the test does)
#
# Needs Debian's clang and libbpf-dev (installed here when missing and run as root). The
# build is reproducible: no absolute paths or dates end up in the object.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here/relay.bpf.o}

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "build.sh: install ${missing[*]} (Debian packages) first" >&2
    exit 2
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian keeps asm/ under the multiarch include directory.
arch_include=/usr/include/$(uname -m)-linux-gnu
cd "$here"
clang -O2 -g -target bpf -Wall -Werror \
  -I"$arch_include" \
  -fdebug-prefix-map="$here"=. -fdebug-compilation-dir=. \
  -c relay.bpf.c -o "$out"
