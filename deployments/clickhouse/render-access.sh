#!/usr/bin/env bash
# Print access.sql with its password placeholders filled in.
#
#   render-access.sh SECRETS_DIR [access.sql] | clickhouse-client --multiquery
#
# Each {{NAME_PASSWORD_SHA256}} placeholder (e.g. EHRWATCH_WRITER_PASSWORD_SHA256)
# becomes the lower-case hex SHA-256 of the file SECRETS_DIR/name-password
# (ehrwatch_writer-password), without its trailing newline. The passwords
# themselves never appear in the output. A missing file is an error.
set -euo pipefail

secrets="${1:?usage: render-access.sh SECRETS_DIR [access.sql]}"
sql="${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/access.sql}"
out="$(cat "$sql")"
for placeholder in $(grep -o '{{[A-Z_]*_PASSWORD_SHA256}}' "$sql" | sort -u); do
	name="${placeholder#\{\{}"
	name="${name%_PASSWORD_SHA256\}\}}"
	file="$secrets/$(echo "$name" | tr 'A-Z' 'a-z')-password"
	if [ ! -s "$file" ]; then
		echo "render-access.sh: $file is missing or empty (for $placeholder)" >&2
		exit 1
	fi
	hash="$(tr -d '\r\n' <"$file" | sha256sum | cut -d' ' -f1)"
	out="${out//"$placeholder"/$hash}"
done
printf '%s\n' "$out"
