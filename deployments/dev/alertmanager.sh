#!/usr/bin/env bash
# Prometheus Alertmanager for local development and integration tests. No
# Docker and no prebuilt binary: `go install .../cmd/alertmanager` fails
# because the module embeds its web UI (ui/app/dist), which is built by npm
# and not part of the Go module. This script downloads the module source
# through the Go module proxy, adds a one-page placeholder UI where the
# embed needs it, builds the binary once and caches it outside the repo.
# The API (/api/v2/...) is the real one; only the browser UI is missing.
#
# Usage: deployments/dev/alertmanager.sh {start|stop|status|env|build}
#
#   build   build and cache the binary (idempotent; a few minutes, one-off)
#   start   build if needed, start Alertmanager (idempotent); last stdout
#           line is its address, e.g. 127.0.0.1:21234
#   stop    stop it and delete its data
#   status  print "running <addr>" (exit 0) or "stopped" (exit 1)
#   env     start if needed, then print `export EHRDEV_ALERTMANAGER=<url>`;
#           use as: eval "$(deployments/dev/alertmanager.sh env)"
#
# It listens on 127.0.0.1 only, clustering off, and routes every alert to
# one receiver, "local", a webhook at EHRDEV_ALERTMANAGER_RECEIVER (by
# default http://127.0.0.1:9/, where nothing listens: notifications fail
# and are logged, alerts stay queryable at /api/v2/alerts).
#
# Environment:
#   EHRDEV_CACHE                   cache root          (default ~/.cache/ehrwatch)
#   EHRDEV_STATE               runtime state root  (default /tmp/ehrwatch-dev)
#   EHRDEV_ALERTMANAGER_VERSION    module version      (default pinned below)
#   EHRDEV_ALERTMANAGER_RESOLVE_TIMEOUT  global resolve_timeout (default 5s:
#                                    short, so tests see an alert without endsAt
#                                    resolve quickly; production uses 5m)
#   EHRDEV_ALERTMANAGER_RECEIVER   webhook URL of the local receiver
set -euo pipefail

AM_VERSION="${EHRDEV_ALERTMANAGER_VERSION:-v0.35.0}"
RESOLVE_TIMEOUT="${EHRDEV_ALERTMANAGER_RESOLVE_TIMEOUT:-5s}"
RECEIVER_URL="${EHRDEV_ALERTMANAGER_RECEIVER:-http://127.0.0.1:9/}"

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/../.." && pwd)"
USER_HOME=~
CACHE_DIR="${EHRDEV_CACHE:-${USER_HOME}/.cache/ehrwatch}/alertmanager-${AM_VERSION}"
BIN="${CACHE_DIR}/alertmanager"
STATE_DIR="${EHRDEV_STATE:-/tmp/ehrwatch-dev}/alertmanager"
PID_FILE="${STATE_DIR}/alertmanager.pid"
PORT_FILE="${STATE_DIR}/port"
OUT_FILE="${STATE_DIR}/alertmanager.log"
START_TIMEOUT=60

