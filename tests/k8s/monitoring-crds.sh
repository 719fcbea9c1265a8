#!/usr/bin/env bash
# Prints the directory holding prometheus-operator's CRDs (PodMonitor, PrometheusRule, ...),
# taken from its Go module: Go's module proxy is reachable here, GitHub releases are not.
# The module stays in Go's module cache, so a second run downloads nothing.
set -euo pipefail
VERSION=${PROMETHEUS_OPERATOR_VERSION:-0.80.1}
command -v go >/dev/null || { echo "go is required for the prometheus-operator CRDs" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
dir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@v$VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -d "$dir/example/prometheus-operator-crd" ] || { echo "no CRDs in $dir" >&2; exit 1; }
echo "$dir/example/prometheus-operator-crd"
