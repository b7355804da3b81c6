#!/usr/bin/env bash
# The compose stack's `secrets` job: creates, once, a random password for
# each ClickHouse user, the Grafana admin password and the HMAC hash key in
# the `secrets` volume (mounted at /run/ehrwatch-secrets), and prepares the
# `hospital` volume for the non-root ehrwatch containers. Existing files are
# kept, so passwords survive `docker compose down` (not `down -v`).
set -euo pipefail
dir=/run/ehrwatch-secrets
umask 022
for name in ehrwatch_admin ehrwatch_writer ehrwatch_api ehrwatch_reader ehrwatch_reference_loader grafana-admin; do
	f="$dir/$name-password"
	[ -s "$f" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=\n' >"$f"
done
[ -s "$dir/hash-key" ] || head -c 32 /dev/urandom | base64 | tr -d '\n' >"$dir/hash-key"
# The cluster variant (compose/cluster.yml): the shared secret of its remote_servers.
[ -s "$dir/cluster-secret" ] || head -c 32 /dev/urandom | base64 | tr -d "/+=\n" >"$dir/cluster-secret"
# Readable by the ehrwatch (65532), grafana (472) and clickhouse (101) users
# of the other containers: a lab stack on one machine, not a secret store.
chmod 0444 "$dir"/*
mkdir -p /var/lib/hospital
chown 65532:65532 /var/lib/hospital
echo "secrets: ready in $dir (grafana admin password: $dir/grafana-admin-password)"
