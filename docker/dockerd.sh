#!/usr/bin/env bash
# Start or stop a Docker engine for zooserve's image builds and compose tests.
#
#   docker/dockerd.sh start   reuse a running engine, else start dockerd (default flags; it runs its
#                             own containerd) and wait for it; prints "started" or "running"
#   docker/dockerd.sh stop    stop the dockerd this script started (pid file), and its containerd
#   docker/dockerd.sh status  exit 0 when an engine answers
#
# An engine that was already running is never stopped: only the one recorded in $ZOOSERVE_DOCKERD_PID.
set -euo pipefail

PIDFILE="${ZOOSERVE_DOCKERD_PID:-/run/zooserve-dockerd.pid}"
LOG="${ZOOSERVE_DOCKERD_LOG:-/tmp/zooserve-dockerd.log}"
WAIT="${ZOOSERVE_DOCKERD_WAIT:-60}"

answers() { timeout 10 docker info >/dev/null 2>&1; }

start() {
    if answers; then echo running; return 0; fi
    command -v dockerd >/dev/null || { echo "dockerd not installed (Debian package docker.io)" >&2; return 2; }
    [ "$(id -u)" = 0 ] || { echo "dockerd needs root" >&2; return 2; }
    # setsid: the engine must not die with the shell (or pytest) that started it
    setsid dockerd --pidfile "$PIDFILE" >"$LOG" 2>&1 < /dev/null &
    local started=$!
    for _ in $(seq "$WAIT"); do
        if answers; then echo started; return 0; fi
        if ! kill -0 "$started" 2>/dev/null; then break; fi
        sleep 1
    done
    echo "dockerd did not start within ${WAIT}s; last lines of $LOG:" >&2
    tail -n 20 "$LOG" >&2 || true
    # stop the one started here even if it has not written its pid file yet
    if kill -0 "$started" 2>/dev/null; then
        kill -TERM "$started"
        for _ in $(seq 60); do kill -0 "$started" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$started" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
    return 1
}

stop() {
    [ -f "$PIDFILE" ] || { echo "no pid file $PIDFILE: not started here"; return 0; }
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        # dockerd stops its containers and its managed containerd before it exits
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    fi
    rm -f "$PIDFILE"
    echo stopped
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) answers ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
