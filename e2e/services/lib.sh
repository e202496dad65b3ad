# shellcheck shell=bash
# Shared helpers for e2e/services/<name>.sh (sourced, not executed).
#
# A service script sets:
#   WS_VARS=(PRIMARY_VAR OTHER_VAR...)   env var names it prints (first = primary)
#   WS_TIMEOUT=<seconds>                 bounded readiness wait (WEIR_SERVICES_TIMEOUT overrides)
# and defines:
#   svc_install   install what is missing (idempotent, quiet, progress to stderr)
#   svc_init      fresh instance: pick ports, prepare $WS_DIR, call ws_write_env
#   svc_launch    start the server in the background (ws_spawn ...), config already in $WS_DIR
#   svc_ready     exit 0 when the server answers, using the exported WS_VARS values
# and optionally:
#   svc_pid       print the server pid (default: content of $WS_DIR/pid)
#   svc_stop      stop the server gracefully (default: TERM the pid's process group)
#   svc_restart   custom "restart" (default: stop + start)
#   svc_after_ready  run once the server answers (e.g. cluster settings)
# then ends with: ws_main "$@"
#
# Subcommands: up | down | env | status | start | stop | restart

WS_NAME=${WS_NAME:?WS_NAME must be set before sourcing lib.sh}
WS_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
WS_CACHE=${WEIR_SERVICES_CACHE:-${HOME:-/root}/.cache/weir-services}
WS_RUN_ROOT=${WEIR_SERVICES_RUN:-/tmp/weir-services}
WS_DIR=$WS_RUN_ROOT/$WS_NAME
WS_PIDFILE=$WS_DIR/pid
WS_ENVFILE=$WS_DIR/env
WS_LOG=$WS_DIR/log
WS_TIMEOUT=${WS_TIMEOUT:-60}
WS_VARS=()

ws_log() { printf 'weir-services[%s]: %s\n' "$WS_NAME" "$*" >&2; }
ws_die() { printf 'weir-services[%s]: ERROR: %s\n' "$WS_NAME" "$*" >&2; exit 1; }
ws_have() { command -v "$1" >/dev/null 2>&1; }

