#!/usr/bin/env bash
# `make bench`: Keeper throughput and latency on this machine.
#
# Builds release, starts a FRESH 3-member cluster on 127.0.0.1 (temp data dirs, free ports,
# fsync on: the default), waits for a leader, then runs keeper-bench for every op in
# BENCH_OPS at every client count in BENCH_CLIENTS and prints one table. Members are
# stopped by PID on exit (also on Ctrl-C or failure).
#
# If the cluster cannot elect a leader (e.g. the server has no cluster mode yet), the script
# says so loudly and falls back to a single standalone member, so the numbers still mean
# something; BENCH_MODE=standalone asks for that directly.
#
# BENCH_MODE=ensemble1 starts a one-member ZAB ensemble (`--peers` naming only itself):
# the replicated write path on one member, to compare with the standalone one.
#
# Env (defaults): BENCH_MODE=cluster|standalone|ensemble1 (cluster), BENCH_OPS ("set get lget"),
# BENCH_CLIENTS ("1 16 64"), BENCH_DURATION (10s), BENCH_WARMUP (2s), BENCH_KEYS (1000),
# BENCH_VALUE_SIZE (256), LEADER_WAIT_S (30), BENCH_CELL_TIMEOUT_S (120: hard cap per cell),
# BENCH_KEEP=1 keeps the temp dir (data and member logs).
# The lock recipe: BENCH_OPS="lock handoff" BENCH_CLIENTS=64 (`make bench-locks`): `lock` is
# uncontended acquire+release (a lock per client; ops/s = acquire+release pairs), `handoff`
# is one lock shared by all clients (latency = release sent -> next grant answered).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh

MODE=${BENCH_MODE:-cluster}
OPS=${BENCH_OPS:-"set get lget"}
CLIENTS=${BENCH_CLIENTS:-"1 16 64"}
DURATION=${BENCH_DURATION:-10s}
WARMUP=${BENCH_WARMUP:-2s}
KEYS=${BENCH_KEYS:-1000}
VALUE_SIZE=${BENCH_VALUE_SIZE:-256}
LEADER_WAIT_S=${LEADER_WAIT_S:-30}
CELL_TIMEOUT_S=${BENCH_CELL_TIMEOUT_S:-120}

build_release
TARGET=$(keeper_target_dir)
KEEPER="$TARGET/release/keeper"
BENCH="$TARGET/release/keeper-bench"

WORK=$(mktemp -d -t keeper-bench.XXXXXX)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid" 5
  done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then
    echo "bench: kept $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_all() {
  local pid
  for pid in "${PIDS[@]}"; do
    stop_pid "$pid" 5
  done
  PIDS=()
}

# start_cluster: 3 members; succeeds once they agree on a leader. Sets ENDPOINTS.
start_cluster() {
  local ports cports pports peers n deadline leader pid
  read -r -a ports <<<"$(free_ports 6)"
  cports=("${ports[@]:0:3}")
  pports=("${ports[@]:3:3}")
  peers=$(peers_arg "${pports[@]}")
  for n in 1 2 3; do
    start_member "$KEEPER" "$n" "$WORK/cluster/m$n" "${cports[$((n - 1))]}" "${pports[$((n - 1))]}" \
      "$peers" "$WORK/cluster-m$n.log" "$WORK/cluster-m$n.pid"
    PIDS+=("$(cat "$WORK/cluster-m$n.pid")")
  done
  deadline=$((SECONDS + LEADER_WAIT_S))
  while [ "$SECONDS" -lt "$deadline" ]; do
    for pid in "${PIDS[@]}"; do
      if ! pid_alive "$pid"; then
        CLUSTER_FAILURE="a member exited during startup"
        return 1
      fi
    done
    if [ "$(cluster_role "${cports[0]}")" = standalone ]; then
      CLUSTER_FAILURE="the server ignores --peers (member 1 reports role standalone)"
      return 1
    fi
    if leader=$(wait_for_leader 1 "${cports[@]}"); then
      ENDPOINTS="127.0.0.1:${cports[0]},127.0.0.1:${cports[1]},127.0.0.1:${cports[2]}"
      DESCRIPTION="3-member cluster (leader: member $leader), fsync on"
      return 0
    fi
  done
  CLUSTER_FAILURE="no leader within ${LEADER_WAIT_S}s"
  return 1
}

# start_standalone: one member without peers. Sets ENDPOINTS.
start_standalone() {
  local port
  port=$(free_ports 1)
  start_member "$KEEPER" 1 "$WORK/standalone" "$port" "" "" "$WORK/standalone.log" "$WORK/standalone.pid"
  PIDS+=("$(cat "$WORK/standalone.pid")")
  if ! wait_for_health 30 "$port"; then
    echo "bench: standalone keeper did not become healthy; its log:" >&2
    tail -n 30 "$WORK/standalone.log" >&2 || true
    exit 1
  fi
  ENDPOINTS="127.0.0.1:$port"
  DESCRIPTION="STANDALONE single member (not replicated), fsync on"
}

# start_ensemble1: one member running the ZAB driver with itself as the only peer.
start_ensemble1() {
  local ports
  read -r -a ports <<<"$(free_ports 2)"
  start_member "$KEEPER" 1 "$WORK/ensemble1" "${ports[0]}" "${ports[1]}" \
    "$(peers_arg "${ports[1]}")" "$WORK/ensemble1.log" "$WORK/ensemble1.pid"
  PIDS+=("$(cat "$WORK/ensemble1.pid")")
  if ! wait_for_leader "$LEADER_WAIT_S" "${ports[0]}" >/dev/null; then
    echo "bench: the one-member ensemble elected no leader; its log:" >&2
    tail -n 30 "$WORK/ensemble1.log" >&2 || true
    exit 1
  fi
  ENDPOINTS="127.0.0.1:${ports[0]}"
  DESCRIPTION="ONE-MEMBER ZAB ensemble (not replicated), fsync on"
}

CLUSTER_FAILURE=""
if [ "$MODE" = ensemble1 ]; then
  start_ensemble1
elif [ "$MODE" = cluster ]; then
  if ! start_cluster; then
    echo "bench: ================================================================" >&2
    echo "bench: cluster mode unavailable: $CLUSTER_FAILURE." >&2
    echo "bench: last lines of member 1's log:" >&2
    tail -n 5 "$WORK/cluster-m1.log" >&2 || true
    echo "bench: FALLING BACK TO A STANDALONE MEMBER: these are NOT replicated numbers." >&2
    echo "bench: ================================================================" >&2
    stop_all
    start_standalone
  fi
elif [ "$MODE" = standalone ]; then
  start_standalone
else
  echo "bench: BENCH_MODE must be cluster, standalone or ensemble1, not $MODE" >&2
  exit 2
fi

echo
echo "Keeper bench: $DESCRIPTION"
echo "  endpoints $ENDPOINTS; ${VALUE_SIZE}-byte values, $KEYS keys, warm-up $WARMUP, $DURATION per cell;"
echo "  closed loop (each client waits for its answer), latencies in ms; $(nproc) cores shared by servers and generator"
echo
"$BENCH" --row-header
FAILED=0
for op in $OPS; do
  for clients in $CLIENTS; do
    if ! timeout --kill-after=5 "$CELL_TIMEOUT_S" "$BENCH" --endpoints "$ENDPOINTS" --op "$op" \
      --clients "$clients" --duration "$DURATION" --warmup "$WARMUP" --value-size "$VALUE_SIZE" \
      --keys "$KEYS" --row; then
      printf '%-22s %7s   FAILED (see the message above)\n' "$op" "$clients"
      FAILED=1
    fi
  done
done
exit "$FAILED"
