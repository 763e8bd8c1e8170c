#!/usr/bin/env bash
# A throw-away PostgreSQL server on 127.0.0.1 for the store's PostgreSQL tests.
#   scripts/test-postgres.sh start DIR   -> prints a SQLAlchemy URL on stdout (nothing if unavailable)
#   scripts/test-postgres.sh stop DIR
# Needs Debian's postgresql package (the Makefile installs it when run as root). As root, the server
# runs as the `postgres` user, since PostgreSQL refuses to run as root.
set -u
action=${1:?start|stop}
dir=${2:?data directory}
port=${PSTLIB_TEST_POSTGRES_PORT:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "postgresql not installed: PostgreSQL tests will be skipped" >&2; exit 0; }

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case $action in
start)
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  if [ ! -f "$dir/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$dir" -U pstlib --auth=trust >/dev/null || exit 0
  fi
  as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null || exit 0
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U pstlib pstlib_test 2>/dev/null || true
  echo "postgresql+psycopg://pstlib@127.0.0.1:$port/pstlib_test"
  ;;
stop)
  [ -f "$dir/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir" -m fast -w stop >/dev/null
  exit 0
  ;;
esac
