#!/usr/bin/env bash
# Builds the Janus demo's image with no registry: mmdebstrap lays out a root filesystem from
# Debian bookworm's packages (janus 1.1.2 with its plugins, nodejs for the app server,
# ca-certificates), buildah commits it FROM scratch. One image serves both containers of
# the demo's pod (examples/janus/kubernetes): the configurations and the app come from
# ConfigMaps, so changing them needs no rebuild.
#
#   examples/janus/image.sh [--tag localhost/janus-demo:1.1.2] [--out FILE] [--mirror URL]
#
# Prints the image reference, the archive's path and its size. The OCI archive is cached
# under ~/.cache/turnpike/janus-image, keyed by this script's contents, the tag and the
# mirror: a second run reuses it. Needs root (mmdebstrap installs packages into the root filesystem as root).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/turnpike/janus-image"
tag=localhost/janus-demo:1.1.2
out=""
mirror=http://deb.debian.org/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --mirror) mirror=$2; shift 2 ;;
    *) echo "usage: $0 [--tag REF] [--out FILE] [--mirror URL]" >&2; exit 2 ;;
  esac
done

log() { printf '%s\n' "$*" >&2; }

key=$( (cat "$0"; echo "$tag $mirror") | sha256sum | cut -c1-16)
cached="$cache/janus-demo-$key.oci.tar"
out=${out:-$cached}

# shellcheck source=tests/image/containers-env.sh
. "$root/tests/image/containers-env.sh"

emit() {
  echo "image $tag"
  echo "archive $out"
  echo "size $(stat -c %s "$out")"
}

if [ -f "$cached" ]; then
  [ "$out" = "$cached" ] || cp "$cached" "$out"
  emit
  exit 0
fi

[ "$(id -u)" -eq 0 ] || { log "building the Janus image needs root (mmdebstrap)"; exit 2; }
missing=()
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v buildah >/dev/null || missing+=(buildah)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d)
ctr=""
cleanup() {
  [ -n "$ctr" ] && buildah "${storage[@]}" rm "$ctr" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

log "laying out the Janus root filesystem from Debian packages (mmdebstrap)"
# Reproducible: file times from a fixed epoch, not the build's.
export SOURCE_DATE_EPOCH=1735689600
# "essential" is dpkg, the shell and coreutils: enough for the packages' maintainer scripts.
# Documentation, manual pages and translations are left out, and apt's lists and caches
# removed at the end: the image never installs anything.
mmdebstrap --quiet --variant=essential \
  --include=janus,nodejs,ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/janus/demos/*' \
  --customize-hook='echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin" >> "$1/etc/passwd"' \
  --customize-hook='echo "nonroot:x:65532:" >> "$1/etc/group"' \
  --customize-hook='mkdir -p "$1/home/nonroot" && chown 65532:65532 "$1/home/nonroot"' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*' \
  bookworm "$work/rootfs.tar" "deb $mirror bookworm main"

version=$(tar -xOf "$work/rootfs.tar" ./var/lib/dpkg/status |
  awk '/^Package: / {p = ($2 == "janus")} p && /^Version:/ {print $2}')
log "committing the image (janus $version)"
ctr=$(buildah "${storage[@]}" from --quiet scratch)
buildah "${storage[@]}" add --quiet "$ctr" "$work/rootfs.tar" / >/dev/null
buildah "${storage[@]}" config \
  --cmd '["/usr/bin/janus", "--configs-folder=/etc/janus", "--disable-colors"]' \
  --user 65532:65532 --workingdir /home/nonroot \
  --label org.opencontainers.image.title=janus-demo \
  --label "org.opencontainers.image.description=Janus $version and Node.js from Debian bookworm, for Turnpike's Janus demo" \
  --label "org.opencontainers.image.version=$version" \
  "$ctr"
buildah "${storage[@]}" commit --quiet --format oci --timestamp "$SOURCE_DATE_EPOCH" --rm "$ctr" "$tag" >/dev/null
ctr=""
buildah "${storage[@]}" rmi --prune >/dev/null 2>&1 || true

mkdir -p "$cache" "$(dirname "$out")"
# Older archives of this image (other script versions) are replaced.
rm -f "$cache"/janus-demo-*.oci.tar
buildah "${storage[@]}" push --quiet "$tag" "oci-archive:$work/image.tar:$tag" >/dev/null
mv "$work/image.tar" "$cached"
[ "$out" = "$cached" ] || cp "$cached" "$out"
emit
