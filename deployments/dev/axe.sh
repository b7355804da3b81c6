#!/usr/bin/env bash
# axe-core (Deque's accessibility engine) for the console's browser tests,
# which inject axe.min.js into every page and fail on serious or critical
# violations. Downloaded once with `npm pack` (the published tarball, no
# node_modules, no install scripts) and cached outside the repo.
#
# Usage: deployments/dev/axe.sh {fetch|path|env}
#
#   fetch   download and extract (idempotent)
#   path    fetch if needed, print the path of axe.min.js
#   env     fetch if needed, print `export EHRDEV_AXE=<path to axe.min.js>`;
#           use as: eval "$(deployments/dev/axe.sh env)"
#
# Environment:
#   EHRDEV_CACHE        cache root (default ~/.cache/ehrwatch)
#   EHRDEV_AXE_VERSION  axe-core version (default pinned below)
set -euo pipefail

VERSION="${EHRDEV_AXE_VERSION:-4.14.1}"
USER_HOME=~ # tilde also works when HOME is unset
DIR="${EHRDEV_CACHE:-${USER_HOME}/.cache/ehrwatch}/axe-core-${VERSION}"
FILE="${DIR}/axe.min.js"
MARKER="${DIR}/.complete"

log() { printf 'axe.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

fetch() {
  [[ -f "${MARKER}" && -s "${FILE}" ]] && return 0
  command -v npm >/dev/null 2>&1 || die "npm not found (apt-get install npm)"
  mkdir -p "${DIR}"
  exec 8>"${DIR}/.lock"
  flock 8
  [[ -f "${MARKER}" && -s "${FILE}" ]] && return 0
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "${tmp}"' RETURN
  log "downloading axe-core@${VERSION} (npm pack, one-off)"
  (cd "${tmp}" && npm pack --silent "axe-core@${VERSION}" >/dev/null) || die "npm pack axe-core@${VERSION} failed"
  tar -xzf "${tmp}/axe-core-${VERSION}.tgz" -C "${tmp}" package/axe.min.js package/LICENSE package/package.json
  grep -q "\"version\": \"${VERSION}\"" "${tmp}/package/package.json" || die "tarball is not axe-core ${VERSION}"
  cp "${tmp}/package/axe.min.js" "${tmp}/package/LICENSE" "${DIR}/"
  touch "${MARKER}"
}

case "${1:-}" in
  fetch) fetch ;;
  path) fetch; echo "${FILE}" ;;
  env) fetch; echo "export EHRDEV_AXE=${FILE}" ;;
  *) die "usage: $0 {fetch|path|env}" ;;
esac
