#!/usr/bin/env bash
# The review page at 200 puzzles: its size, and the time headless Chromium takes to render it
# (parse, style, layout and the page's own script: the `performance.now()` the page records
# after forcing a layout), against an empty page with the same recording script, in the same
# run. The outputs are made up (bench/review_page.sh writes final_puzzles.json,
# puzzle_metadata.json and embedding_analysis.json for PUZZLES puzzles with long theme names)
# and the page is built by `puzzlegen report`, as after a run.
#
# Usage: bench/review_page.sh   (env: PUZZLES=200, RUNS=5; needs chromium and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PUZZLES=${PUZZLES:-200}
RUNS=${RUNS:-5}
command -v chromium >/dev/null || { echo "chromium is missing: apt-get install -y chromium" >&2; exit 2; }
cargo build --quiet --bin puzzlegen
BIN=${CARGO_TARGET_DIR:-target}/debug/puzzlegen
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/out/reports"

python3 - "$WORK/out" "$PUZZLES" <<'PY'
import json, random, sys
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(14)
r6 = lambda x: round(x, 6)
puzzles = {}
for i in range(1, n + 1):
    themes = [f"Theme {i * 4 + t} of a long made-up name" for t in range(4)]
    words = [f"word{i}x{w}" for w in range(16)]
    sims = [r6(rng.uniform(0.2, 0.8)) for _ in words]
    margins = [r6(rng.uniform(-0.1, 0.3)) for _ in words]
    puzzles[f"puzzle_{i}"] = {
        "words": words, "theme_similarity_scores": sims, "themes": themes,
        "all_candidates": [], "all_similarities": sims,
        "quality": {"min_margin": min(margins), "word_margins": margins,
                    "group_coherence": [r6(rng.uniform(0.2, 0.6)) for _ in themes],
                    "theme_similarities": [[r6(rng.uniform(0, 0.8)) for _ in words] for _ in themes]},
    }
json.dump(puzzles, open(f"{out}/final_puzzles.json", "w"), indent=2)
meta = {"processing_time": 42.0, "failed_puzzles": [], "failed_themes": [],
        "embedding_stats": {"lookups": 20000, "cache_hits": 15000, "cache_hit_rate": 0.75,
                            "texts_embedded": 5000, "requests": 50},
        "puzzle_generation": {"ambiguity_margin": 0.05}}
json.dump(meta, open(f"{out}/puzzle_metadata.json", "w"), indent=2)
analysis = {"pipeline_info": {"gemini_model": "made-up", "embedding_dimension": 384}}
json.dump(analysis, open(f"{out}/reports/embedding_analysis.json", "w"), indent=2)
PY

"$BIN" report --quiet --out "$WORK/out"
PAGE="$WORK/out/reports/puzzles.html"
cat > "$WORK/empty.html" <<'HTML'
<!DOCTYPE html><html><head><meta charset="utf-8"><title>empty</title></head><body><p>empty</p>
<script>void document.body.offsetHeight;document.documentElement.dataset.renderMs=performance.now().toFixed(1);</script></body></html>
HTML

# The render time one load of $1 records (ms).
render_ms() {
    local profile
    profile=$(mktemp -d "$WORK/profile.XXXX")
    chromium --headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$profile" \
        --window-size=1200,2400 --dump-dom "file://$1" 2>/dev/null \
        | grep -o 'data-render-ms="[0-9.]*"' | head -1 | grep -o '[0-9.]*'
}

# The median of the numbers on stdin.
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }

page_times=(); empty_times=()
for _ in $(seq "$RUNS"); do
    empty_times+=("$(render_ms "$WORK/empty.html")")
    page_times+=("$(render_ms "$PAGE")")
done
page=$(printf '%s\n' "${page_times[@]}" | median)
empty=$(printf '%s\n' "${empty_times[@]}" | median)
echo "puzzles $PUZZLES"
echo "page_bytes $(stat -c %s "$PAGE")"
echo "page_render_ms_median $page (runs: ${page_times[*]})"
echo "empty_page_render_ms_median $empty (runs: ${empty_times[*]})"
awk -v p="$page" -v e="$empty" 'BEGIN {printf "page_over_empty_ms %.1f\nratio_page_to_empty %.2f\n", p - e, p / e}'
