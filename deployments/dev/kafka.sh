#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft, broker+controller in one JVM) for local
# development and integration tests. No Docker: the broker's jars come from
# Maven Central through the machine's `mvn` and are cached outside the repo.
#
# Usage: deployments/dev/kafka.sh {start|stop|restart|status|env}
#
#   start   start the broker (idempotent); last stdout line is the bootstrap
#           address, e.g. 127.0.0.1:21234
#   stop    stop the broker and delete its data
#   restart stop the broker and start it again with its data, on the same
#           port (for tests: only on a broker of your own, started with its
#           own EHRDEV_STATE)
#   status  print "running <addr>" (exit 0) or "stopped" (exit 1)
#   env     start if needed, then print `export EHRDEV_KAFKA=<addr>`;
#           use as: eval "$(deployments/dev/kafka.sh env)"
#
# Environment:
#   EHRDEV_CACHE              jar cache root      (default ~/.cache/ehrwatch)
#   EHRDEV_STATE          runtime state root  (default /tmp/ehrwatch-dev)
#   EHRDEV_KAFKA_VERSION      Kafka version       (default pinned below)
#   EHRDEV_KAFKA_START_TIMEOUT seconds to wait for readiness (default 90)
#   EHRDEV_KAFKA_HEAP         JVM heap flags      (default "-Xms256m -Xmx512m")
set -euo pipefail

KAFKA_VERSION="${EHRDEV_KAFKA_VERSION:-4.4.0}"
SCALA_VERSION="2.13"
# Kafka 4.x logs through slf4j 1.7 (pinned by its pom) -> log4j2.
SLF4J_VERSION="1.7.36"
LOG4J_VERSION="2.24.3"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd -- "${SCRIPT_DIR}/../.." && pwd)"
USER_HOME=~ # tilde also works when HOME is unset
CACHE_DIR="${EHRDEV_CACHE:-${USER_HOME}/.cache/ehrwatch}/kafka-${KAFKA_VERSION}"
LIB_DIR="${CACHE_DIR}/libs"
MARKER="${CACHE_DIR}/.complete"
STATE_DIR="${EHRDEV_STATE:-/tmp/ehrwatch-dev}/kafka"
PID_FILE="${STATE_DIR}/kafka.pid"
PORT_FILE="${STATE_DIR}/port"
LAST_PORTS_FILE="${STATE_DIR}/last-ports"
DATA_FILE="${STATE_DIR}/datadir"
LOG_FILE="${STATE_DIR}/server.log"
OUT_FILE="${STATE_DIR}/stdout.log"
START_TIMEOUT="${EHRDEV_KAFKA_START_TIMEOUT:-90}"
HEAP_OPTS="${EHRDEV_KAFKA_HEAP:--Xms256m -Xmx512m}"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- download

fetch_jars() {
  if [[ -f "${MARKER}" ]]; then
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
  command -v java >/dev/null 2>&1 || die "java not found (apt-get install openjdk-17-jre-headless)"
  mkdir -p "${CACHE_DIR}"
  # Serialise concurrent downloads.
  exec 8>"${CACHE_DIR}/.lock"
  flock 8
  if [[ -f "${MARKER}" ]]; then
    exec 8>&-
    return 0
  fi
  log "fetching Apache Kafka ${KAFKA_VERSION} from Maven Central into ${CACHE_DIR} (one-off)"
  local work
  work="$(mktemp -d "${CACHE_DIR}/fetch.XXXXXX")"
  cat >"${work}/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.ehrwatch</groupId>
  <artifactId>kafka-dev-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_${SCALA_VERSION}</artifactId>
      <version>${KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>${SLF4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>${LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
EOF
  if ! mvn -B -q --no-transfer-progress -f "${work}/pom.xml" \
      "${DEP_PLUGIN}:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="${work}/libs" \
      >"${work}/mvn.log" 2>&1 </dev/null; then
    tail -n 40 "${work}/mvn.log" >&2 || true
    rm -rf "${work}"
    die "maven could not fetch kafka_${SCALA_VERSION}:${KAFKA_VERSION}"
  fi
  [[ -f "${work}/libs/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar" ]] \
    || die "kafka jar missing after download (see ${work}/mvn.log)"
  rm -rf "${LIB_DIR}"
  mv "${work}/libs" "${LIB_DIR}"
  cp "${work}/pom.xml" "${CACHE_DIR}/pom.xml"
  rm -rf "${work}"
  date -u +%FT%TZ >"${MARKER}"
  log "cached $(find "${LIB_DIR}" -name '*.jar' | wc -l) jars ($(du -sh "${LIB_DIR}" | cut -f1))"
  exec 8>&-
}

# ---------------------------------------------------------------- probing

pid_alive() {
  local pid
  [[ -f "${PID_FILE}" ]] || return 1
  pid="$(cat "${PID_FILE}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] || return 1
  kill -0 "${pid}" 2>/dev/null || return 1
  # Guard against a recycled pid.
  tr '\0' ' ' <"/proc/${pid}/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'
}

# api_versions_ok PORT: send a Kafka ApiVersions v0 request (correlation id
# 7, empty client id) and check the response echoes the correlation id with
# error code 0. Proves the broker speaks the protocol, not just that a port
# is open.
api_versions_ok() {
  local port="$1" reply
  # shellcheck disable=SC2016 # expanded by the inner bash
  reply="$(
    timeout 5 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
      printf "\x00\x00\x00\x0a\x00\x12\x00\x00\x00\x00\x00\x07\x00\x00" >&3
      head -c 10 <&3 | od -An -tx1 | tr -d " \n"
    ' _ "${port}" 2>/dev/null
  )" || return 1
  # bytes: size(4) correlation_id(4)=7 error_code(2)=0
  [[ "${reply:8:12}" == "000000070000" ]]
}

running_addr() {
  local port
  pid_alive || return 1
  [[ -f "${PORT_FILE}" ]] || return 1
  port="$(cat "${PORT_FILE}")"
  api_versions_ok "${port}" || return 1
  printf '127.0.0.1:%s\n' "${port}"
}

port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Random port below the Linux ephemeral range so client sockets don't collide.
pick_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + (RANDOM * 32768 + RANDOM) % 12000))
    if port_free "${p}" && [[ "${p}" != "${1:-0}" ]]; then
      printf '%s\n' "${p}"
      return 0
    fi
  done
  die "no free port found after ${i} tries"
}

