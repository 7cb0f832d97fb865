#!/usr/bin/env bash
# puzzlegen against the repo's mock Gemini server: request count, duplicates, wall time,
# peak RSS, compared with the Python original measured on this machine on the same workload.
#
#   bench/gemini_mock.sh
#
# Run 1 (throughput): 320 themes x 50 candidates (35 own + 15 from a shared 1,200-word pool),
#   mock latency 200 ms, rpm 2900 counted per request, min_request_interval 0.1 s.
# Run 2 (rate limit binds): first 100 themes, rpm 600 per request, no min interval,
#   mock latency 50 ms; reports the achieved request rate against the configured one.
#
# Output: one `key value` line per figure on stdout (progress notes go to stderr).
# Ratios are Rust / Python (below 1 = Rust is faster / sends fewer requests).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

# Python original, measured on this machine on the same workload.
PY_WALL=143
PY_REQUESTS=320
PY_DUPLICATES=31
PY_RSS_MB=3200

note() { echo "== $*" >&2; }
die() { echo "gemini_mock.sh: error: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 not found (needed for the workload generator)"
command -v cargo >/dev/null || die "cargo not found"

if [ -x /usr/bin/time ] && /usr/bin/time -f '%M %e' true >/dev/null 2>&1; then
  HAVE_GNU_TIME=1
else
  HAVE_GNU_TIME=0
  echo "gemini_mock.sh: GNU time not found (apt-get install time); measuring RSS with python resource instead" >&2
fi
HAVE_CURL=0
command -v curl >/dev/null && HAVE_CURL=1

TMP=$(mktemp -d "${TMPDIR:-/tmp}/puzzlegen-bench.XXXXXX")
MOCK_PID=""

stop_mock() {
  if [ -n "$MOCK_PID" ]; then
    kill -TERM "$MOCK_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$MOCK_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
    MOCK_PID=""
  fi
}
cleanup() { stop_mock; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build ----------------------------------------------------------------------------------
# shellcheck source=bench/build_release.sh
. "$ROOT/bench/build_release.sh"

# --- helpers --------------------------------------------------------------------------------
# start_mock LATENCY_MS -> sets MOCK_PID, MOCK_URL
start_mock() {
  local latency=$1 out=$TMP/mock.$1.out
  "$MOCK" --port 0 --latency-ms "$latency" --dimension 3072 --seed 7 >"$out" 2>"$TMP/mock.$1.err" &
  MOCK_PID=$!
  MOCK_URL=""
  for _ in $(seq 100); do
    MOCK_URL=$(sed -n 's/^listening on \(http:\/\/[^ ]*\)$/\1/p' "$out" | head -n 1)
    [ -n "$MOCK_URL" ] && return 0
    kill -0 "$MOCK_PID" 2>/dev/null || { cat "$TMP/mock.$1.err" >&2; MOCK_PID=""; die "mock-gemini exited at start-up"; }
    sleep 0.1
  done
  die "mock-gemini did not print 'listening on ...' within 10 s"
}

fetch_stats() { # fetch_stats FILE
  if [ "$HAVE_CURL" = 1 ]; then
    curl -fsS --max-time 10 "$MOCK_URL/stats" >"$1" || die "GET $MOCK_URL/stats failed"
  else
    python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]+"/stats", timeout=10).read().decode())' \
      "$MOCK_URL" >"$1" || die "GET $MOCK_URL/stats failed"
  fi
}

# write_params DIR BASE_URL PUZZLES RPM MIN_INTERVAL
write_params() {
  cat >"$1/params.yaml" <<EOF
puzzle_generation: {total_puzzle_count: $3, words_per_theme: 4, themes_per_puzzle: 4, random_seed: 42}
embedding: {provider: gemini}
gemini:
  model_id: gemini-embedding-001
  embedding_dimension: 3072
  api_key_env: GEMINI_API_KEY
  task_type: SEMANTIC_SIMILARITY
  base_url: $2
  requests_per_minute: $4
  rpm_counts: requests
  min_request_interval: $5
  retry_base_delay: 1.0
  max_retries: 5
multiprocessing: {worker_count: 4, max_concurrent_requests: 6, task_timeout_seconds: 300}
output: {csv_precision: 6}
paths: {themes: themes.json, candidates: candidates.json, outputs: out, reports: out/reports, cache: cache}
EOF
}

# run_puzzlegen DIR -> writes DIR/measure ("<peak_rss_kb> <wall_s>"), DIR/stdout, DIR/stderr
run_puzzlegen() {
  local dir=$1 rc=0
  # Start on a quiet disk: a run writes ~500 MB, and an earlier run's write-back still in
  # progress adds seconds to the next one's final fsync.
  sync
  (
    cd "$dir"
    export GEMINI_API_KEY=bench-key
    if [ "$HAVE_GNU_TIME" = 1 ]; then
      /usr/bin/time -f '%M %e' -o measure "$PUZZLEGEN" run --config params.yaml >stdout 2>stderr
    else
      python3 - "$PUZZLEGEN" <<'EOF' 2>stderr
import resource, subprocess, sys, time
t = time.monotonic()
with open("stdout", "w") as out:
    rc = subprocess.call([sys.argv[1], "run", "--config", "params.yaml"], stdout=out)
wall = time.monotonic() - t
with open("measure", "w") as m:
    m.write(f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss} {wall:.2f}\n")
sys.exit(rc)
EOF
    fi
  ) || rc=$?
  case $rc in
    0) ;;
    1) echo "gemini_mock.sh: warning: puzzlegen exit 1 (finished, some puzzles failed)" >&2 ;;
    *) echo "--- puzzlegen stdout:" >&2; cat "$dir/stdout" >&2 || true
       echo "--- puzzlegen stderr (last 40 lines):" >&2; tail -n 40 "$dir/stderr" >&2 || true
       die "puzzlegen run failed with exit code $rc (in $dir)" ;;
  esac
  [ -f "$dir/out/puzzle_metadata.json" ] || die "puzzlegen wrote no $dir/out/puzzle_metadata.json"
}

