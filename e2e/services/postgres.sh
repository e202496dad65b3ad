#!/usr/bin/env bash
# PostgreSQL 15 (Debian package) on a free 127.0.0.1 port, trust auth, data under the run dir.
# usage: postgres.sh up|down|env|status|start|stop|restart
#   stop/start keep the data and the port; restart = pg_ctl restart (same port).
set -euo pipefail
WS_NAME=postgres
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(DATABASE_URL)
WS_TIMEOUT=60

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PGDATA_DIR=$WS_DIR/data
SOCK_DIR=$WS_DIR/sock

as_pg() { runuser -u postgres -- "$@"; }

svc_install() {
  if [ ! -x "$PG_BIN/initdb" ]; then ws_apt_install postgresql postgresql-client; fi
  [ -x "$PG_BIN/initdb" ] || ws_die "$PG_BIN/initdb still missing after install (set PG_BIN)"
  id postgres >/dev/null 2>&1 || ws_die "OS user 'postgres' missing"
  [ "$(id -u)" = 0 ] || ws_die "must run as root (runs the server as OS user postgres)"
}

svc_init() {
  local port
  port=$(ws_free_port)
  # The postgres user must be able to reach the run dir.
  chmod 755 "$WS_RUN_ROOT" "$WS_DIR" 2>/dev/null || true
  as_pg test -x "$WS_DIR" || ws_die "OS user postgres cannot access $WS_DIR (set WEIR_SERVICES_RUN to a world-traversable path)"
  mkdir -p "$PGDATA_DIR" "$SOCK_DIR"
  chown postgres:postgres "$PGDATA_DIR" "$SOCK_DIR" "$WS_LOG"
  chmod 700 "$PGDATA_DIR"
  as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >>"$WS_LOG" 2>&1 \
    || { tail -n 20 "$WS_LOG" >&2; ws_die "initdb failed"; }
  cat >>"$PGDATA_DIR/postgresql.conf" <<CONF
# weir e2e/services
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$SOCK_DIR'
max_connections = 200
logging_collector = off
CONF
  ws_write_env "DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
}

pg_ctl_() { as_pg "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" "$@" 8>&- >>"$WS_LOG" 2>&1; }

svc_launch() {
  touch "$WS_LOG" && chown postgres "$WS_LOG"
  # -W: do not wait here, ws_wait_ready does (bounded, with log tail on failure).
  pg_ctl_ -l "$WS_LOG" -W start || { tail -n 20 "$WS_LOG" >&2; ws_die "pg_ctl start failed"; }
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$PGDATA_DIR/postmaster.pid" ] && break; sleep 0.1; done
}

svc_pid() {
  [ -s "$PGDATA_DIR/postmaster.pid" ] && head -n1 "$PGDATA_DIR/postmaster.pid" | tr -dc '0-9'
}

svc_stop() {
  ws_alive || return 0
  pg_ctl_ -m fast -t 30 stop || true
}

svc_restart() {
  pg_ctl_ -l "$WS_LOG" -m fast -W restart || { tail -n 20 "$WS_LOG" >&2; ws_die "pg_ctl restart failed"; }
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$PGDATA_DIR/postmaster.pid" ] && break; sleep 0.1; done
}

svc_ready() {
  local hostport=${DATABASE_URL#*@}
  hostport=${hostport%%/*}
  "$PG_BIN/pg_isready" -q -h "${hostport%:*}" -p "${hostport##*:}" -U postgres -d postgres -t 2
}

ws_main "$@"
