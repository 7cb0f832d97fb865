//! Puzzle design measured on published puzzles: placement, difficulty and the blind solver on
//! the NYT Connections development set, for each local model.
//!
//! `cargo bench --bench design` (needs the models: `scripts/fetch-model.sh` and
//! `scripts/fetch-model.sh all-mpnet-base-v2`; `DESIGN_MODELS=all-MiniLM-L6-v2` for one).
//! Reads `../shared/eval/nyt_connections_dev.json` (or `DESIGN_EVAL`): it is never copied into
//! the repository. The set is split by date: the **fit** part (puzzles up to 2024-02-22, the
//! first 256) is where the difficulty weights and the assembly weights were chosen; the
//! **eval** part (2024-02-23 to 2024-06-30) is only reported on.
//!
//! Each puzzle is seen as a run sees it: every group name is a theme whose candidates are all
//! 16 words of its puzzle (in a shuffled, fixed group order: the file lists groups by level),
//! the assembly chooses 4 words per theme, and the design layer reads the assembled puzzle.
//! Printed per model and part:
//!
//! - `placement`: words the assembly puts in their own group, for weights 0/0, the defaults
//!   and a grid (the setting best on the fit part is then reported on the eval part);
//! - `difficulty`: colour exactly right (share of groups), Spearman between score and level
//!   over all groups, purple found (the hardest-scored group is purple), for the shipped score
//!   and for one feature alone (low similarity to the theme = harder) as the baseline;
//! - `solver`: intended groups the blind solver finds (mean of 4), puzzles it solves uniquely,
//!   the design layer's time per puzzle (solver and difficulty, one core), and the solver's
//!   time against the same search without bounds (every partition) on 10 puzzles.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use puzzlegen::assemble::{Puzzle, Weights, assemble};
use puzzlegen::design::solver::{self, Solution, SolveError};
use puzzlegen::design::{self, difficulty};
use puzzlegen::embed::Vector;
use puzzlegen::embed::local::LocalModel;
use puzzlegen::words::ThemeResult;
use serde::Deserialize;

#[path = "eval_common.rs"]
mod eval_common;

#[derive(Deserialize)]
struct NytPuzzle {
    date: String,
    groups: Vec<NytGroup>,
}

#[derive(Deserialize, Clone)]
struct NytGroup {
    level: u8,
    name: String,
    words: Vec<String>,
}

/// Last date of the fit part.
const FIT_UNTIL: &str = "2024-02-22";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load() -> Vec<NytPuzzle> {
    let path = std::env::var_os("DESIGN_EVAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/eval/nyt_connections_dev.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("cannot read {}: {e} (set DESIGN_EVAL)", path.display());
        std::process::exit(1)
    });
    let mut puzzles: Vec<NytPuzzle> = serde_json::from_str(&text).unwrap_or_else(|e| {
        eprintln!("{}: not the NYT evaluation set: {e}", path.display());
        std::process::exit(1)
    });
    // A fixed shuffle of each puzzle's groups (the file lists them by level, and equal scores
    // keep the themes' order).
    for (i, p) in puzzles.iter_mut().enumerate() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (i as u64 + 1);
        for k in (1..p.groups.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            p.groups.swap(k, (state % (k as u64 + 1)) as usize);
        }
    }
    puzzles
}

fn build(p: &NytPuzzle, vectors: &HashMap<String, Vector>, w: Weights) -> Puzzle {
    let t = eval_common::themes(
        p.groups.iter().map(|g| (&g.name, g.words.as_slice())),
        vectors,
    );
    let refs: Vec<&ThemeResult> = t.iter().collect();
    assemble(0, &refs, 4, w).expect("16 distinct words fill 4 x 4")
}

fn placed_right(p: &NytPuzzle, puzzle: &Puzzle) -> usize {
    puzzle
        .groups
        .iter()
        .zip(&p.groups)
        .map(|(g, truth)| {
            g.words
                .iter()
                .filter(|w| truth.words.contains(&w.word))
                .count()
        })
        .sum()
}

/// Ranks with ties averaged (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        for k in i..=j {
            r[order[k]] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

