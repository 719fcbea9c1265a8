#!/usr/bin/env bash
# Builds the Turnpike image on a machine with no container registry: FROM scratch, from the
# release binary and only the runtime files it needs (tests/image/rootfs.sh, the same
# layout the Containerfile produces), with Debian's buildah. Writes an OCI archive and
# leaves the image in the local containers storage for podman.
#
#   tests/image/build.sh [--binary PATH (default: cargo build --release)] [--tag localhost/turnpike:VERSION]
#                        [--out ~/.cache/turnpike/image/turnpike.oci.tar]
#
# Prints the image reference, the archive's path and its size. Storage lives under
# ~/.cache/turnpike/containers (not /var/lib/containers); containers.conf there sets
# runc (crun fails on hybrid cgroup v1) and nofile/nproc limits within this machine's.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/turnpike"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
binary=""
tag="localhost/turnpike:$version"
out="$cache/image/turnpike.oci.tar"
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--binary PATH] [--tag REF] [--out FILE]" >&2; exit 2 ;;
  esac
done

log() { printf '%s\n' "$*" >&2; }

if ! command -v buildah >/dev/null || ! command -v podman >/dev/null; then
  log "installing buildah and podman (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq buildah podman runc >/dev/null
fi
# Without --binary: the workspace's release build (the same features `cargo build
# --release` and the tests use).
if [ -z "$binary" ]; then
  (cd "$root" && cargo build --release --quiet)
  binary="$root/target/release/turnpike"
fi

# shellcheck source=tests/image/containers-env.sh
. "$root/tests/image/containers-env.sh"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$root/tests/image/rootfs.sh" "$binary" "$work/rootfs"

revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
# Reproducible timestamps: the commit's time, not the build's.
epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)

ctr=$(buildah "${storage[@]}" from --quiet scratch)
cleanup() { buildah "${storage[@]}" rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
buildah "${storage[@]}" copy --quiet "$ctr" "$work/rootfs/" / >/dev/null
buildah "${storage[@]}" config \
  --entrypoint '["/usr/local/bin/turnpike"]' --cmd '' \
  --user 65532:65532 --workingdir /home/nonroot \
  --env TURNPIKE_LOG_FORMAT=json \
  --label org.opencontainers.image.title=turnpike \
  --label "org.opencontainers.image.description=Kubernetes media gateway for WebRTC (TURN dataplane, Gateway API operator, auth service)" \
  --label org.opencontainers.image.source=https://github.com/turnpike-dev/turnpike \
  --label "org.opencontainers.image.version=$version" \
  --label "org.opencontainers.image.revision=$revision" \
  --label org.opencontainers.image.licenses=Apache-2.0 \
  "$ctr"
buildah "${storage[@]}" commit --quiet --format oci --timestamp "$epoch" --rm "$ctr" "$tag" >/dev/null
# A rebuild under the same tag leaves the previous image untagged.
buildah "${storage[@]}" rmi --prune >/dev/null 2>&1 || true
trap 'rm -rf "$work"' EXIT

mkdir -p "$(dirname "$out")"
rm -f "$out"
buildah "${storage[@]}" push --quiet "$tag" "oci-archive:$out:$tag" >/dev/null
echo "image $tag"
echo "archive $out"
echo "size $(stat -c %s "$out")"
