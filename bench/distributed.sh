#!/usr/bin/env bash
# puzzlegen on one Redis: a coordinating `run --redis` plus `puzzlegen worker` processes,
# against the repo's mock Gemini server.
#
#   bench/distributed.sh
#
# (a) Latency-bound: mock latency 500 ms, limits far away (rpm 100000, 32 requests at once
#     for all processes together), 72 themes x 15 texts, worker_count 2 in every process.
#     Wall time and texts/s of the run with 1, 2 and 3 processes working on the queue
#     ("1 worker" = the coordinator alone; 2 and 3 add `puzzlegen worker` processes), and
#     the ratios to 1 worker. Each measurement starts from an empty Redis and fresh caches.
# (b) Limiter-bound: requests_per_minute 600 counted per request (10 a second) for all
#     processes together, batch_size 5, mock latency 50 ms with the same quota (a 429 would
#     show the limit broken), 120 themes (360 requests): coordinator + 2 workers. Achieved
#     request rate between the mock's first and last request, as a share of the limit.
#
# Output: one `key value` line per figure on stdout (progress notes go to stderr).
# Needs redis-server (apt-get install -y redis-server), python3; builds the release binaries.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

note() { echo "== $*" >&2; }
die() { echo "distributed.sh: error: $*" >&2; exit 1; }

command -v redis-server >/dev/null || die "redis-server not found (apt-get install -y redis-server)"
command -v python3 >/dev/null || die "python3 not found"
command -v cargo >/dev/null || die "cargo not found"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/puzzlegen-dist-bench.XXXXXX")
PIDS=()

stop_pid() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ----------------------------------------------------------------------------------
# shellcheck source=bench/build_release.sh
. "$ROOT/bench/build_release.sh"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- Redis ----------------------------------------------------------------------------------
REDIS_PORT=$(free_port)
mkdir -p "$TMP/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP/redis" \
  >"$TMP/redis/log" 2>&1 &
PIDS+=($!)
REDIS_URL=redis://127.0.0.1:$REDIS_PORT/
for _ in $(seq 100); do
  python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2)' \
    "$REDIS_PORT" 2>/dev/null && break
  sleep 0.1
done
flush_redis() {
  python3 - "$REDIS_PORT" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 2)
s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
assert s.recv(64).startswith(b"+OK"), "FLUSHALL failed"
EOF
}

# --- mock -----------------------------------------------------------------------------------
# start_mock NAME ARGS... -> sets MOCK_PID, MOCK_URL
start_mock() {
  local name=$1; shift
  "$MOCK" --port 0 --dimension 768 --seed 7 "$@" >"$TMP/mock.$name.out" 2>"$TMP/mock.$name.err" &
  MOCK_PID=$!
  PIDS+=("$MOCK_PID")
  MOCK_URL=""
  for _ in $(seq 100); do
    MOCK_URL=$(sed -n 's/^listening on \(http:\/\/[^ ]*\)$/\1/p' "$TMP/mock.$name.out" | head -n 1)
    [ -n "$MOCK_URL" ] && return 0
    sleep 0.1
  done
  die "mock-gemini did not print 'listening on ...' within 10 s"
}
stats() { python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]+"/stats", timeout=10).read().decode())' "$MOCK_URL"; }

# workload DIR THEMES PREFIX: THEMES themes of 14 candidates (15 texts each), all distinct
# and starting with PREFIX (so no run finds another's texts at the mock).
workload() {
  python3 - "$1" "$2" "$3" <<'EOF'
import json, sys
d, n, p = sys.argv[1], int(sys.argv[2]), sys.argv[3]
themes = [f"{p} theme {t:03}" for t in range(n)]
json.dump({"themes": themes}, open(f"{d}/themes.json", "w"))
cands = {t: {"words": [f"{p}w{i}x{j}" for j in range(14)]} for i, t in enumerate(themes)}
json.dump({"candidates": cands}, open(f"{d}/candidates.json", "w"))
EOF
}

# params DIR PUZZLES GEMINI_EXTRA WORKER_COUNT MAX_CONCURRENT
params() {
  cat >"$1/params.yaml" <<EOF
puzzle_generation: {total_puzzle_count: $2, words_per_theme: 4, themes_per_puzzle: 4, random_seed: 42}
embedding: {provider: gemini}
gemini:
  model_id: gemini-embedding-001
  embedding_dimension: 768
  api_key_env: GEMINI_API_KEY
  base_url: $MOCK_URL
  retry_base_delay: 0.2
  max_retries: 5
$3
multiprocessing: {worker_count: $4, max_concurrent_requests: $5, task_timeout_seconds: 300}
paths: {themes: themes.json, candidates: candidates.json, outputs: out, cache: cache}
EOF
}