# ---------------------------------------------------------------- commands

cleanup_data() {
  if [[ -f "${DATA_FILE}" ]]; then
    local d
    d="$(cat "${DATA_FILE}")"
    case "${d}" in
      "${STATE_DIR}"/data.*) rm -rf -- "${d}" ;;
    esac
    rm -f "${DATA_FILE}"
  fi
}

do_stop() {
  mkdir -p "${STATE_DIR}"
  exec 9>"${STATE_DIR}/.lock"
  flock 9
  if pid_alive; then
    stop_broker
  else
    log "broker not running"
  fi
  rm -f "${PID_FILE}" "${PORT_FILE}"
  cleanup_data
}

do_start() {
  local addr
  mkdir -p "${STATE_DIR}"
  exec 9>"${STATE_DIR}/.lock"
  flock 9
  if addr="$(running_addr)"; then
    log "already running"
    printf '%s\n' "${addr}"
    return 0
  fi
  if pid_alive; then
    # Alive but not answering (still starting in another shell, or wedged).
    local port
    port="$(cat "${PORT_FILE}" 2>/dev/null || true)"
    if [[ -n "${port}" ]] && wait_ready "$(cat "${PID_FILE}")" "${port}"; then
      printf '127.0.0.1:%s\n' "${port}"
      return 0
    fi
    log "broker process is not answering; restarting it"
    kill -KILL "$(cat "${PID_FILE}")" 2>/dev/null || true
  fi
  rm -f "${PID_FILE}" "${PORT_FILE}"
  cleanup_data

  fetch_jars

  local port="" cport="" data cluster_id pid
  # Reuse the previous run's ports when free, so an exported
  # EHRDEV_KAFKA stays valid across stop/start.
  if [[ -f "${LAST_PORTS_FILE}" ]]; then
    read -r port cport <"${LAST_PORTS_FILE}" || true
    if ! [[ "${port}" =~ ^[0-9]+$ && "${cport}" =~ ^[0-9]+$ ]] \
        || ! port_free "${port}" || ! port_free "${cport}"; then
      port="" cport=""
    fi
  fi
  if [[ -z "${port}" ]]; then
    port="$(pick_port)"
    cport="$(pick_port "${port}")"
  fi
  printf '%s %s\n' "${port}" "${cport}" >"${LAST_PORTS_FILE}"
  data="$(mktemp -d "${STATE_DIR}/data.XXXXXX")"
  printf '%s\n' "${data}" >"${DATA_FILE}"
  mkdir -p "${data}/logs"

  cat >"${STATE_DIR}/server.properties" <<EOF
# Generated by deployments/dev/kafka.sh -- single-node dev/test broker.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${cport}
listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${cport}
advertised.listeners=PLAINTEXT://127.0.0.1:${port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=${data}/logs
num.partitions=4
default.replication.factor=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
log.retention.hours=24
EOF

  cat >"${STATE_DIR}/log4j2.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="${LOG_FILE}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="kafka.authorizer.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
EOF

  local -a jvm
  jvm_cmd

  # Random base64url UUID. Like Kafka's Uuid.randomUuid, avoid a leading '-':
  # the storage tool's argument parser would take it for an option.
  cluster_id="-"
  while [[ "${cluster_id}" == -* ]]; do
    cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  done
  log "formatting storage (cluster id ${cluster_id})"
  if ! "${jvm[@]}" kafka.tools.StorageTool format --ignore-formatted \
      -t "${cluster_id}" -c "${STATE_DIR}/server.properties" \
      >"${STATE_DIR}/format.log" 2>&1 </dev/null 8>&- 9>&-; then
    cat "${STATE_DIR}/format.log" >&2
    die "storage format failed"
  fi

  log "starting broker on 127.0.0.1:${port} (controller ${cport}); log: ${LOG_FILE}"
  launch "${port}"
}

