#!/usr/bin/env bash
# puzzlegen on Redis: a coordinating `run --redis` plus `puzzlegen worker` processes, against
# the repo's mock Gemini server.
#
#   bench/distributed.sh
#
# (a) Latency-bound, scaling: mock latency 200 ms, no binding limit (rpm 100000, 64 requests
#     at once for all processes together), 480 themes x 15 texts, worker_count 2 in every
#     process. Wall time and texts/s of the run with 1, 2, 4 and 8 processes working on the
#     queue ("1" = the coordinator alone; the others add `puzzlegen worker` processes), the
#     speedup against 1 and per process, the machine's CPU use during the run (/proc/stat,
#     all cores), the CPU seconds of the puzzlegen processes, and each worker's peak RSS.
#     Each measurement starts from an empty Redis and fresh caches.
# (b) Limiter-bound, on a Redis Cluster of 3 masters: requests_per_minute 600 counted per
#     request (10 a second) for all processes together, batch_size 5, mock latency 50 ms with
#     the same quota (a 429 would show the limit broken), 120 themes (360 requests):
#     coordinator + 2 workers, each given another master's URL. Achieved request rate between
#     the mock's first and last request, as a share of the limit.
# (c) A worker's memory as the run grows: coordinator + 1 worker, mock latency 20 ms, 240
#     then 960 themes; the worker's peak RSS at both sizes and their ratio.
#
# Output: one `key value` line per figure on stdout (progress notes go to stderr).
# Needs redis-server and redis-cli (apt-get install -y redis-server redis-tools), python3,
# /usr/bin/time (apt-get install -y time); builds the release binaries.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

note() { echo "== $*" >&2; }
die() { echo "distributed.sh: error: $*" >&2; exit 1; }

command -v redis-server >/dev/null || die "redis-server not found (apt-get install -y redis-server)"
command -v redis-cli >/dev/null || die "redis-cli not found (apt-get install -y redis-tools)"
[ -x /usr/bin/time ] || die "/usr/bin/time not found (apt-get install -y time)"
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
# flush_all URL...: FLUSHALL on each server (each master of a cluster is given).
flush_all() {
  local url
  for url in "$@"; do
    redis-cli -u "$url" FLUSHALL >/dev/null || die "FLUSHALL on $url failed"
  done
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

# cpu_ticks -> "busy total" jiffies of all cores so far (/proc/stat).
cpu_ticks() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print t-$5-$6, t}' /proc/stat; }

