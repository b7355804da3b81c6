#!/usr/bin/env bash
# Dev/test ClickHouse: the real ClickHouse engine (chDB, from PyPI) behind the
# ClickHouse HTTP interface, for integration tests that use clickhouse-go/v2
# with Protocol: clickhouse.HTTP. TEST ONLY; see chdb_http/README.md.
#
#   deployments/dev/clickhouse.sh start    start (or find running); last stdout line is 127.0.0.1:PORT
#   deployments/dev/clickhouse.sh stop     stop it
#   deployments/dev/clickhouse.sh restart  stop, then start (with a wiped data dir)
#   deployments/dev/clickhouse.sh status   print the address; exit 0 if up, 1 if not
#   deployments/dev/clickhouse.sh env      start if needed, print export EHRDEV_CLICKHOUSE=...
#
#   eval "$(deployments/dev/clickhouse.sh env)"
#
# Environment:
#   EHRDEV_STATE   state dir (default /tmp/ehrwatch-dev); data, pid, port and logs live
#                        in $EHRDEV_STATE/clickhouse; the data dir is wiped on every
#                        start from a stopped state
#   EHRDEV_CACHE       cache dir (default ~/.cache/ehrwatch) holding the virtualenv
#                        chdb-venv-<version>, built once per pinned version
#   EHRDEV_PYTHON      python used to create the virtualenv (default python3, >= 3.9)
#   EHRDEV_CLICKHOUSE_START_TIMEOUT  seconds to wait for readiness (default 60)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
adapter="$here/chdb_http"
requirements="$adapter/requirements.txt"
version="$(sed -n 's/^chdb-core==\([^[:space:];#]*\).*/\1/p' "$requirements" | head -n 1)"
if [ -z "$version" ]; then
	echo "clickhouse.sh: no 'chdb-core==<version>' pin in $requirements" >&2
	exit 2
fi
home="${HOME:-}"
[ -n "$home" ] || home="$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6 || true)"
[ -n "$home" ] || home=/tmp
cache="${EHRDEV_CACHE:-$home/.cache/ehrwatch}"
venv="$cache/chdb-venv-$version"
marker="$venv/.ehrwatch-ready"
state="${EHRDEV_STATE:-/tmp/ehrwatch-dev}/clickhouse"
data="$state/data"
pidfile="$state/server.pid"
portfile="$state/server.port"
reqlog="$state/server.log"
outlog="$state/server.out"
python="${EHRDEV_PYTHON:-python3}"
timeout="${EHRDEV_CLICKHOUSE_START_TIMEOUT:-60}"

say() { echo "clickhouse.sh: $*" >&2; }

# want_marker identifies a complete virtualenv: the requirements it was built
# from and the adapter's install flags.
want_marker() {
	echo "requirements-sha256=$(sha256sum "$requirements" | cut -d' ' -f1) no-deps=1"
}

ensure_venv() {
	if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(want_marker)" ]; then
		return 0
	fi
	mkdir -p "$cache"
	(
		flock -w 900 8 || { say "timed out waiting for another venv build ($cache/.chdb-venv.lock)"; exit 1; }
		if [ -f "$marker" ] && [ "$(cat "$marker")" = "$(want_marker)" ]; then
			exit 0
		fi
		say "building virtualenv $venv (chdb-core $version, one-off)"
		rm -rf "$venv"
		"$python" -m venv "$venv" >&2
		# --no-deps: chdb-core declares pandas and pyarrow, which only its
		# DataFrame/Arrow result formats import; the adapter needs neither
		# (saves ~330 MB and most of the install time).
		PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --no-input --quiet --no-deps \
			-r "$requirements" >&2
		"$venv/bin/python" -c 'import chdb.session' >&2
		want_marker >"$marker"
	) 8>"$cache/.chdb-venv.lock"
}

# our_pid prints the pid of a live adapter started from this state dir.
our_pid() {
	[ -f "$pidfile" ] || return 1
	local pid
	pid="$(cat "$pidfile" 2>/dev/null || true)"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "chdb_http/server.py --data-dir $data " || return 1
	echo "$pid"
}

address() {
	local port
	port="$(cat "$portfile" 2>/dev/null || true)"
	[[ "$port" =~ ^[0-9]+$ ]] || return 1
	echo "127.0.0.1:$port"
}