log() { printf 'alertmanager.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- build

do_build() {
  if [[ -x "${BIN}" ]]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || die "go not found"
  mkdir -p "${CACHE_DIR}"
  exec 8>"${CACHE_DIR}/.lock"
  flock 8
  if [[ -x "${BIN}" ]]; then
    exec 8>&-
    return 0
  fi
  log "building Alertmanager ${AM_VERSION} from its Go module source into ${CACHE_DIR} (one-off, a few minutes)"
  local work dir
  work="$(mktemp -d "${CACHE_DIR}/build.XXXXXX")"
  # A throwaway module so `go mod download` has somewhere to run.
  (cd "${work}" && go mod init ehrwatch.dev/amfetch >/dev/null 2>&1)
  dir="$(cd "${work}" && GOFLAGS=-mod=mod go mod download -json "github.com/prometheus/alertmanager@${AM_VERSION}" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "${dir}" && -d "${dir}" ]] || { rm -rf "${work}"; die "go mod download github.com/prometheus/alertmanager@${AM_VERSION} failed"; }
  # The module cache is read-only: build from a writable copy.
  cp -r "${dir}" "${work}/src"
  chmod -R u+w "${work}/src"
  # ui/web.go embeds app/dist and serves app/dist/elm and app/dist/mantine.
  for d in elm mantine; do
    mkdir -p "${work}/src/ui/app/dist/${d}"
    printf '<!doctype html><title>Alertmanager</title><p>UI not built (ehrwatch dev build); use the API at /api/v2/.\n' \
      >"${work}/src/ui/app/dist/${d}/index.html"
  done
  if ! (cd "${work}/src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "${work}/alertmanager" ./cmd/alertmanager) \
      >"${work}/build.log" 2>&1; then
    tail -n 40 "${work}/build.log" >&2 || true
    rm -rf "${work}"
    die "go build of Alertmanager ${AM_VERSION} failed"
  fi
  mv "${work}/alertmanager" "${BIN}"
  rm -rf "${work}"
  log "cached ${BIN} ($(du -sh "${BIN}" | cut -f1))"
  exec 8>&-
}

# ---------------------------------------------------------------- probing

pid_alive() {
  local pid
  [[ -f "${PID_FILE}" ]] || return 1
  pid="$(cat "${PID_FILE}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  kill -0 "${pid}" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q 'alertmanager'
}

# ready_ok PORT: Alertmanager's readiness endpoint answers 200.
ready_ok() {
  local reply
  # shellcheck disable=SC2016
  reply="$(timeout 5 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "GET /-/ready HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" >&3
      head -c 12 <&3' _ "$1" 2>/dev/null)" || return 1
  [[ "${reply}" == "HTTP/1.0 200" || "${reply}" == "HTTP/1.1 200" ]]
}

running_addr() {
  local port
  pid_alive || return 1
  [[ -f "${PORT_FILE}" ]] || return 1
  port="$(cat "${PORT_FILE}")"
  ready_ok "${port}" || return 1
  printf '127.0.0.1:%s\n' "${port}"
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    if port_free "${p}"; then
      printf '%s\n' "${p}"
      return 0
    fi
  done
  die "no free port found"
}

# ---------------------------------------------------------------- commands

do_stop() {
  mkdir -p "${STATE_DIR}"
  exec 9>"${STATE_DIR}/.lock"
  flock 9
  if pid_alive; then
    local pid i
    pid="$(cat "${PID_FILE}")"
    log "stopping Alertmanager (pid ${pid})"
    kill "${pid}" 2>/dev/null || true
    for i in $(seq 1 50); do
      kill -0 "${pid}" 2>/dev/null || break
      sleep 0.2
    done
    kill -9 "${pid}" 2>/dev/null || true
  fi
  rm -f "${PID_FILE}" "${PORT_FILE}"
  rm -rf "${STATE_DIR}/data"
}

do_start() {
  local addr
  if addr="$(running_addr)"; then
    printf '%s\n' "${addr}"
    return 0
  fi
  do_build
  mkdir -p "${STATE_DIR}"
  exec 9>"${STATE_DIR}/.lock"
  flock 9
  if addr="$(running_addr)"; then
    printf '%s\n' "${addr}"
    return 0
  fi
  if pid_alive; then
    kill "$(cat "${PID_FILE}")" 2>/dev/null || true
    sleep 1
  fi
  local attempt
  for attempt in 1 2 3; do
    if launch; then
      return 0
    fi
    if (( attempt < 3 )); then
      log "start attempt ${attempt} failed; retrying on another port"
    fi
  done
  die "Alertmanager did not start after 3 attempts (log: ${OUT_FILE})"
}

# launch: start Alertmanager once on a fresh port and wait until it is ready;
# print its address. Returns 1 (with the log tail and exit status on stderr)
# if it exits or is not ready in time.
launch() {
  local port addr launched i rc
  port="$(pick_port)"
  rm -rf "${STATE_DIR}/data"
  mkdir -p "${STATE_DIR}/data"
  cat >"${STATE_DIR}/alertmanager.yml" <<EOF
# Written by deployments/dev/alertmanager.sh; development only.
global:
  resolve_timeout: ${RESOLVE_TIMEOUT}
route:
  receiver: local
  group_by: [alert_id]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
receivers:
  - name: local
    webhook_configs:
      - url: '${RECEIVER_URL}'
        send_resolved: true
EOF
  log "starting Alertmanager ${AM_VERSION} on 127.0.0.1:${port} (resolve_timeout ${RESOLVE_TIMEOUT})"
  # setsid forks when its caller leads a process group, and then $! is a
  # parent that exits at once. The inner bash records its own pid and execs
  # Alertmanager: the pid file always holds the Alertmanager process,
  # whichever way setsid started it.
  rm -f "${PID_FILE}"
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "${PID_FILE}" \
    "${BIN}" \
    --config.file="${STATE_DIR}/alertmanager.yml" \
    --storage.path="${STATE_DIR}/data" \
    --web.listen-address="127.0.0.1:${port}" \
    --cluster.listen-address= \
    --log.level=info \
    >"${OUT_FILE}" 2>&1 </dev/null 9>&- 8>&- &
  launched=$!
  echo "${port}" >"${PORT_FILE}"
  for i in $(seq 1 50); do
    [[ -s "${PID_FILE}" ]] && break
    sleep 0.1
  done
  for i in $(seq 1 $((START_TIMEOUT * 5))); do
    if addr="$(running_addr)"; then
      printf '%s\n' "${addr}"
      return 0
    fi
    if ! pid_alive; then
      rc=0
      if kill -0 "${launched}" 2>/dev/null; then
        rc="unknown; launcher pid ${launched} still running"
      else
        wait "${launched}" 2>/dev/null || rc=$?
        if [[ "${rc}" =~ ^[0-9]+$ ]] && (( rc > 128 )); then
          rc="${rc} (signal $((rc - 128)))"
        fi
      fi
      tail -n 20 "${OUT_FILE}" >&2 || true
      log "Alertmanager exited at start: exit status ${rc} (log: ${OUT_FILE})"
      rm -f "${PID_FILE}" "${PORT_FILE}"
      return 1
    fi
    sleep 0.2
  done
  tail -n 20 "${OUT_FILE}" >&2 || true
  log "Alertmanager not ready after ${START_TIMEOUT}s (log: ${OUT_FILE})"
  kill -9 "$(cat "${PID_FILE}" 2>/dev/null)" 2>/dev/null || true
  rm -f "${PID_FILE}" "${PORT_FILE}"
  return 1
}

do_status() {
  local addr
  if addr="$(running_addr)"; then
    printf 'running %s\n' "${addr}"
    return 0
  fi
  printf 'stopped\n'
  return 1
}

do_env() {
  local addr
  addr="$(do_start | tail -n 1)"
  [[ -n "${addr}" ]] || die "could not start Alertmanager"
  printf 'export EHRDEV_ALERTMANAGER=http://%s\n' "${addr}"
}

main() {
  cd "${REPO_ROOT}"
  case "${1:-}" in
    build) do_build ;;
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    env) do_env ;;
    *)
      printf 'usage: %s {start|stop|status|env|build}\n' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