# --- run 1: throughput, 320 themes, 200 ms latency -----------------------------------------
R1=$TMP/run1
note "run 1: generating workload (320 themes x 50 candidates)"
DISTINCT=$(python3 bench/gen_workload.py "$R1" --themes 320 | awk '$1=="distinct_texts_ci"{print $2}') \
  || die "workload generation failed"
[ -n "$DISTINCT" ] || die "workload generator printed no distinct_texts_ci"
start_mock 200
write_params "$R1" "$MOCK_URL" 80 2900 0.1
note "run 1: puzzlegen against $MOCK_URL (latency 200 ms)"
run_puzzlegen "$R1"
fetch_stats "$R1/stats.json"
stop_mock

read -r RSS_KB WALL < <(tail -n 1 "$R1/measure")
python3 - "$R1/stats.json" "$R1/out/puzzle_metadata.json" "$DISTINCT" "$RSS_KB" "$WALL" \
  "$PY_WALL" "$PY_REQUESTS" "$PY_DUPLICATES" "$PY_RSS_MB" <<'EOF'
import json, math, sys
s = json.load(open(sys.argv[1]))
meta = json.load(open(sys.argv[2]))
distinct, rss_kb, wall = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
py_wall, py_req, py_dup, py_rss = (float(x) for x in sys.argv[6:10])
floor_req = math.ceil(distinct / 100)
floor_s = floor_req * 0.1
es = meta.get("embedding_stats", {})
rows = [
    ("distinct_texts_ignoring_case", distinct),
    ("distinct_texts_embedded", s["distinct_texts_embedded"]),
    ("requests", s["requests"]),
    ("texts_sent", s["texts"]),
    ("duplicate_texts", s["duplicate_texts"]),
    ("responses_429", s["responses_429"]),
    ("responses_5xx", s["responses_5xx"]),
    ("peak_concurrency", s["peak_concurrency"]),
    ("max_requests_in_any_60s", s["max_requests_in_any_60s"]),
    ("puzzlegen_retries", es.get("retries", "n/a")),
    ("puzzlegen_limiter_wait_seconds", es.get("limiter_wait_seconds", "n/a")),
    ("wall_seconds", f"{wall:.2f}"),
    ("peak_rss_mb", f"{rss_kb / 1024:.1f}"),
    ("floor_requests", floor_req),
    ("floor_seconds", f"{floor_s:.1f}"),
    ("wall_over_floor", f"{wall / floor_s:.2f}"),
    ("requests_over_floor", f"{s['requests'] / floor_req:.3f}"),
    ("python_original_wall_seconds", f"{py_wall:g}"),
    ("python_original_requests", f"{py_req:g}"),
    ("python_original_duplicate_texts", f"{py_dup:g}"),
    ("python_original_peak_rss_mb", f"{py_rss:g}"),
    ("wall_ratio_vs_python", f"{wall / py_wall:.3f}"),
    ("requests_ratio_vs_python", f"{s['requests'] / py_req:.3f}"),
]
for k, v in rows:
    print(k, v)
EOF
grep -E '^(api|time):' "$R1/stdout" | sed 's/^/# puzzlegen summary: /' >&2 || true

# --- run 2: the rate limit binds, 100 themes, 50 ms latency --------------------------------
R2=$TMP/run2
note "run 2: generating workload (first 100 themes)"
python3 bench/gen_workload.py "$R2" --themes 100 >"$R2.gen" || die "workload generation failed"
start_mock 50
write_params "$R2" "$MOCK_URL" 25 600 0
note "run 2: puzzlegen against $MOCK_URL (latency 50 ms, rpm 600)"
run_puzzlegen "$R2"
fetch_stats "$R2/stats.json"
stop_mock

read -r _ WALL2 < <(tail -n 1 "$R2/measure")
python3 - "$R2/stats.json" "$WALL2" 600 <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
wall, rpm = float(sys.argv[2]), float(sys.argv[3])
n = s["requests"]
span_ms = (s["last_request_unix_ms"] or 0) - (s["first_request_unix_ms"] or 0)
print("rate_run_requests", n)
print("rate_run_responses_429", s["responses_429"])
print("rate_run_max_requests_in_any_60s", s["max_requests_in_any_60s"])
print("rate_run_span_seconds", f"{span_ms / 1000:.2f}")
print("rate_run_wall_seconds", f"{wall:.2f}")
print("configured_rpm", f"{rpm:g}")
if span_ms > 0:
    achieved = n / (span_ms / 60000)
    print("achieved_rpm", f"{achieved:.1f}")
    print("achieved_over_configured", f"{achieved / rpm:.3f}")
else:
    print("achieved_rpm n/a  # fewer than two distinct request times")
    print("achieved_over_configured n/a")
EOF
grep -E '^(api|time):' "$R2/stdout" | sed 's/^/# puzzlegen summary (run 2): /' >&2 || true
