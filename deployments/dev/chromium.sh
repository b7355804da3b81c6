#!/usr/bin/env bash
# Headless Chromium for the console's browser tests (pipeline/console). No
# Docker and no download from Google: Debian's `chromium` package, installed
# with apt-get when absent (`apt-get update` runs at most once, remembered by
# a marker under the cache root).
#
# Usage: deployments/dev/chromium.sh {install|path|env}
#
#   install  install Debian's chromium if absent (idempotent)
#   path     install if needed, print the browser's path
#   env      install if needed, print `export EHRDEV_CHROMIUM=<path>`;
#            use as: eval "$(deployments/dev/chromium.sh env)"
#
# Environment:
#   EHRDEV_CACHE     cache root (default ~/.cache/ehrwatch)
#   EHRDEV_CHROMIUM  an existing browser binary to use instead (any
#                    Chromium or Chrome >= 120); nothing is installed then
set -euo pipefail

USER_HOME=~ # tilde also works when HOME is unset
CACHE_DIR="${EHRDEV_CACHE:-${USER_HOME}/.cache/ehrwatch}/chromium"
UPDATED="${CACHE_DIR}/.apt-updated"

log() { printf 'chromium.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

find_browser() {
  local c
  if [[ -n "${EHRDEV_CHROMIUM:-}" ]]; then
    [[ -x "${EHRDEV_CHROMIUM}" ]] || return 1
    printf '%s\n' "${EHRDEV_CHROMIUM}"
    return 0
  fi
  for c in chromium chromium-browser; do
    if command -v "${c}" >/dev/null 2>&1; then
      command -v "${c}"
      return 0
    fi
  done
  return 1
}

install() {
  if [[ -n "${EHRDEV_CHROMIUM:-}" ]]; then
    [[ -x "${EHRDEV_CHROMIUM}" ]] || die "EHRDEV_CHROMIUM=${EHRDEV_CHROMIUM} is not an executable"
    return 0
  fi
  find_browser >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "chromium not found and no apt-get: install Chromium and set EHRDEV_CHROMIUM=<path>"
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "chromium not found; run as root or install it: apt-get install chromium"
    sudo=(sudo -n)
  fi
  mkdir -p "${CACHE_DIR}"
  exec 8>"${CACHE_DIR}/.lock"
  flock 8
  find_browser >/dev/null 2>&1 && return 0
  if [[ ! -f "${UPDATED}" ]] || ! apt-cache show chromium >/dev/null 2>&1; then
    log "apt-get update (one-off)"
    "${sudo[@]}" apt-get update -qq >&2 || die "apt-get update failed"
    date -u +%FT%TZ >"${UPDATED}"
  fi
  log "installing Debian's chromium (one-off, a few minutes)"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
    chromium fonts-dejavu-core >&2 || die "apt-get install chromium failed"
  find_browser >/dev/null || die "chromium installed but not on PATH"
}

case "${1:-}" in
  install) install; find_browser >/dev/null ;;
  path) install; find_browser ;;
  env) install; echo "export EHRDEV_CHROMIUM=$(find_browser)" ;;
  *) die "usage: $0 {install|path|env}" ;;
esac