# healthy: /ping answers Ok. and SELECT 1 runs through the engine.
healthy() {
	local addr="$1" py="$python"
	[ -x "$venv/bin/python" ] && py="$venv/bin/python"
	"$py" - "$addr" <<'EOF' 2>/dev/null
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
addr = sys.argv[1]
if opener.open("http://%s/ping" % addr, timeout=2).read() != b"Ok.\n":
    sys.exit(1)
body = opener.open(urllib.request.Request("http://%s/" % addr, data=b"SELECT 1"), timeout=10).read()
sys.exit(0 if body.strip() == b"1" else 1)
EOF
}

stop_pid() {
	local pid="$1"
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	say "pid $pid did not stop on SIGTERM in 15s; sending SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
}

do_start() {
	mkdir -p "$state"
	exec 9>"$state/.lock"
	flock -w 300 9 || { say "timed out waiting for $state/.lock"; exit 1; }

	local pid addr
	if pid="$(our_pid)"; then
		if addr="$(address)" && healthy "$addr"; then
			echo "$addr"
			return 0
		fi
		say "adapter pid $pid is not healthy; restarting it"
		stop_pid "$pid"
	fi
	rm -f "$pidfile" "$portfile"
	rm -rf "$data"
	ensure_venv

	[ -f "$reqlog" ] && mv -f "$reqlog" "$reqlog.1"
	: >"$outlog"
	# 9>&- : the server must not inherit (and so hold) the start lock.
	nohup setsid -w "$venv/bin/python" "$adapter/server.py" --data-dir "$data" \
		--port-file "$portfile" --pid-file "$pidfile" --log-file "$reqlog" \
		</dev/null >>"$outlog" 2>&1 9>&- &
	local launched=$!
	local deadline=$((SECONDS + timeout))
	while :; do
		if addr="$(address)" && healthy "$addr"; then
			break
		fi
		if ! kill -0 "$launched" 2>/dev/null && ! our_pid >/dev/null; then
			fail_start "the adapter exited during start-up" "$launched"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail_start "not ready after ${timeout}s" "$launched"
		fi
		sleep 0.1
	done
	say "ClickHouse $(engine_version "$addr") (chDB $version) on $addr, data $data, log $reqlog"
	echo "$addr"
}

engine_version() {
	"$venv/bin/python" - "$1" <<'EOF' 2>/dev/null || echo "?"
import sys, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
print(opener.open(urllib.request.Request("http://%s/" % sys.argv[1], data=b"SELECT version()"), timeout=5).read().decode().strip())
EOF
}

fail_start() {
	say "start failed: $1"
	say "--- tail of $outlog ---"
	tail -n 40 "$outlog" >&2 2>/dev/null || true
	say "--- tail of $reqlog ---"
	tail -n 20 "$reqlog" >&2 2>/dev/null || true
	local pid
	if pid="$(our_pid)"; then
		stop_pid "$pid"
	fi
	if [ -n "${2:-}" ] && kill -0 "$2" 2>/dev/null; then
		stop_pid "$2" # launched but not yet past writing its pid file
	fi
	rm -f "$pidfile" "$portfile"
	exit 1
}

do_stop() {
	mkdir -p "$state"
	exec 9>"$state/.lock"
	flock -w 300 9 || { say "timed out waiting for $state/.lock"; exit 1; }
	local pid
	if pid="$(our_pid)"; then
		stop_pid "$pid"
		say "stopped (pid $pid)"
	else
		say "not running"
	fi
	rm -f "$pidfile" "$portfile"
}

do_status() {
	local pid addr
	if pid="$(our_pid)" && addr="$(address)" && healthy "$addr"; then
		say "running, pid $pid, data $data, log $reqlog"
		echo "$addr"
		return 0
	fi
	say "not running"
	return 1
}

case "${1:-}" in
start) do_start ;;
stop) do_stop ;;
restart)
	do_stop
	exec 9>&-
	do_start
	;;
status) do_status ;;
env)
	addr="$(do_start)" || exit 1
	echo "export EHRDEV_CLICKHOUSE=$addr"
	;;
*)
	echo "usage: $0 start|stop|restart|status|env" >&2
	exit 2
	;;
esac
