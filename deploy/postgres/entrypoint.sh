#!/bin/sh
# First start: initdb, password authentication for the compose network, role and database
# `onionpost`. Every start: postgres in the foreground.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD (deploy/init-env.sh --postgres writes it)}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --auth-local=peer --auth-host=scram-sha-256 --username=postgres --pwfile="$pwfile" \
    --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
  # The password goes through a psql variable, quoted by psql (:'password').
  psql -v ON_ERROR_STOP=1 -v password="$POSTGRES_PASSWORD" --username=postgres -d postgres >/dev/null <<'SQL'
CREATE ROLE onionpost LOGIN PASSWORD :'password';
CREATE DATABASE onionpost OWNER onionpost;
SQL
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
