#!/usr/bin/env python3
"""Deterministic synthetic workload for bench/gemini_mock.sh (standard library only).

    python3 bench/gen_workload.py OUTDIR [--themes 320] [--own 35] [--shared 15]
                                         [--pool 1200] [--seed 42] [--full 320]

Writes OUTDIR/themes.json ({"themes": [...]}) and OUTDIR/candidates.json
({"candidates": {theme: {"words", "similarity_scores", "word_count"}}, "metadata": {}}).

Each theme gets `--own` words unique to it plus `--shared` words drawn (seeded) from a
common pool of `--pool` words. Words are pronounceable syllable combinations; all are
distinct, so own words never collide with the pool or with other themes. The full
workload (`--full` themes, 320 by default) is always generated and then cut to the first
`--themes` themes, so a smaller workload is an exact prefix of the full one.

Shared words are capitalised in every other theme, as real candidate lists spell one word
differently from theme to theme.

Prints `distinct_texts N` (theme names + distinct candidate words actually written),
`distinct_texts_ci N` (the same ignoring case and surrounding whitespace, after the
original's plural rule: what must be embedded) and `themes N` on stdout.
"""

import argparse
import json
import os
import random
import sys

FULL_THEMES = 320
ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
          "br", "dr", "kl", "pr", "st", "tr", "sh", "ch"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
CODAS = ["", "", "n", "r", "l", "s", "x"]


def word(rng):
    n = rng.choice((2, 3, 3, 4))
    w = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(n))
    return w + rng.choice(CODAS)


def distinct_words(rng, count):
    seen, out = set(), []
    while len(out) < count:
        w = word(rng)
        if w not in seen:
            seen.add(w)
            out.append(w)
    return out


def usable(words):
    """The keys (lower().strip()) of the candidates the original keeps: its plural rule."""
    kept = []
    seen = set()
    for w in words:
        low = w.lower().strip()
        if low in seen or (low.endswith("s") and len(low) > 1 and low[:-1] in seen) \
                or low + "s" in seen:
            continue
        seen.add(low)
        kept.append(low)
    return kept


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("outdir")
    ap.add_argument("--themes", type=int, default=FULL_THEMES)
    ap.add_argument("--own", type=int, default=35)
    ap.add_argument("--shared", type=int, default=15)
    ap.add_argument("--pool", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--full", type=int, default=FULL_THEMES)
    a = ap.parse_args()
    if not 1 <= a.themes <= a.full:
        sys.exit(f"gen_workload: --themes must be in 1..{a.full} (--full)")
    if a.shared > a.pool:
        sys.exit("gen_workload: --shared cannot exceed --pool")

    rng = random.Random(a.seed)
    all_words = distinct_words(rng, a.pool + a.full * a.own)
    pool, own = all_words[: a.pool], all_words[a.pool:]

    names = [f"Theme {i + 1:03d}" for i in range(a.full)]
    candidates = {}
    for i, name in enumerate(names):
        shared = rng.sample(pool, a.shared)
        if i % 2:
            # Real candidate lists spell a word differently from theme to theme
            # ("Mercury", "mercury"): the original's cache (and puzzlegen) embed it once.
            shared = [w.capitalize() for w in shared]
        words = own[i * a.own:(i + 1) * a.own] + shared
        rng.shuffle(words)
        scores = sorted((round(rng.uniform(0.2, 0.95), 4) for _ in words), reverse=True)
        candidates[name] = {"words": words, "similarity_scores": scores,
                            "word_count": len(words)}

    names = names[: a.themes]
    candidates = {n: candidates[n] for n in names}
    texts = set(names)
    texts_ci = {n.strip().lower() for n in names}
    for c in candidates.values():
        texts.update(c["words"])
        texts_ci.update(usable(c["words"]))

    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "themes.json"), "w") as f:
        json.dump({"themes": names}, f)
    with open(os.path.join(a.outdir, "candidates.json"), "w") as f:
        json.dump({"candidates": candidates,
                   "metadata": {"generator": "bench/gen_workload.py", "seed": a.seed,
                                "own_per_theme": a.own, "shared_per_theme": a.shared,
                                "pool": a.pool}}, f)
    print(f"distinct_texts {len(texts)}")
    print(f"distinct_texts_ci {len(texts_ci)}")
    print(f"themes {len(names)}")


if __name__ == "__main__":
    main()