# jvm_cmd sets the caller's array jvm to the java command line.
jvm_cmd() {
  # shellcheck disable=SC2206 # word-splitting of HEAP_OPTS is intended
  jvm=(java ${HEAP_OPTS} -XX:+UseG1GC -XX:MaxGCPauseMillis=20
    -Djava.awt.headless=true
    -Dlog4j2.configurationFile="${STATE_DIR}/log4j2.xml"
    -Dkafka.logs.dir="${STATE_DIR}"
    -cp "${LIB_DIR}/*")
}

# launch PORT: start the broker of ${STATE_DIR}/server.properties in the
# background and wait until it is ready; print its address.
launch() {
  local port="$1" pid i
  local -a jvm
  jvm_cmd
  [[ -f "${LOG_FILE}" ]] && mv -f "${LOG_FILE}" "${LOG_FILE}.1"
  : >"${LOG_FILE}"
  # setsid+nohup: own session, survives this shell and its terminal. The
  # inner bash records its pid and execs java, so the pid file holds the JVM's.
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "${PID_FILE}" \
    "${jvm[@]}" kafka.Kafka "${STATE_DIR}/server.properties" \
    >"${OUT_FILE}" 2>&1 </dev/null 8>&- 9>&- &
  # Wait for the pid file written by the child.
  for i in $(seq 1 50); do
    [[ -s "${PID_FILE}" ]] && break
    sleep 0.1
  done
  [[ -s "${PID_FILE}" ]] || die "broker process did not start"
  pid="$(cat "${PID_FILE}")"
  printf '%s\n' "${port}" >"${PORT_FILE}"

  if ! wait_ready "${pid}" "${port}"; then
    log "broker not ready after ${START_TIMEOUT}s; last log lines:"
    tail -n 40 "${LOG_FILE}" >&2 || true
    tail -n 20 "${OUT_FILE}" >&2 || true
    kill -KILL "${pid}" 2>/dev/null || true
    rm -f "${PID_FILE}" "${PORT_FILE}"
    cleanup_data
    exit 1
  fi
  log "ready after ${SECONDS}s"
  printf '127.0.0.1:%s\n' "${port}"
}

# stop_broker: SIGTERM the broker and wait for it to exit (SIGKILL after 30s).
stop_broker() {
  local pid i
  pid="$(cat "${PID_FILE}")"
  log "stopping broker (pid ${pid})"
  kill -TERM "${pid}" 2>/dev/null || true
  for i in $(seq 1 300); do
    kill -0 "${pid}" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "${pid}" 2>/dev/null; then
    log "broker ignored SIGTERM for 30s; sending SIGKILL"
    kill -KILL "${pid}" 2>/dev/null || true
    sleep 0.5
  fi
}

# do_restart: stop the broker and start it again with the same data and
# ports (a broker restart, for tests that need one: use it only on a broker
# of your own, with its own EHRDEV_STATE).
do_restart() {
  mkdir -p "${STATE_DIR}"
  exec 9>"${STATE_DIR}/.lock"
  flock 9
  pid_alive || die "broker not running"
  local port
  port="$(cat "${PORT_FILE}")"
  stop_broker
  rm -f "${PID_FILE}"
  SECONDS=0
  launch "${port}"
}

# wait_ready PID PORT: the broker logged that it started (KRaft: after it is
# registered and unfenced) and answers an ApiVersions request.
wait_ready() {
  local pid="$1" port="$2" deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "${pid}" 2>/dev/null; then
      log "broker process ${pid} exited"
      return 1
    fi
    if grep -q 'Kafka Server started' "${LOG_FILE}" 2>/dev/null \
        && api_versions_ok "${port}"; then
      return 0
    fi
    sleep 0.25
  done
  return 1
}

do_status() {
  local addr
  if addr="$(running_addr)"; then
    printf 'running %s\n' "${addr}"
    return 0
  fi
  if pid_alive; then
    printf 'starting (pid %s, not answering yet)\n' "$(cat "${PID_FILE}")"
  else
    printf 'stopped\n'
  fi
  return 1
}

do_env() {
  local addr
  addr="$(do_start | tail -n 1)"
  [[ -n "${addr}" ]] || die "could not start broker"
  printf 'export EHRDEV_KAFKA=%s\n' "${addr}"
}

main() {
  cd "${REPO_ROOT}"
  case "${1:-}" in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    env) do_env ;;
    restart) do_restart ;;
    *)
      printf 'usage: %s {start|stop|restart|status|env}\n' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