# setup DIR THEMES PUZZLES GEMINI_EXTRA WORKER_COUNT MAX_CONCURRENT PREFIX: a fresh directory.
setup() {
  rm -rf "$1"; mkdir -p "$1"
  workload "$1" "$2" "$7"
  params "$1" "$3" "$4" "$5" "$6"
}

# measure THEMES PUZZLES EXTRA WORKER_COUNT MAX_CONCURRENT WORKERS NAME -> sets MEASURED (wall s)
measure() {
  local themes=$1 puzzles=$2 extra=$3 wc=$4 mc=$5 workers=$6 name=$7 w
  local wpids=()
  flush_redis
  for w in $(seq "$workers"); do
    setup "$TMP/$name/w$w" "$themes" "$puzzles" "$extra" "$wc" "$mc" "$name"
    (cd "$TMP/$name/w$w" && GEMINI_API_KEY=bench-key exec "$PUZZLEGEN" worker --config params.yaml \
      --redis "$REDIS_URL" >log.out 2>log.err) &
    wpids+=($!); PIDS+=($!)
  done
  setup "$TMP/$name/c" "$themes" "$puzzles" "$extra" "$wc" "$mc" "$name"
  sleep 1 # the workers connect and poll
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$TMP/$name/c" && GEMINI_API_KEY=bench-key "$PUZZLEGEN" --quiet run --config params.yaml \
    --redis "$REDIS_URL" >out.log 2>err.log) || { tail -n 20 "$TMP/$name/c/err.log" >&2; die "run $name failed"; }
  t1=$(date +%s.%N)
  for w in "${wpids[@]}"; do stop_pid "$w"; done
  MEASURED=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
}

# --- (a) latency-bound ----------------------------------------------------------------------
A_THEMES=72
A_EXTRA="  requests_per_minute: 100000
  rpm_counts: requests"
start_mock latency --latency-ms 500
declare -A WALL
for n in 1 2 3; do
  note "(a) latency-bound: coordinator + $((n - 1)) worker(s)"
  measure $A_THEMES 18 "$A_EXTRA" 2 32 $((n - 1)) "a$n"
  WALL[$n]=$MEASURED
done
A_STATS=$(stats)
stop_pid "$MOCK_PID"
python3 - "${WALL[1]}" "${WALL[2]}" "${WALL[3]}" "$A_THEMES" "$A_STATS" <<'EOF'
import json, sys
w = [float(x) for x in sys.argv[1:4]]
texts = int(sys.argv[4]) * 15
s = json.loads(sys.argv[5])
print("a_texts_per_run", texts)
for i, wall in enumerate(w, 1):
    print(f"a_wall_seconds_{i}_worker{'s' if i > 1 else ''}", f"{wall:.2f}")
    print(f"a_texts_per_second_{i}_worker{'s' if i > 1 else ''}", f"{texts / wall:.1f}")
for i in (2, 3):
    print(f"a_throughput_ratio_{i}_to_1", f"{w[0] / w[i - 1]:.2f}")
print("a_distinct_texts_embedded_3_runs", s["distinct_texts_embedded"])
print("a_duplicate_texts", s["duplicate_texts"])
print("a_responses_429", s["responses_429"])
EOF

# --- (b) limiter-bound ----------------------------------------------------------------------
B_THEMES=120
B_EXTRA="  requests_per_minute: 600
  rpm_counts: requests
  batch_size: 5"
start_mock limit --latency-ms 50 --quota-per-minute 600 --quota-unit requests
note "(b) limiter-bound: coordinator + 2 workers, 600 requests a minute"
measure $B_THEMES 30 "$B_EXTRA" 4 16 2 b
B_WALL=$MEASURED
B_STATS=$(stats)
stop_pid "$MOCK_PID"
python3 - "$B_WALL" "$B_STATS" <<'EOF'
import json, sys
wall = float(sys.argv[1])
s = json.loads(sys.argv[2])
span = (s["last_request_unix_ms"] - s["first_request_unix_ms"]) / 1000
rate = (s["requests"] - 1) / span * 60
print("b_wall_seconds", f"{wall:.2f}")
print("b_requests", s["requests"])
print("b_sending_seconds", f"{span:.2f}")
print("b_configured_requests_per_minute", 600)
print("b_achieved_requests_per_minute", f"{rate:.1f}")
print("b_achieved_share_of_limit", f"{rate / 600:.3f}")
print("b_max_requests_in_any_60s", s["max_requests_in_any_60s"])
print("b_responses_429", s["responses_429"])
print("b_duplicate_texts", s["duplicate_texts"])
EOF
