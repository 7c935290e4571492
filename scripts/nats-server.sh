#!/usr/bin/env bash
# A local nats-server with JetStream for working on roomcast-cluster, on loopback only, its
# data, log and pid file under target/nats-server/.
#
#   scripts/nats-server.sh start     # nats://127.0.0.1:4222 (NATS_PORT=... for another port)
#   scripts/nats-server.sh status
#   scripts/nats-server.sh stop      # SIGTERM, then waits for it to exit
#   scripts/nats-server.sh restart
#   scripts/nats-server.sh wipe      # stop, and delete its data
#
# The crate's tests do not need it: they start their own servers (testing::NatsServer).
# Needs Debian's nats-server (apt-get install nats-server) or NATS_SERVER=/path/to/nats-server.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${NATS_PORT:-4222}"
dir="target/nats-server"
pidfile="$dir/nats-server.pid"
log="$dir/nats-server.log"

find_binary() {
  if [ -n "${NATS_SERVER:-}" ]; then echo "$NATS_SERVER"; return; fi
  if command -v nats-server >/dev/null 2>&1; then command -v nats-server; return; fi
  for candidate in /usr/sbin/nats-server /usr/bin/nats-server /usr/local/bin/nats-server; do
    if [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "nats-server is not installed: apt-get install nats-server (or set NATS_SERVER)" >&2
  exit 1
}

running_pid() {
  [ -f "$pidfile" ] || return 1
  local pid
  pid="$(cat "$pidfile")"
  kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

accepts() {
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

start() {
  if pid="$(running_pid)"; then
    echo "nats-server already runs (pid $pid): nats://127.0.0.1:$port"
    return
  fi
  if accepts; then
    echo "something else listens on 127.0.0.1:$port (NATS_PORT=... for another port)" >&2
    exit 1
  fi
  local binary
  binary="$(find_binary)"
  mkdir -p "$dir/store"
  "$binary" -js -a 127.0.0.1 -p "$port" -sd "$dir/store" -n roomcast-dev >>"$log" 2>&1 &
  echo $! >"$pidfile"
  # Poll until it accepts clients (deadline 10 s).
  for _ in $(seq 1 200); do
    if accepts; then
      echo "nats-server runs (pid $(cat "$pidfile")): nats://127.0.0.1:$port, data in $dir/store, log $log"
      return
    fi
    if ! running_pid >/dev/null; then
      echo "nats-server exited; the end of its log:" >&2
      tail -n 20 "$log" >&2
      rm -f "$pidfile"
      exit 1
    fi
    sleep 0.05
  done
  echo "nats-server did not accept clients within 10 s; see $log" >&2
  exit 1
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    echo "nats-server is not running"
    rm -f "$pidfile"
    return
  fi
  kill "$pid"
  for _ in $(seq 1 200); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$pidfile"
      echo "nats-server stopped"
      return
    fi
    sleep 0.05
  done
  echo "nats-server (pid $pid) did not stop within 10 s" >&2
  exit 1
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status)
    if pid="$(running_pid)"; then
      echo "nats-server runs (pid $pid): nats://127.0.0.1:$port"
    else
      echo "nats-server is not running"
      exit 1
    fi
    ;;
  wipe) stop; rm -rf "$dir"; echo "deleted $dir" ;;
  *)
    echo "usage: $0 start|stop|restart|status|wipe" >&2
    exit 2
    ;;
esac