fn spearman(a: &[f64], b: &[f64]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ra.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = rb.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

/// Colour exactly right, Spearman, purple found, over puzzles scored by `score`.
fn difficulty_figures(truth: &[&NytPuzzle], scored: &[difficulty::Difficulty]) -> (f64, f64, f64) {
    let (mut exact, mut groups, mut purple) = (0usize, 0usize, 0usize);
    let (mut all_scores, mut all_levels) = (Vec::new(), Vec::new());
    for (p, d) in truth.iter().zip(scored) {
        for (g, (&level, &score)) in p.groups.iter().zip(d.levels.iter().zip(&d.scores)) {
            exact += usize::from(g.level == level);
            groups += 1;
            all_scores.push(score);
            all_levels.push(f64::from(g.level));
        }
        let hardest = (0..d.scores.len())
            .max_by(|&a, &b| d.scores[a].total_cmp(&d.scores[b]).then(b.cmp(&a)))
            .unwrap();
        purple += usize::from(p.groups[hardest].level == 3);
    }
    (
        exact as f64 / groups as f64,
        spearman(&all_scores, &all_levels),
        purple as f64 / truth.len() as f64,
    )
}

/// The one-feature baseline: low mean similarity of the chosen words to the theme = harder.
fn baseline(puzzle: &Puzzle) -> difficulty::Difficulty {
    let signals: Vec<difficulty::GroupSignals<'_>> = puzzle
        .groups
        .iter()
        .map(|g| difficulty::GroupSignals {
            theme: "",
            similarity: g.words.iter().map(|w| f64::from(w.similarity)).sum::<f64>()
                / g.words.len() as f64,
            coherence: 0.0,
        })
        .collect();
    // No cue (empty names) and no coherence spread: the score is the similarity term alone.
    difficulty::difficulty(&signals)
}

fn report_model(name: &str, puzzles: &[NytPuzzle]) {
    let dir = root().join("models").join(name);
    if !dir.join("model.safetensors").is_file() {
        eprintln!(
            "model {name} missing: run scripts/fetch-model.sh {name} (skipped)",
            name = name
        );
        return;
    }
    let start = Instant::now();
    let model = LocalModel::load(&dir).expect("model loads");
    let vectors = eval_common::embed_all(
        &model,
        puzzles
            .iter()
            .flat_map(|p| &p.groups)
            .flat_map(|g| std::iter::once(&g.name).chain(&g.words)),
    );
    eprintln!(
        "{name}: {} texts embedded in {:.1} s",
        vectors.len(),
        start.elapsed().as_secs_f64()
    );
    let fit: Vec<&NytPuzzle> = puzzles
        .iter()
        .filter(|p| p.date.as_str() <= FIT_UNTIL)
        .collect();
    let eval: Vec<&NytPuzzle> = puzzles
        .iter()
        .filter(|p| p.date.as_str() > FIT_UNTIL)
        .collect();
    let parts = [("fit", &fit), ("eval", &eval)];
    for (part, set) in parts {
        println!(
            "model {name} part {part} puzzles {} dates {}..{}",
            set.len(),
            set[0].date,
            set[set.len() - 1].date
        );
    }

    // Placement: none, defaults, and a grid chosen on the fit part.
    let placement = |set: &[&NytPuzzle], w: Weights| -> f64 {
        let right: usize = set
            .iter()
            .map(|p| placed_right(p, &build(p, &vectors, w)))
            .sum();
        right as f64 / (16 * set.len()) as f64
    };
    let mut best = (Weights::NONE, f64::MIN);
    for coherence in [0.0, 0.5, 1.0, 2.0, 4.0] {
        for ambiguity in [0.0, 1.0, 2.0, 4.0] {
            let w = Weights {
                coherence,
                ambiguity,
            };
            let p = placement(&fit, w);
            if p > best.1 + 1e-9 {
                best = (w, p);
            }
        }
    }
    for (label, w) in [
        ("none", Weights::NONE),
        ("defaults", Weights::DEFAULT),
        ("best-on-fit", best.0),
    ] {
        println!(
            "placement model={name} setting={label} coherence={} ambiguity={} fit {:.3} eval {:.3}",
            w.coherence,
            w.ambiguity,
            placement(&fit, w),
            placement(&eval, w)
        );
    }

    // Difficulty and the solver, on puzzles assembled with the defaults.
    for (part, set) in parts {
        let built: Vec<Puzzle> = set
            .iter()
            .map(|p| build(p, &vectors, Weights::DEFAULT))
            .collect();
        let t = Instant::now();
        let none = design::Goals {
            require_unique: false,
            red_herrings: 0,
            herring_margin: 0.05,
        };
        let designs: Vec<design::Design> = built.iter().map(|p| design::design(p, &none)).collect();
        let per_puzzle_ms = t.elapsed().as_secs_f64() * 1e3 / built.len() as f64;
        let shipped: Vec<_> = designs.iter().map(|d| d.difficulty.clone()).collect();
        let one: Vec<_> = built.iter().map(baseline).collect();
        for (label, scored) in [("score", &shipped), ("baseline-similarity", &one)] {
            let (exact, rho, purple) = difficulty_figures(set, scored);
            println!(
                "difficulty model={name} part={part} {label} colour_exact {exact:.3} spearman {rho:.3} purple_found {purple:.3}"
            );
        }
        // Baseline in the same run: every partition visited, on the first 10 puzzles.
        let some = &built[..10.min(built.len())];
        let timed = |f: fn(&[&[f32]], usize) -> Result<Solution, SolveError>| -> f64 {
            let t = Instant::now();
            for p in some {
                let v: Vec<&[f32]> = p
                    .groups
                    .iter()
                    .flat_map(|g| &g.words)
                    .map(|w| &w.vector[..])
                    .collect();
                std::hint::black_box(f(&v, 4).unwrap());
            }
            t.elapsed().as_secs_f64() * 1e3 / some.len() as f64
        };
        let (dynamic, exhaustive) = (timed(solver::solve), timed(solver::solve_exhaustive));
        println!(
            "solver_ms_per_puzzle model={name} part={part} dynamic {dynamic:.2} exhaustive {exhaustive:.2} speedup {:.1}",
            exhaustive / dynamic
        );
        let verdicts: Vec<_> = designs
            .iter()
            .filter_map(|d| d.solver.as_ref().ok())
            .collect();
        let found: usize = verdicts.iter().map(|v| v.groups_found).sum();
        let unique = verdicts.iter().filter(|v| v.unique).count();
        println!(
            "solver model={name} part={part} groups_found_mean {:.2} unique {:.3} design_ms_per_puzzle {per_puzzle_ms:.2}",
            found as f64 / verdicts.len() as f64,
            unique as f64 / verdicts.len() as f64
        );
    }
}

fn main() {
    let puzzles = load();
    let models = std::env::var("DESIGN_MODELS")
        .unwrap_or_else(|_| "all-MiniLM-L6-v2,all-mpnet-base-v2".into());
    for name in models.split(',').filter(|m| !m.is_empty()) {
        report_model(name, &puzzles);
    }
}