# measure THEMES PUZZLES EXTRA WORKER_COUNT MAX_CONCURRENT WORKERS NAME [URL...]
#   -> sets MEASURED (wall s), CPU_BUSY (share of all cores busy during the run), PG_CPU (CPU
#      seconds of the puzzlegen processes), WORKER_RSS (each worker's peak RSS in MB,
#      comma-separated). Worker w connects to URL number w (mod their count), the coordinator
#      to the first; without URLs, everyone to REDIS_URL.
measure() {
  local themes=$1 puzzles=$2 extra=$3 wc=$4 mc=$5 workers=$6 name=$7 w
  shift 7
  local urls=("$@")
  [ ${#urls[@]} -gt 0 ] || urls=("$REDIS_URL")
  local wpids=()
  flush_all "${urls[@]}"
  for w in $(seq "$workers"); do
    setup "$TMP/$name/w$w" "$themes" "$puzzles" "$extra" "$wc" "$mc" "$name"
    (cd "$TMP/$name/w$w" && GEMINI_API_KEY=bench-key exec /usr/bin/time -f "%U %S %M" -o time.txt \
      "$PUZZLEGEN" worker --config params.yaml --redis "${urls[$((w % ${#urls[@]}))]}" \
      >log.out 2>log.err) &
    wpids+=($!); PIDS+=($!)
  done
  setup "$TMP/$name/c" "$themes" "$puzzles" "$extra" "$wc" "$mc" "$name"
  sleep 1 # the workers connect and poll
  local t0 t1 c0 c1
  c0=$(cpu_ticks)
  t0=$(date +%s.%N)
  (cd "$TMP/$name/c" && GEMINI_API_KEY=bench-key /usr/bin/time -f "%U %S %M" -o time.txt \
    "$PUZZLEGEN" --quiet run --config params.yaml --redis "${urls[0]}" >out.log 2>err.log) \
    || { tail -n 20 "$TMP/$name/c/err.log" >&2; die "run $name failed"; }
  t1=$(date +%s.%N)
  c1=$(cpu_ticks)
  # SIGTERM to each worker itself (its /usr/bin/time then writes what it measured).
  for w in "${wpids[@]}"; do
    pkill -TERM -P "$w" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$w" 2>/dev/null || break; sleep 0.1; done
    stop_pid "$w"
  done
  MEASURED=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
  CPU_BUSY=$(python3 -c "b0, t0 = '$c0'.split(); b1, t1 = '$c1'.split(); print(f'{(int(b1) - int(b0)) / max(1, int(t1) - int(t0)):.2f}')")
  local f u sy m cpu=0 rss=()
  for f in "$TMP/$name"/*/time.txt; do
    [ -s "$f" ] || die "$f: /usr/bin/time wrote nothing"
    read -r u sy m < <(tail -n 1 "$f")
    cpu=$(python3 -c "print(f'{$cpu + $u + $sy:.2f}')")
    case $f in */w*/time.txt) rss+=($((m / 1024))) ;; esac
  done
  PG_CPU=$cpu
  WORKER_RSS=$(IFS=,; echo "${rss[*]:-}")
}

# --- (a) latency-bound, 1 to 8 processes ----------------------------------------------------
A_THEMES=480
A_EXTRA="  requests_per_minute: 100000
  rpm_counts: requests"
start_mock latency --latency-ms 200
A_ROWS=()
for n in 1 2 4 8; do
  note "(a) latency-bound: coordinator + $((n - 1)) worker(s)"
  measure $A_THEMES 120 "$A_EXTRA" 2 64 $((n - 1)) "a$n"
  A_ROWS+=("$n:$MEASURED:$CPU_BUSY:$PG_CPU:$WORKER_RSS")
done
A_STATS=$(stats)
stop_pid "$MOCK_PID"
python3 - "$A_THEMES" "$A_STATS" "${A_ROWS[@]}" <<'EOF'
import json, os, sys
texts = int(sys.argv[1]) * 15
s = json.loads(sys.argv[2])
rows = [r.split(":") for r in sys.argv[3:]]
base = float(rows[0][1])
print("a_texts_per_run", texts)
print("a_cores", os.cpu_count())
for n, wall, busy, cpu, rss in rows:
    n, wall = int(n), float(wall)
    print(f"a_wall_seconds_{n}", f"{wall:.2f}")
    print(f"a_texts_per_second_{n}", f"{texts / wall:.1f}")
    print(f"a_speedup_{n}", f"{base / wall:.2f}")
    print(f"a_speedup_per_process_{n}", f"{base / wall / n:.2f}")
    print(f"a_machine_cpu_busy_{n}", busy)
    print(f"a_puzzlegen_cpu_seconds_{n}", cpu)
    if rss:
        print(f"a_worker_peak_rss_mb_{n}", rss)
print("a_distinct_texts_embedded_all_runs", s["distinct_texts_embedded"])
print("a_duplicate_texts", s["duplicate_texts"])
print("a_responses_429", s["responses_429"])
EOF

# --- (b) limiter-bound, on a Redis Cluster of 3 masters --------------------------------------
CLUSTER_URLS=()
CLUSTER_ADDRS=()
for i in 1 2 3; do
  port=$(free_port); bus=$(free_port)
  mkdir -p "$TMP/cluster/$i"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-port "$bus" \
    --cluster-config-file nodes.conf --cluster-node-timeout 2000 --save "" --appendonly no \
    --dir "$TMP/cluster/$i" >"$TMP/cluster/$i/log" 2>&1 &
  PIDS+=($!)
  CLUSTER_URLS+=("redis://127.0.0.1:$port/")
  CLUSTER_ADDRS+=("127.0.0.1:$port")
done
for u in "${CLUSTER_URLS[@]}"; do
  for _ in $(seq 100); do redis-cli -u "$u" PING >/dev/null 2>&1 && break; sleep 0.1; done
done
redis-cli --cluster create "${CLUSTER_ADDRS[@]}" --cluster-replicas 0 --cluster-yes \
  >"$TMP/cluster/create.log" 2>&1 || { cat "$TMP/cluster/create.log" >&2; die "redis-cli --cluster create failed"; }
for _ in $(seq 100); do
  ok=0
  for u in "${CLUSTER_URLS[@]}"; do
    redis-cli -u "$u" CLUSTER INFO | grep -q cluster_state:ok && ok=$((ok + 1))
  done
  [ $ok -eq 3 ] && break
  sleep 0.1
done
[ $ok -eq 3 ] || die "the cluster never said cluster_state:ok"
B_THEMES=120
B_EXTRA="  requests_per_minute: 600
  rpm_counts: requests
  batch_size: 5"
start_mock limit --latency-ms 50 --quota-per-minute 600 --quota-unit requests
note "(b) limiter-bound on a Redis Cluster of 3 masters: coordinator + 2 workers, 600 requests a minute"
measure $B_THEMES 30 "$B_EXTRA" 4 16 2 b "${CLUSTER_URLS[@]}"
B_WALL=$MEASURED
B_STATS=$(stats)
stop_pid "$MOCK_PID"
python3 - "$B_WALL" "$B_STATS" <<'EOF'
import json, sys
wall = float(sys.argv[1])
s = json.loads(sys.argv[2])
span = (s["last_request_unix_ms"] - s["first_request_unix_ms"]) / 1000
rate = (s["requests"] - 1) / span * 60
print("b_cluster_masters", 3)
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

# --- (c) a worker's memory as the run grows --------------------------------------------------
start_mock memory --latency-ms 20
C_RSS=()
for size in 240 960; do
  note "(c) memory: coordinator + 1 worker, $size themes"
  measure $size $((size / 4)) "$A_EXTRA" 4 64 1 "c$size"
  echo "c_wall_seconds_${size}_themes $MEASURED"
  echo "c_worker_peak_rss_mb_${size}_themes $WORKER_RSS"
  C_RSS+=("$WORKER_RSS")
done
stop_pid "$MOCK_PID"
python3 -c "import sys; print('c_worker_rss_ratio_960_to_240', f'{int(sys.argv[2]) / int(sys.argv[1]):.2f}')" "${C_RSS[@]}"
