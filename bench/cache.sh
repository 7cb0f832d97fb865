#!/usr/bin/env bash
# Embedding cache benchmark (SQLite store, CSV import), with pandas.read_csv as the baseline
# for the import.
#
#   bench/cache.sh                  # Rust figures + pandas baseline + ratios
#   SKIP_PYTHON=1 bench/cache.sh
#   CACHE_BENCH_BIG_ROWS=20000 bench/cache.sh   # smaller "large" store if the disk is short
#
# Needs ~1.7 GB free in $TMPDIR (a 100k x 3072 store of ~1.2 GB, a ~350 MB CSV, small stores),
# all removed at the end. pandas lives in bench/.venv (installed on first use); if it cannot be
# installed the Rust figures are still printed, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

echo "== disk =="
df -h "$out" | tail -1 | awk '{print "tmp_free " $4 " (" $6 ")"}'

echo "== puzzlegen (SQLite cache) =="
CACHE_BENCH_DIR="$out" cargo bench --quiet --bench cache | tee "$out/rust"
csv_file="$out/backup.csv"

if [ -z "${SKIP_PYTHON:-}" ]; then
  echo "== pandas.read_csv =="
  if [ ! -x bench/.venv/bin/python ] || ! bench/.venv/bin/python -c 'import pandas' 2>/dev/null; then
    { [ -x bench/.venv/bin/python ] || python3 -m venv bench/.venv; } \
      && bench/.venv/bin/pip install -q --disable-pip-version-check pandas \
      || echo "baseline unavailable: pip could not install pandas (see above)"
  fi
  if bench/.venv/bin/python -c 'import pandas' 2>/dev/null; then
    bench/.venv/bin/python bench/pandas_import.py "$csv_file" | tee "$out/py"
    echo "== ratio (pandas read_csv seconds / puzzlegen import seconds, same file, same run) =="
    r=$(awk '$1=="import_seconds" {print $3}' "$out/rust")
    p=$(awk '$1=="pandas_read_csv_seconds" {print $2}' "$out/py")
    awk -v r="$r" -v p="$p" 'BEGIN{printf "import_ratio_pandas_over_puzzlegen %.2f\n", p/r}'
  fi
fi
