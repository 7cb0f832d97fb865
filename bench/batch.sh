#!/usr/bin/env bash
# Batch mode against the repo's mock Gemini server, on the original's workload
# (bench/gen_workload.py: 320 themes x 50 candidates, 80 puzzles, 3072 dimensions):
#
#   bench/batch.sh
#
# 1. `puzzlegen plan --json`: what it says the run will embed, and its estimates.
# 2. the run in batch mode (jobs of at most 5,000 texts, 4 at once, first poll after 0.5 s),
#    mock job latency 3 s: interactive requests (0 expected), jobs against
#    ceil(texts / 5,000), batch texts against plan's texts_to_embed, wall time against the
#    job latency (the rest is overhead: planning, polls rounded up to the poll interval,
#    reading 3072-dimension results, scoring, outputs).
#
# Output: one `key value` line per figure on stdout (progress notes go to stderr).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
JOB_LATENCY_MS=3000
TEXTS_PER_JOB=5000

note() { echo "== $*" >&2; }
die() { echo "batch.sh: error: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 not found"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/puzzlegen-batch-bench.XXXXXX")
MOCK_PID=""
cleanup() {
  [ -n "$MOCK_PID" ] && { kill -TERM "$MOCK_PID" 2>/dev/null || true; wait "$MOCK_PID" 2>/dev/null || true; }
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# shellcheck source=bench/build_release.sh
. "$ROOT/bench/build_release.sh"

"$MOCK" --port 0 --dimension 3072 --seed 7 --batch-latency-ms "$JOB_LATENCY_MS" >"$TMP/mock.out" 2>"$TMP/mock.err" &
MOCK_PID=$!
MOCK_URL=""
for _ in $(seq 100); do
  MOCK_URL=$(sed -n 's/^listening on \(http:\/\/[^ ]*\)$/\1/p' "$TMP/mock.out" | head -n 1)
  [ -n "$MOCK_URL" ] && break
  sleep 0.1
done
[ -n "$MOCK_URL" ] || die "mock-gemini did not start"

D=$TMP/run
note "generating the workload (320 themes x 50 candidates)"
python3 bench/gen_workload.py "$D" --themes 320 >"$TMP/gen.out" || die "workload generation failed"
cat >"$D/params.yaml" <<EOF
puzzle_generation: {total_puzzle_count: 80, words_per_theme: 4, themes_per_puzzle: 4, random_seed: 42}
embedding: {provider: gemini, mode: batch}
gemini:
  model_id: gemini-embedding-001
  embedding_dimension: 3072
  api_key_env: GEMINI_API_KEY
  base_url: $MOCK_URL
batch: {max_texts_per_job: $TEXTS_PER_JOB, max_active_jobs: 4, poll_interval: 0.5}
paths: {themes: themes.json, candidates: candidates.json, outputs: out, cache: cache}
EOF
note "plan"
(cd "$D" && GEMINI_API_KEY=bench-key "$PUZZLEGEN" plan --config params.yaml --json >plan.json) || die "plan failed"
note "run in batch mode (job latency ${JOB_LATENCY_MS} ms)"
t0=$(date +%s.%N)
(cd "$D" && GEMINI_API_KEY=bench-key "$PUZZLEGEN" run --config params.yaml >out.log 2>err.log) \
  || { tail -n 20 "$D/err.log" >&2; die "run failed"; }
t1=$(date +%s.%N)
python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]+"/stats", timeout=10).read().decode())' "$MOCK_URL" >"$TMP/stats.json"
python3 - "$D/plan.json" "$TMP/stats.json" "$D/out/puzzle_metadata.json" "$t0" "$t1" "$JOB_LATENCY_MS" "$TEXTS_PER_JOB" <<'EOF'
import json, math, sys
plan, s, meta = (json.load(open(p)) for p in sys.argv[1:4])
t0, t1, latency_ms, per_job = float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
b, es = s["batch"], meta["embedding_stats"]
wall = t1 - t0
print("plan_texts_total", plan["texts_total"])
print("plan_texts_to_embed", plan["texts_to_embed"])
print("plan_batch_jobs", plan["batch_jobs"])
print("plan_requests_interactive", plan["requests"])
print("plan_tokens_estimate", plan["tokens_estimate"])
print("plan_cost_usd_interactive", f'{plan["cost_usd"]["interactive"]:.6f}')
print("plan_cost_usd_batch", f'{plan["cost_usd"]["batch"]:.6f}')
print("plan_seconds_estimate", plan["seconds_estimate"])
print("run_interactive_requests", s["requests"])
print("run_batch_jobs", b["jobs"])
print("run_expected_jobs_ceil_texts_over_per_job", math.ceil(b["texts"] / per_job))
print("run_batch_texts", b["texts"])
print("run_batch_duplicate_texts", b["duplicate_texts"])
print("run_batch_polls", b["polls"])
print("run_texts_by_job", ",".join(str(n) for n in b["texts_by_job"]))
print("run_cost_usd_estimate", f'{es["batch"]["cost_usd_estimate"]:.6f}')
print("plan_texts_equal_run_texts", plan["texts_to_embed"] == b["texts"])
print("job_latency_seconds", latency_ms / 1000)
print("wall_seconds", f"{wall:.2f}")
print("wall_over_job_latency", f"{wall / (latency_ms / 1000):.2f}")
EOF
