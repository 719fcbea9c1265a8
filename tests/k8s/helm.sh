#!/usr/bin/env bash
# Prints the path of a helm binary for tests, building it from the helm.sh/helm/v3 Go
# module on first use (cached under ~/.cache/turnpike/, keyed by version). Debian has no
# helm package and nothing may be downloaded from outside the registries.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-3.22.0}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/turnpike"
bin="$cache/helm-$HELM_VERSION"

if command -v helm >/dev/null 2>&1 && [ -z "${TURNPIKE_BUILD_HELM:-}" ]; then
  command -v helm
  exit 0
fi
if [ ! -x "$bin/helm" ]; then
  command -v go >/dev/null || { echo "go is required to build helm" >&2; exit 2; }
  echo "building helm v$HELM_VERSION (first run only)" >&2
  src="$bin/src"
  mkdir -p "$src"
  printf 'module turnpike.dev/helm-fixture\n\ngo 1.24\n\nrequire helm.sh/helm/v3 v%s\n' "$HELM_VERSION" > "$src/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "helm.sh/helm/v3/cmd/helm"\n' > "$src/tools.go"
  (cd "$src" && GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go build -o "$bin/helm" helm.sh/helm/v3/cmd/helm)
fi
echo "$bin/helm"
