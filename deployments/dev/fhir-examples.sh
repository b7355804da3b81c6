#!/usr/bin/env bash
# The AuditEvent examples HL7 publishes with FHIR R4 and R5, for the FHIR
# conformance test (schemas/fhir_conformance_test.go). Downloaded with npm
# (packages hl7.fhir.r4.examples 4.0.1 and hl7.fhir.r5.examples 5.0.0) and
# cached outside the repo; only the AuditEvent resources are kept, one JSON
# file each, as published (narrative included).
#
# Usage: deployments/dev/fhir-examples.sh {fetch|env}
#
#   fetch   download and extract (idempotent); prints the directory
#   env     fetch if needed, then print `export EHRDEV_FHIR_EXAMPLES=<dir>`;
#           use as: eval "$(deployments/dev/fhir-examples.sh env)"
#
# Environment:
#   EHRDEV_CACHE   cache root (default ~/.cache/ehrwatch)
set -euo pipefail

USER_HOME=~
DIR="${EHRDEV_CACHE:-${USER_HOME}/.cache/ehrwatch}/fhir-examples"
MARKER="${DIR}/.complete"
PACKAGES=("hl7.fhir.r4.examples@4.0.1:r4" "hl7.fhir.r5.examples@5.0.0:r5")

log() { printf 'fhir-examples.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

fetch() {
  if [[ -f "${MARKER}" ]]; then
    return 0
  fi
  command -v npm >/dev/null 2>&1 || die "npm not found (apt-get install npm)"
  mkdir -p "${DIR}"
  exec 8>"${DIR}/.lock"
  flock 8
  [[ -f "${MARKER}" ]] && return 0
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "${tmp}"' RETURN
  for spec in "${PACKAGES[@]}"; do
    local pkg="${spec%:*}" ver="${spec##*:}"
    log "downloading ${pkg} (npm pack)"
    (cd "${tmp}" && npm pack --silent "${pkg}" >/dev/null) || die "npm pack ${pkg} failed"
    mkdir -p "${tmp}/${ver}" "${DIR}/${ver}"
    tar -xzf "${tmp}"/hl7.fhir."${ver}".examples-*.tgz -C "${tmp}/${ver}" --wildcards 'package/AuditEvent-*.json'
    cp "${tmp}/${ver}"/package/AuditEvent-*.json "${DIR}/${ver}/"
  done
  touch "${MARKER}"
}

case "${1:-}" in
  fetch) fetch; echo "${DIR}" ;;
  env) fetch; echo "export EHRDEV_FHIR_EXAMPLES=${DIR}" ;;
  *) die "usage: $0 {fetch|env}" ;;
esac
