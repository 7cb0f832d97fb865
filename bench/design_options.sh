#!/usr/bin/env bash
# What puzzle_generation.require_unique and red_herrings cost on the example data (local
# model): puzzles made, puzzles the blind solver solves uniquely, red herrings planted, mean
# similarity of the chosen words to their themes, mean group coherence, mean of the puzzles'
# smallest margins, and wall time, for each setting side by side (the first line is the
# baseline: both off).
#
#   bench/design_options.sh        # builds the release binary; needs python3
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-model.sh >/dev/null
cargo build --release --quiet --bin puzzlegen
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release/puzzlegen")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%-36s %7s %7s %9s %9s %10s %11s %7s\n' setting puzzles unique herrings mean_sim coherence min_margin seconds
for extra in "" "require_unique: true" "red_herrings: 1" "red_herrings: 2" "require_unique: true, red_herrings: 2"; do
  dir="$work/run"; rm -rf "$dir"; mkdir -p "$dir"
  lines=$(printf '%s' "$extra" | tr ',' '\n' | sed 's/^ *//;s/^/  /')
  awk -v add="$lines" '{print} /^  random_seed:/ && add != "" {print add}' examples/params.yaml \
    | sed "s#models/all-MiniLM-L6-v2#$PWD/models/all-MiniLM-L6-v2#" > "$dir/params.yaml"
  start=$(date +%s.%N)
  (cd "$dir" && "$bin" run -q --config params.yaml --themes "$OLDPWD/examples/selected_themes.json" \
      --candidates "$OLDPWD/examples/candidate_words.json" --out out)
  end=$(date +%s.%N)
  python3 - "$dir/out" "${extra:-none}" "$start" "$end" <<'PY'
import json, sys
out, label, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
finals = json.load(open(f"{out}/final_puzzles.json"))
meta = json.load(open(f"{out}/puzzle_metadata.json"))
n = len(finals)
sims = [s for p in finals.values() for s in p["theme_similarity_scores"]]
print(f"{label:<36} {n:>3}/{n + len(meta['failed_puzzles']):<3} {meta['difficulty']['solver_unique']:>7} "
      f"{(meta.get('red_herrings') or {}).get('planted', 0):>9} {sum(sims) / len(sims):>9.4f} "
      f"{meta['quality']['group_coherence']['mean']:>9.4f} {meta['quality']['puzzle_min_margin']['mean']:>11.4f} "
      f"{end - start:>7.2f}")
PY
done
