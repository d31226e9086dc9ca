#!/bin/sh
# Initialises an empty $PGDATA as the official postgres image does (user, password, init scripts),
# then runs the server in the foreground, listening on every address of the container. Its socket is in
# /tmp (PGHOST in the image), so the server needs nothing writable but $PGDATA and /tmp.
set -eu
: "${POSTGRES_USER:=postgres}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  # Socket only while the init scripts run: nothing connects over TCP to a half-made server.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
  for script in /docker-entrypoint-initdb.d/*.sql; do
    [ -f "$script" ] && psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -q -f "$script"
  done
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