# Refuse cache/run paths inside the repository (they must never be committed).
ws_check_paths() {
  local repo p
  repo=$(cd "$WS_HERE/../.." && pwd -P)
  for p in "$WS_CACHE" "$WS_RUN_ROOT"; do
    p=$(realpath -m "$p")
    case "$p/" in
      "$repo"/*) ws_die "$p is inside the repository $repo; set WEIR_SERVICES_CACHE / WEIR_SERVICES_RUN elsewhere" ;;
    esac
  done
  mkdir -p "$WS_CACHE" "$WS_RUN_ROOT"
}

# python3 for small helpers: prefer the system one (fast, no pyenv shim).
ws_python() {
  if [ -x /usr/bin/python3 ]; then /usr/bin/python3 "$@"; else python3 "$@"; fi
}

# Print a free TCP port on 127.0.0.1 (bind to port 0, let the kernel choose).
ws_free_port() {
  ws_python -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# ws_port_open PORT [HOST] -> 0 if something accepts TCP connections there.
ws_port_open() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${2:-127.0.0.1}" "$1" 2>/dev/null
}

# Install Debian packages (apt-get update once, only when something is missing).
ws_apt_install() {
  local apt_opts=(-o DPkg::Lock::Timeout=300 -o Dpkg::Use-Pty=0) log=$WS_CACHE/apt.log
  [ "$(id -u)" = 0 ] || ws_die "missing packages ($*) and not root: apt-get install $* first"
  ws_log "installing Debian packages: $* (apt-get, log $log)"
  {
    flock 9
    if [ -z "${WS_APT_UPDATED:-}" ]; then
      DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" update -qq >"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; ws_die "apt-get update failed"; }
      WS_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends "$@" >>"$log" 2>&1 \
      || { tail -n 20 "$log" >&2; ws_die "apt-get install $* failed"; }
  } 9>"$WS_CACHE/.apt.lock"
}

# Maven with its local repository inside the cache dir.
# Output goes to stderr, without the colour codes this Maven prints even in batch mode.
ws_mvn() {
  ws_have mvn || ws_apt_install maven
  mvn -B -q -Dstyle.color=never -Dmaven.repo.local="$WS_CACHE/m2" "$@" 2>&1 |
    sed -u 's/\x1b\[[0-9;]*m//g' >&2
}

# Java from PATH (Java 17+).
ws_require_java() {
  ws_have java || ws_die "java not found on PATH (Java 17+ is required)"
}

# Start "$@" in the background in its own session/process group, output to $WS_LOG,
# pid (= process group id) to $WS_PIDFILE. fd 8 (the command lock) is not inherited.
ws_spawn() {
  setsid "$@" >>"$WS_LOG" 2>&1 </dev/null 8>&- &
  echo $! >"$WS_PIDFILE"
}

ws_default_pid() { [ -s "$WS_PIDFILE" ] && tr -dc '0-9' <"$WS_PIDFILE"; }

ws_pid() {
  if declare -F svc_pid >/dev/null; then svc_pid; else ws_default_pid; fi
}

ws_alive() {
  local pid
  pid=$(ws_pid 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# TERM the process group of PID (or the pid if it is no group leader), wait, then KILL.
ws_kill_group() {
  local pid=$1 grace=${2:-20} target i
  kill -0 "$pid" 2>/dev/null || return 0
  target=$pid
  if [ "$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')" = "$pid" ]; then target=-$pid; fi
  kill -TERM -- "$target" 2>/dev/null || true
  for ((i = 0; i < grace * 5; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    ws_log "pid $pid still alive after ${grace}s, sending KILL"
    kill -KILL -- "$target" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # stragglers of the group
  if [ "$target" != "$pid" ]; then kill -KILL -- "$target" 2>/dev/null || true; fi
  return 0
}

ws_stop_proc() {
  if declare -F svc_stop >/dev/null && [ -d "$WS_DIR" ]; then
    svc_stop || true
  fi
  local pid
  pid=$(ws_pid 2>/dev/null || true)
  if [ -n "$pid" ]; then ws_kill_group "$pid" 20; fi
  rm -f "$WS_PIDFILE"
}

# ws_write_env KEY=value... -> $WS_ENVFILE
ws_write_env() {
  printf '%s\n' "$@" >"$WS_ENVFILE.tmp"
  mv "$WS_ENVFILE.tmp" "$WS_ENVFILE"
}

# Export the variables of $WS_ENVFILE into this shell (for svc_ready / svc_launch).
ws_load_env() {
  local k v
  [ -s "$WS_ENVFILE" ] || return 1
  while IFS='=' read -r k v; do
    [ -n "$k" ] && export "$k=$v"
  done <"$WS_ENVFILE"
}

# Value of a KEY in the env file.
ws_env_get() { sed -n "s/^$1=//p" "$WS_ENVFILE" | head -n1; }

# A user's own server: the primary var is set and is not the value our own instance
# wrote (so `eval "$(x.sh up)"; ...; x.sh down` in one shell still stops ours).
ws_external() {
  local v=${!WS_VARS[0]:-}
  [ -n "$v" ] || return 1
  [ -s "$WS_ENVFILE" ] && [ "$v" = "$(ws_env_get "${WS_VARS[0]}")" ] && return 1
  return 0
}

ws_print_external() {
  local v
  for v in "${WS_VARS[@]}"; do
    if [ -n "${!v:-}" ]; then printf '%s=%s\n' "$v" "${!v}"; fi
  done
}

ws_ready() { ( svc_ready ) >/dev/null 2>&1; }

ws_after_ready() {
  if declare -F svc_after_ready >/dev/null; then
    svc_after_ready || { ws_stop_proc; ws_die "post-start setup failed"; }
  fi
}

ws_running() { ws_alive && ws_load_env && ws_ready; }

# Wait (bounded) until svc_ready answers; on failure show the log tail, stop, exit 1.
ws_wait_ready() {
  local timeout=${WEIR_SERVICES_TIMEOUT:-$WS_TIMEOUT} start=$SECONDS
  ws_load_env
  while :; do
    if ws_ready; then
      ws_log "ready after $((SECONDS - start))s"
      return 0
    fi
    if ! ws_alive; then
      ws_log "server process exited before answering; last log lines ($WS_LOG):"
      tail -n 40 "$WS_LOG" >&2 2>/dev/null || true
      ws_stop_proc
      ws_die "$WS_NAME failed to start"
    fi
    if ((SECONDS - start >= timeout)); then
      ws_log "not answering after ${timeout}s; last log lines ($WS_LOG):"
      tail -n 40 "$WS_LOG" >&2 2>/dev/null || true
      ws_stop_proc
      ws_die "$WS_NAME did not become ready within ${timeout}s"
    fi
    sleep 0.3
  done
}

ws_cmd_up() {
  if ws_external; then ws_print_external; return 0; fi
  if ws_running; then cat "$WS_ENVFILE"; return 0; fi
  if [ -e "$WS_DIR" ]; then
    ws_log "removing stale instance in $WS_DIR"
    ws_stop_proc
    rm -rf "$WS_DIR"
  fi
  svc_install
  mkdir -p "$WS_DIR"
  : >"$WS_LOG"
  local t0=$SECONDS
  svc_init
  ws_load_env
  ws_log "starting (data in $WS_DIR, log $WS_LOG)"
  svc_launch
  ws_wait_ready
  ws_after_ready
  ws_log "up in $((SECONDS - t0))s"
  cat "$WS_ENVFILE"
}

ws_cmd_start() {
  if ws_external; then ws_print_external; return 0; fi
  if ws_running; then cat "$WS_ENVFILE"; return 0; fi
  [ -s "$WS_ENVFILE" ] || ws_die "no stopped instance in $WS_DIR (use 'up' first)"
  ws_stop_proc
  svc_install
  ws_load_env
  ws_log "starting again (data kept in $WS_DIR)"
  svc_launch
  ws_wait_ready
  ws_after_ready
  cat "$WS_ENVFILE"
}

ws_cmd_stop() {
  if ws_external; then ws_log "external server (${WS_VARS[0]} set): nothing to stop"; return 0; fi
  [ -d "$WS_DIR" ] || return 0
  ws_stop_proc
  ws_log "stopped (data kept in $WS_DIR)"
}

ws_cmd_restart() {
  if ws_external; then ws_log "external server (${WS_VARS[0]} set): nothing to restart"; return 0; fi
  [ -s "$WS_ENVFILE" ] || ws_die "no instance in $WS_DIR (use 'up' first)"
  if declare -F svc_restart >/dev/null && ws_alive; then
    ws_load_env
    svc_restart
    ws_wait_ready
    ws_after_ready
    cat "$WS_ENVFILE"
  else
    ws_cmd_stop
    ws_cmd_start
  fi
}

ws_cmd_down() {
  if ws_external; then ws_log "external server (${WS_VARS[0]} set): nothing to stop"; return 0; fi
  [ -e "$WS_DIR" ] || return 0
  ws_stop_proc
  rm -rf "$WS_DIR"
  ws_log "down"
}

ws_cmd_env() {
  if ws_external; then ws_print_external; return 0; fi
  if ! ws_alive || [ ! -s "$WS_ENVFILE" ]; then ws_die "not running (use 'up')"; fi
  cat "$WS_ENVFILE"
}

ws_cmd_status() {
  if ws_external; then ws_ready; return; fi
  ws_running
}

ws_main() {
  local cmd=${1:-}
  case "$cmd" in
    up | down | env | status | start | stop | restart) ;;
    *)
      echo "usage: $(basename "$0") up|down|env|status|start|stop|restart" >&2
      exit 2
      ;;
  esac
  ws_check_paths
  # One command at a time per service (lock file outside the instance dir).
  exec 8>"$WS_RUN_ROOT/.$WS_NAME.lock"
  flock 8
  "ws_cmd_$cmd"
}
