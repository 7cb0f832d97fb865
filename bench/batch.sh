#!/usr/bin/env bash
# Batch mode against the repo's mock server, on the original's workload
# (bench/gen_workload.py: 320 themes x 50 candidates, 80 puzzles, 3072 dimensions), for each
# provider with a Batch API: gemini (gemini-embedding-001), openai (text-embedding-3-large):
#
#   bench/batch.sh
#
# Per provider, in a fresh copy of the workload (cold cache), the mock's counters reset:
# 1. `puzzlegen plan --json`: what it says the run will embed, and its estimates.
# 2. the run in batch mode (jobs of at most 5,000 texts, 4 at once, first poll after 0.5 s),
#    mock job latency 3 s: interactive requests (0 expected for gemini; 1 of 1 text for
#    openai, the request that learns the model's dimension), jobs against
#    ceil(texts / 5,000), batch texts against plan's texts_to_embed, wall time against the
#    job latency (the rest is overhead: planning, polls rounded up to the poll interval,
#    reading 3072-dimension results, scoring, outputs).
#
# Output: one `provider key value` line per figure on stdout (bench/batch_figures.py; progress
# notes go to stderr).
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


note "generating the workload (320 themes x 50 candidates)"
python3 bench/gen_workload.py "$TMP/workload" --themes 320 >"$TMP/gen.out" || die "workload generation failed"

# bench_provider NAME EMBEDDING_YAML: plan and run in a fresh copy of the workload.
bench_provider() {
  local name=$1 embedding=$2 D=$TMP/$1
  cp -r "$TMP/workload" "$D"
  printf '%s\n' \
    "puzzle_generation: {total_puzzle_count: 80, words_per_theme: 4, themes_per_puzzle: 4, random_seed: 42}" \
    "$embedding" \
    "batch: {max_texts_per_job: $TEXTS_PER_JOB, max_active_jobs: 4, poll_interval: 0.5}" \
    "paths: {themes: themes.json, candidates: candidates.json, outputs: out, cache: cache}" \
    >"$D/params.yaml"
  python3 -c 'import sys,urllib.request; urllib.request.urlopen(urllib.request.Request(sys.argv[1]+"/stats/reset", method="POST"), timeout=10).read()' "$MOCK_URL"
  note "$name: plan"
  (cd "$D" && BENCH_API_KEY=bench-key "$PUZZLEGEN" plan --config params.yaml --json >plan.json) || die "$name: plan failed"
  note "$name: run in batch mode (job latency ${JOB_LATENCY_MS} ms)"
  local t0 t1
  t0=$(date +%s.%N)
  (cd "$D" && BENCH_API_KEY=bench-key "$PUZZLEGEN" run --config params.yaml >out.log 2>err.log) \
    || { tail -n 20 "$D/err.log" >&2; die "$name: run failed"; }
  t1=$(date +%s.%N)
  python3 -c 'import sys,urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1]+"/stats", timeout=10).read().decode())' "$MOCK_URL" >"$D/stats.json"
  python3 bench/batch_figures.py "$name" "$D/plan.json" "$D/stats.json" "$D/out/puzzle_metadata.json" "$t0" "$t1" "$JOB_LATENCY_MS" "$TEXTS_PER_JOB"
}

bench_provider gemini "embedding: {provider: gemini, mode: batch}
gemini: {model_id: gemini-embedding-001, embedding_dimension: 3072, api_key_env: BENCH_API_KEY, base_url: '$MOCK_URL'}"
bench_provider openai "embedding:
  provider: openai
  mode: batch
  openai: {base_url: '$MOCK_URL/v1', model: text-embedding-3-large, api_key_env: BENCH_API_KEY}"
