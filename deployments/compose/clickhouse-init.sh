#!/usr/bin/env bash
# /docker-entrypoint-initdb.d script of the compose stack's ClickHouse: runs
# when the image's entrypoint runs its init scripts (a first start with an
# empty data directory) and creates the
# ehrwatch roles, users and settings profiles of deployments/clickhouse/access.sql
# with the passwords of the `secrets` volume. The server's default user
# (no password, reachable from inside the container only) does it; it needs
# CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT=1. access.sql is idempotent, so a
# second run changes nothing.
set -euo pipefail
bash /deploy/clickhouse/render-access.sh /run/ehrwatch-secrets /deploy/clickhouse/access.sql |
	clickhouse-client --host 127.0.0.1 --user default --multiquery
echo "clickhouse-init: ehrwatch users and roles created"
