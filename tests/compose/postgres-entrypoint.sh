#!/bin/sh
# The official postgres image's contract, for the parts docker-compose.yml relies on: on an
# empty $PGDATA, a cluster whose superuser is $POSTGRES_USER (password $POSTGRES_PASSWORD,
# required), a database $POSTGRES_DB; password logins from the network, trust on the socket.
set -eu
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "error: POSTGRES_PASSWORD is not set" >&2
        exit 1
    fi
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    # UTF-8, as the official image (a C-locale default would be SQL_ASCII, which clients read as bytes).
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA"
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # Set up on a private socket only: the healthcheck (pg_isready) sees no server until the
    # database exists.
    init_socket=$(mktemp -d)
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -k $init_socket" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        createdb -h "$init_socket" --username="$POSTGRES_USER" "$POSTGRES_DB"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop
    rmdir "$init_socket"
fi
if [ "$1" = postgres ]; then
    set -- "$@" -c "listen_addresses=*"
fi
exec "$@"
