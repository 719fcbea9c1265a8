#!/usr/bin/env bash
# Lays out the image's root filesystem from a built `turnpike` binary:
#
#   tests/image/rootfs.sh BINARY DIR
#
# DIR gets the binary (stripped: the image stays under 30 MB), exactly the shared
# libraries the dynamic loader resolves for it (ldd), passwd/group entries for the non-root
# user 65532 and an nsswitch.conf, and nothing else: no shell, no package manager. The
# Containerfile runs this in its build stage and tests/image/build.sh runs it on the host,
# so both images have the same contents.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BINARY DIR" >&2; exit 2; }
binary=$1 out=$2
[ -x "$binary" ] || { echo "$binary: not an executable" >&2; exit 1; }

rm -rf "$out"
mkdir -p "$out/usr/local/bin" "$out/etc" "$out/tmp" "$out/home/nonroot"
chmod 1777 "$out/tmp"
strip --strip-all -o "$out/usr/local/bin/turnpike" "$binary"

# Every library the loader resolves, under the path it resolves it at (the loader itself
# is listed with its absolute path, /lib64/ld-linux-x86-64.so.2 on x86_64).
ldd "$binary" 2>/dev/null | grep -o '/[^ ]*' | sort -u |
  while read -r lib; do
    mkdir -p "$out$(dirname "$lib")"
    cp -L "$lib" "$out$lib"
  done
cat > "$out/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
cat > "$out/etc/group" <<'GROUP'
root:x:0:
nonroot:x:65532:
GROUP
printf 'hosts: files dns\n' > "$out/etc/nsswitch.conf"
chown 65532:65532 "$out/home/nonroot" 2>/dev/null || true
