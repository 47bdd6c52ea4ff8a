# Shared helpers for scripts/cluster.sh and scripts/bench.sh (source it, don't run it).
# Starts Keeper members as background processes, waits for a leader, stops members by PID.

# The cargo target directory (honours CARGO_TARGET_DIR and workspace config).
keeper_target_dir() {
  cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
}

# build_release: the release builds of keeper and keeper-bench.
build_release() {
  cargo build --release -j"${JOBS:-2}" -p keeper-server -p keeper-bench
}

# start_member BIN ID DATA_DIR CLIENT_PORT PEER_PORT PEERS LOG PIDFILE
# PEERS empty means standalone (no --id/--peer-addr/--peers).
start_member() {
  local bin=$1 id=$2 data=$3 cport=$4 pport=$5 peers=$6 log=$7 pidfile=$8
  mkdir -p "$data"
  if [ -n "$peers" ]; then
    "$bin" --id "$id" --data-dir "$data" --client-addr "127.0.0.1:$cport" \
      --peer-addr "127.0.0.1:$pport" --peers "$peers" >>"$log" 2>&1 &
  else
    "$bin" --data-dir "$data" --client-addr "127.0.0.1:$cport" >>"$log" 2>&1 &
  fi
  echo $! >"$pidfile"
}

# peers_arg PEER_PORT... -> "1=127.0.0.1:P1,2=127.0.0.1:P2,..."
peers_arg() {
  local i=1 out="" p
  for p in "$@"; do
    out="${out:+$out,}$i=127.0.0.1:$p"
    i=$((i + 1))
  done
  echo "$out"
}

# cluster_leader PORT: the leader id member PORT reports in GET /v1/cluster (empty if none).
cluster_leader() {
  curl -fsS --max-time 1 "http://127.0.0.1:$1/v1/cluster" 2>/dev/null |
    sed -n 's/.*"leader":\([0-9][0-9]*\).*/\1/p'
}

# cluster_role PORT: the role member PORT reports (standalone|leader|follower|looking).
cluster_role() {
  curl -fsS --max-time 1 "http://127.0.0.1:$1/v1/cluster" 2>/dev/null |
    sed -n 's/.*"role":"\([a-z]*\)".*/\1/p'
}

# wait_for_leader SECONDS CLIENT_PORT...: succeeds once every member reports the same
# leader and one of them says it is the leader.
wait_for_leader() {
  local deadline=$((SECONDS + $1)) port leader first agreed has_leader
  shift
  while [ "$SECONDS" -lt "$deadline" ]; do
    first="" agreed=1 has_leader=0
    for port in "$@"; do
      leader=$(cluster_leader "$port")
      if [ -z "$leader" ] || { [ -n "$first" ] && [ "$leader" != "$first" ]; }; then
        agreed=0
        break
      fi
      first=$leader
      [ "$(cluster_role "$port")" = leader ] && has_leader=1
    done
    if [ "$agreed" = 1 ] && [ "$has_leader" = 1 ]; then
      echo "$first"
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# wait_for_health SECONDS CLIENT_PORT: succeeds once GET /healthz answers 200.
wait_for_health() {
  local deadline=$((SECONDS + $1))
  while [ "$SECONDS" -lt "$deadline" ]; do
    curl -fsS --max-time 1 "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# pid_alive PID
pid_alive() {
  [ -n "$1" ] && kill -0 "$1" 2>/dev/null
}

# stop_pid PID [GRACE_SECONDS]: SIGTERM, then SIGKILL if still alive after the grace period.
stop_pid() {
  local pid=$1 grace=${2:-5} waited=0
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  while pid_alive "$pid" && [ "$waited" -lt $((grace * 10)) ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  if pid_alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
  # Reap it when it is our child (no-op otherwise).
  wait "$pid" 2>/dev/null || true
}

# free_ports N: prints N distinct TCP ports on 127.0.0.1 that nothing listens on now.
free_ports() {
  local want=$1 got=() port
  while [ "${#got[@]}" -lt "$want" ]; do
    # Below the kernel's ephemeral range (32768+), so no outgoing connection takes it.
    port=$((20000 + RANDOM % 12000))
    [[ " ${got[*]} " == *" $port "* ]] && continue
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      got+=("$port")
    fi
  done
  echo "${got[@]}"
}
