#!/usr/bin/env bash
# The project's test command (`make test` runs it; so does CI).
#
# Installs what the tests need (Go modules, Kafka's jars from Maven Central,
# chDB from PyPI, HL7's FHIR example packages and axe-core from npm, an
# Alertmanager built from its Go module source, all cached under
# ~/.cache/ehrwatch; Debian's chromium through apt-get),
# starts a real Kafka broker, the ClickHouse engine and Alertmanager
# (unless they already run), runs the static
# checks and the whole Go test suite against them, and stops the services it
# started. Extra arguments go to `go test` (e.g. -run Pipeline).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

log() { printf '== %s %s\n' "$(date +%H:%M:%S)" "$*"; }

started=()
cleanup() {
	if [ "${EHRDEV_KEEP_SERVICES:-0}" != 1 ]; then
		for svc in "${started[@]}"; do
			bash "$here/$svc.sh" stop >/dev/null 2>&1 || true
		done
	fi
}
trap cleanup EXIT

log "go modules"
go mod download

for svc in kafka clickhouse alertmanager; do
	if ! bash "$here/$svc.sh" status >/dev/null 2>&1; then
		started+=("$svc")
	fi
	log "starting $svc"
	bash "$here/$svc.sh" start
	eval "$(bash "$here/$svc.sh" env)"
done
export EHRDEV_KAFKA EHRDEV_CLICKHOUSE EHRDEV_ALERTMANAGER

log "FHIR example packages"
eval "$(bash "$here/fhir-examples.sh" env)"
export EHRDEV_FHIR_EXAMPLES

log "promtool"
eval "$(bash "$here/promtool.sh" env)"
export EHRDEV_PROMTOOL

log "chromium"
eval "$(bash "$here/chromium.sh" env)"
export EHRDEV_CHROMIUM

log "axe-core"
eval "$(bash "$here/axe.sh" env)"
export EHRDEV_AXE

log "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

log "go mod tidy"
if ! go mod tidy -diff; then
	echo "go.mod/go.sum are not tidy: run go mod tidy"; exit 1
fi

log "go vet"
go vet ./...

log "go test -race"
# Tests that cannot check everything they mean to skip explicitly
# (testenv.Skip) and say why here, at the end of the log.
export EHRDEV_SKIP_LOG="${TMPDIR:-/tmp}/ehrwatch-skips.$$"
rm -f "$EHRDEV_SKIP_LOG"
status=0
go test -race -count=1 -timeout 25m "$@" ./... || status=$?
if [ -s "$EHRDEV_SKIP_LOG" ]; then
	log "skipped, with reasons"
	sort "$EHRDEV_SKIP_LOG"
fi
rm -f "$EHRDEV_SKIP_LOG"
[ "$status" -eq 0 ] || exit "$status"
log "done"
