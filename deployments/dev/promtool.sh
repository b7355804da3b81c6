#!/usr/bin/env bash
# promtool (Prometheus's rule checker) for the tests, built from the
# Prometheus Go module with `go install` (one-off, cached like the Kafka
# jars) because no release binary can be downloaded here.
#
#   deployments/dev/promtool.sh path   build if needed, print the binary's path
#   deployments/dev/promtool.sh env    build if needed, print `export EHRDEV_PROMTOOL=<path>`
#
#   EHRDEV_CACHE             cache root (default ~/.cache/ehrwatch)
#   EHRDEV_PROMETHEUS_MODULE Prometheus module version (default pinned below)
set -euo pipefail

VERSION="${EHRDEV_PROMETHEUS_MODULE:-v0.316.0}"
home="${HOME:-/root}"
dir="${EHRDEV_CACHE:-$home/.cache/ehrwatch}/promtool-${VERSION}"
bin="$dir/promtool"

build() {
	if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
		return
	fi
	echo "promtool.sh: building promtool from github.com/prometheus/prometheus@${VERSION} into $dir (one-off, a few minutes)" >&2
	mkdir -p "$dir"
	GOFLAGS=-buildvcs=false GOBIN="$dir" go install "github.com/prometheus/prometheus/cmd/promtool@${VERSION}" >&2
	"$bin" --version >/dev/null
}

case "${1:-}" in
path) build; echo "$bin" ;;
env) build; echo "export EHRDEV_PROMTOOL=$bin" ;;
*) echo "usage: $0 path|env" >&2; exit 2 ;;
esac
