#!/usr/bin/env bash
# MariaDB 10.11 (Debian package) on a free 127.0.0.1 port, root without password, data under the
# run dir, database `weir` created.
# usage: mariadb.sh up|down|env|status|start|stop|restart
#   stop/start keep the data and the port; restart = stop + start (same port, same data).
set -euo pipefail
WS_NAME=mariadb
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
WS_VARS=(MYSQL_URL)
WS_TIMEOUT=60

DATA_DIR=$WS_DIR/data
SOCK=$WS_DIR/sock/mysqld.sock

svc_install() {
  if ! ws_have mariadbd || ! ws_have mariadb-install-db || ! ws_have mariadb; then
    ws_apt_install mariadb-server mariadb-client
  fi
  ws_have mariadbd || ws_die "mariadbd still missing after install"
  id mysql >/dev/null 2>&1 || ws_die "OS user 'mysql' missing (the mariadb-server package creates it)"
  [ "$(id -u)" = 0 ] || ws_die "must run as root (runs the server as OS user mysql)"
}

svc_init() {
  local port
  port=$(ws_free_port)
  # The mysql user must be able to reach the run dir.
  chmod 755 "$WS_RUN_ROOT" "$WS_DIR" 2>/dev/null || true
  runuser -u mysql -- test -x "$WS_DIR" || ws_die "OS user mysql cannot access $WS_DIR (set WEIR_SERVICES_RUN to a world-traversable path)"
  mkdir -p "$DATA_DIR" "$(dirname "$SOCK")"
  chown mysql:mysql "$DATA_DIR" "$(dirname "$SOCK")"
  # --no-defaults: the system's /etc/mysql config (port 3306, its own datadir) must not apply.
  mariadb-install-db --no-defaults --user=mysql --datadir="$DATA_DIR" \
    --auth-root-authentication-method=normal --skip-test-db >>"$WS_LOG" 2>&1 \
    || { tail -n 20 "$WS_LOG" >&2; ws_die "mariadb-install-db failed"; }
  echo "$port" >"$WS_DIR/port"
  ws_write_env "MYSQL_URL=mysql://root@127.0.0.1:$port/weir"
}

svc_launch() {
  # Small memory footprint (the machine is shared); durability settings stay at their defaults
  # so benchmarks and crash tests see a normal server. skip-name-resolve: 127.0.0.1 is matched
  # as an address (the grant below), with no reverse lookup per connection.
  ws_spawn mariadbd --no-defaults --user=mysql --datadir="$DATA_DIR" \
    --bind-address=127.0.0.1 --port="$(cat "$WS_DIR/port")" --socket="$SOCK" \
    --pid-file="$(dirname "$SOCK")/mariadbd.pid" --skip-name-resolve --skip-log-bin \
    --innodb-buffer-pool-size=128M --performance-schema=OFF --max-connections=200 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_bin
}

sql_root() { mariadb --no-defaults --protocol=socket --socket="$SOCK" -uroot "$@"; }

svc_ready() {
  sql_root -e 'SELECT 1' >/dev/null
}

# Idempotent: runs after every start. root over TCP from 127.0.0.1 (install-db only makes
# root@localhost, which skip-name-resolve never matches for a TCP client).
svc_after_ready() {
  sql_root >>"$WS_LOG" 2>&1 <<'SQL'
CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS weir;
SQL
}

ws_main "$@"
