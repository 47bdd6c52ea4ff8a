#!/usr/bin/env bash
# Local 3-member Keeper cluster for development: `make cluster` / `make cluster-stop`.
#   start: builds release, starts members 1..3 on 127.0.0.1 with client ports 7181-7183 and
#          peer ports 7888-7890; data in ./.cluster/mN, logs ./.cluster/mN.log,
#          PIDs ./.cluster/mN.pid; waits (up to 30 s) for a leader.
#   stop:  SIGTERM to the recorded PIDs, SIGKILL after 5 s.
# Env: CLUSTER_DIR (default ./.cluster), LEADER_WAIT_S (default 30), STOP_GRACE_S (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh

DIR=${CLUSTER_DIR:-./.cluster}
CLIENT_PORTS=(7181 7182 7183)
PEER_PORTS=(7888 7889 7890)

start() {
  for n in 1 2 3; do
    if pid_alive "$(cat "$DIR/m$n.pid" 2>/dev/null || true)"; then
      echo "cluster: member $n is already running (pid $(cat "$DIR/m$n.pid")); run 'make cluster-stop' first" >&2
      exit 1
    fi
  done
  build_release
  local bin peers
  bin="$(keeper_target_dir)/release/keeper"
  peers=$(peers_arg "${PEER_PORTS[@]}")
  mkdir -p "$DIR"
  for n in 1 2 3; do
    start_member "$bin" "$n" "$DIR/m$n" "${CLIENT_PORTS[$((n - 1))]}" "${PEER_PORTS[$((n - 1))]}" \
      "$peers" "$DIR/m$n.log" "$DIR/m$n.pid"
    echo "cluster: member $n pid $(cat "$DIR/m$n.pid") client 127.0.0.1:${CLIENT_PORTS[$((n - 1))]} peer 127.0.0.1:${PEER_PORTS[$((n - 1))]}"
  done
  wait_for_health 30 "${CLIENT_PORTS[0]}" || true
  if [ "$(cluster_role "${CLIENT_PORTS[0]}")" = standalone ]; then
    echo "cluster: the server ignores --peers: the members run as 3 independent STANDALONE servers; 'make cluster-stop' stops them" >&2
    exit 1
  fi
  if leader=$(wait_for_leader "${LEADER_WAIT_S:-30}" "${CLIENT_PORTS[@]}"); then
    echo "cluster: leader is member $leader; endpoints 127.0.0.1:7181,127.0.0.1:7182,127.0.0.1:7183"
  else
    echo "cluster: no leader within ${LEADER_WAIT_S:-30}s; see $DIR/m*.log (members left running; 'make cluster-stop' stops them)" >&2
    exit 1
  fi
}

stop() {
  local n pid
  for n in 1 2 3; do
    pid=$(cat "$DIR/m$n.pid" 2>/dev/null || true)
    if pid_alive "$pid"; then
      stop_pid "$pid" "${STOP_GRACE_S:-5}"
      echo "cluster: stopped member $n (pid $pid)"
    fi
    rm -f "$DIR/m$n.pid"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
