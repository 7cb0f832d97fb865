#!/usr/bin/env bash
# Peak memory against the number of themes: a local-model run (all-MiniLM-L6-v2, offline) on
# 320 themes and on 3,200 themes, each theme used once (total_puzzle_count = themes / 4), and
# the ratio of the two peaks. A run's memory should not grow with its number of themes: the
# vectors live in the cache database, not in the process (issue 13, item 6).
#
#   bench/memory.sh            # both runs (~4 min on 2 cores; the 3,200-theme run embeds
#                              # 116,399 texts)
#   THEMES="320 1600" bench/memory.sh
#
# Workload: bench/gen_workload.py (50 candidates per theme: 35 own, 15 from a shared pool of
# 1,200), the 320-theme one an exact prefix of the 3,200-theme one. Each run starts from an
# empty cache. Output: one `key value` line per figure on stdout (notes on stderr).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
THEMES=${THEMES:-"320 3200"}

note() { echo "== $*" >&2; }
die() { echo "memory.sh: error: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 not found (needed for the workload generator)"
[ -x /usr/bin/time ] && /usr/bin/time -f '%M' true >/dev/null 2>&1 \
  || die "GNU time not found: apt-get install -y time"
scripts/fetch-model.sh >&2

note "building the release binary"
cargo build --release --bin puzzlegen >&2
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN=$TARGET_DIR/release/puzzlegen

TMP=$(mktemp -d "${TMPDIR:-/tmp}/puzzlegen-memory.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
LARGEST=$(printf '%s\n' $THEMES | sort -n | tail -1)

first=""
for n in $THEMES; do
  dir=$TMP/run$n
  mkdir -p "$dir"
  python3 bench/gen_workload.py "$dir/in" --themes "$n" --full "$LARGEST" >/dev/null
  cat >"$dir/params.yaml" <<EOF
puzzle_generation:
  total_puzzle_count: $((n / 4))
  words_per_theme: 4
  themes_per_puzzle: 4
embedding:
  provider: local
  local:
    model_dir: $ROOT/models/all-MiniLM-L6-v2
paths:
  themes: in/themes.json
  candidates: in/candidates.json
  outputs: out
  cache: cache
EOF
  note "run: $n themes"
  (cd "$dir" && /usr/bin/time -o time.txt -f '%M %e' "$BIN" --quiet run \
    --config params.yaml >run.log 2>&1) || { cat "$dir/run.log" >&2; die "the $n-theme run failed"; }
  read -r rss_kb wall <"$dir/time.txt"
  puzzles=$(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" \
    "$dir/out/final_puzzles.json")
  echo "themes_${n}_puzzles $puzzles"
  echo "themes_${n}_peak_rss_mb $((rss_kb / 1024))"
  echo "themes_${n}_wall_s $wall"
  if [ -z "$first" ]; then
    first=$n
    first_kb=$rss_kb
  else
    python3 -c "print('peak_rss_ratio_${n}_to_${first} %.2f' % ($rss_kb / $first_kb))"
  fi
done
