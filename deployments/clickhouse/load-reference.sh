#!/usr/bin/env bash
# Load reference data (users, patients, encounters) from NDJSON files into
# ClickHouse with clickhouse-client: the compose stack's `reference-load`
# job, and a template for a customer's HR/ADT feed.
#
#   load-reference.sh DIR
#
# DIR holds users.ndjson, patients.ndjson and encounters.ndjson (the format
# of `ehrwatch gen --out X`'s X/reference). Connection settings come from
# the environment: CLICKHOUSE_HOST (default localhost), CLICKHOUSE_PORT
# (9000; 9440 with CLICKHOUSE_SECURE=1), CLICKHOUSE_DATABASE (ehrwatch),
# CLICKHOUSE_USER (ehrwatch_reference_loader) and CLICKHOUSE_PASSWORD_FILE.
set -euo pipefail

dir="${1:?usage: load-reference.sh DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
args=(--host "${CLICKHOUSE_HOST:-localhost}" --database "${CLICKHOUSE_DATABASE:-ehrwatch}"
	--user "${CLICKHOUSE_USER:-ehrwatch_reference_loader}")
if [ "${CLICKHOUSE_SECURE:-0}" = 1 ]; then
	args+=(--secure --port "${CLICKHOUSE_PORT:-9440}")
else
	args+=(--port "${CLICKHOUSE_PORT:-9000}")
fi
if [ -n "${CLICKHOUSE_PASSWORD_FILE:-}" ]; then
	# The password goes into a private client config file, never onto the
	# command line (where ps would show it).
	cfg="$(mktemp --suffix=.yaml)"
	trap 'rm -f "$cfg"' EXIT
	chmod 600 "$cfg"
	printf 'password: "%s"\n' "$(sed 's/["\\]/\\&/g' "$CLICKHOUSE_PASSWORD_FILE" | tr -d '\r\n')" >"$cfg"
	args+=(--config-file "$cfg")
fi

for table in users patients encounters; do
	file="$dir/$table.ndjson"
	if [ ! -s "$file" ]; then
		echo "load-reference: $file is missing or empty" >&2
		exit 1
	fi
	clickhouse-client "${args[@]}" --query "$(cat "$here/reference/$table.sql")" <"$file"
	echo "load-reference: $table: $(wc -l <"$file") rows sent" >&2
done
