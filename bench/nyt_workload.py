#!/usr/bin/env python3
"""An NYT-style workload for bench/run.sh's end-to-end run (standard library only).

    python3 bench/nyt_workload.py EVAL_JSON OUTDIR [--puzzles 200]

Reads the evaluation set at bench time (../shared/eval/nyt_connections_dev.json; never copied
into the repository) and writes OUTDIR/themes.json and OUTDIR/candidates.json as a run sees
it: every group name of the first `--puzzles` puzzles is a theme, and its candidates are all
16 words of its puzzle (a name that recurs keeps one theme with the words of all its
puzzles). Prints `nyt_puzzles N`, `nyt_themes N`, `nyt_distinct_texts N` (theme names and
words, as the cache keys them: lower-cased, stripped) and `nyt_phrases_file FILE` (the distinct
group names of the whole set, one a line: the short phrases of bench/throughput.rs).
"""

import argparse
import json
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("eval_json")
    ap.add_argument("outdir")
    ap.add_argument("--puzzles", type=int, default=200)
    a = ap.parse_args()
    puzzles = json.load(open(a.eval_json))
    chosen = puzzles[: a.puzzles]
    candidates = {}
    for p in chosen:
        words = [w for g in p["groups"] for w in g["words"]]
        for g in p["groups"]:
            have = candidates.setdefault(g["name"], [])
            have.extend(w for w in words if w not in have)
    texts = {t.lower().strip() for t in candidates}
    texts.update(w.lower().strip() for ws in candidates.values() for w in ws)
    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "themes.json"), "w") as f:
        json.dump({"themes": list(candidates)}, f)
    with open(os.path.join(a.outdir, "candidates.json"), "w") as f:
        json.dump({"candidates": {t: {"words": ws} for t, ws in candidates.items()},
                   "metadata": {"generator": "bench/nyt_workload.py", "puzzles": len(chosen)}}, f)
    print(f"nyt_puzzles {len(chosen)}")
    print(f"nyt_themes {len(candidates)}")
    print(f"nyt_distinct_texts {len(texts)}")


if __name__ == "__main__":
    main()
