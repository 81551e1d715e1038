#!/bin/bash
# Stand-in for the postgres:16 image's entrypoint, on Debian's PostgreSQL: the same
# variables (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE), the same data directory,
# and, like the original, the secret is read as the postgres user (not root).
set -euo pipefail
PGDATA=${PGDATA:-/var/lib/postgresql/data}
if [[ "$(id -u)" == 0 ]]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec runuser -u postgres -- "$0" "$@"
fi
if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    password=$(cat "${POSTGRES_PASSWORD_FILE:?}")
    user=${POSTGRES_USER:-postgres}
    initdb -D "$PGDATA" --username="$user" --pwfile=<(printf '%s\n' "$password") \
        --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    # initdb makes only "postgres"; the original then creates POSTGRES_DB (default: the user).
    database=${POSTGRES_DB:-$user}
    if [[ "$database" != postgres ]]; then
        createdb -U "$user" "$database"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
[[ "${1:-}" == postgres ]] && shift
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
