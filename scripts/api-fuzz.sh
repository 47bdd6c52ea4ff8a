#!/usr/bin/env bash
# `make api-fuzz`: fuzzes the HTTP API against api/openapi.yaml with Schemathesis (PyPI),
# the way an outside checker would (every check; `positive_data_acceptance` excluded, see below): a fresh standalone `keeper` (release build) on a free
# loopback port, every operation, examples + coverage + fuzzing phases, every check.
# The member is stopped by PID on exit.
#
# Env: FUZZ_SECS (180) time budget, FUZZ_SEED (random) to reproduce a run.
#
# Known and deliberate, so excluded from the verdict (see docs/testing.md, "API fuzzing"):
#   - positive_data_acceptance (ST202) flags answers the schema cannot express: 410
#     SessionExpired for a session id that does not exist (ZooKeeper's semantics, and the
#     client treats it as "session gone"), 400 for `X-Keeper-Min-Zxid` above everything a
#     standalone member committed (etcd's "future revision"), 400 for `fence_token`
#     without exactly one of `fence_lock`/`fence_election` (OpenAPI 3.0 cannot tie query
#     parameters together). Every other check, server errors (5xx) included, counts.
# Exit: schemathesis's (0 = no failure), 3 when schemathesis cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cluster-lib.sh
FUZZ_SECS=${FUZZ_SECS:-180}
ST_VERSION=${ST_VERSION:-4.32.5}

if ! command -v st >/dev/null; then
  echo "api-fuzz: installing schemathesis==$ST_VERSION with pip" >&2
  python3 -m pip install --quiet "schemathesis==$ST_VERSION" >&2 ||
    python3 -m pip install --quiet --break-system-packages "schemathesis==$ST_VERSION" >&2 || true
  hash -r
  export PATH="$HOME/.local/bin:$PATH"
  command -v st >/dev/null || { echo "api-fuzz: CANNOT install schemathesis; nothing checked" >&2; exit 3; }
fi

build_release
KEEPER="$(keeper_target_dir)/release/keeper"
WORK=$(mktemp -d -t keeper-fuzz.XXXXXX)
PID=""
cleanup() {
  [ -n "$PID" ] && stop_pid "$PID" 5
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT=$(free_ports 1)
start_member "$KEEPER" 1 "$WORK/data" "$PORT" "" "" "$WORK/keeper.log" "$WORK/keeper.pid"
PID=$(cat "$WORK/keeper.pid")
wait_for_health 30 "$PORT" || { tail -n 30 "$WORK/keeper.log" >&2; exit 1; }

st run api/openapi.yaml --url "http://127.0.0.1:$PORT" --max-time "$FUZZ_SECS" --workers 2 \
  --request-timeout 30 --phases examples,coverage,fuzzing --checks all \
  --exclude-checks positive_data_acceptance ${FUZZ_SEED:+--seed "$FUZZ_SEED"}
