//! Placement on the evaluation set: how many words the assembly puts in their true group, for
//! each setting of `puzzle_generation.coherence_weight` and `ambiguity_weight`.
//!
//! `cargo bench --bench placement` (needs the local model: `scripts/fetch-model.sh`). Reads
//! `bench/eval/connections.json` (or the file named by `PLACEMENT_EVAL`): puzzles of 4 named
//! groups of 4 words. Every group name becomes a theme whose candidates are all 16 words of
//! its puzzle, embedded with all-MiniLM-L6-v2; the assembly chooses 4 words per theme, each
//! word once. A word is right when it lands in the group it was written in; a puzzle is right
//! when all its words are.
//!
//! Prints a table: weights 0/0 (plain joint selection), a grid of weights, the setting best on
//! the first half of the puzzles (by words right; ties to the smaller weights) with its figures
//! on the second half, the same chosen on the second half (figures on the first), and the
//! shipped defaults. Then the assembly's time per puzzle (16 candidates x 4 themes, 384
//! dimensions) for weights 0/0, the defaults and each default weight alone, with the ratio of
//! the defaults to 0/0, measured in the same run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use puzzlegen::assemble::{Weights, select};
use puzzlegen::embed::Vector;
use puzzlegen::embed::local::LocalModel;
use puzzlegen::words::ThemeResult;
use serde::Deserialize;

#[path = "eval_common.rs"]
mod eval_common;

#[derive(Deserialize)]
struct EvalSet {
    puzzles: Vec<EvalPuzzle>,
}

#[derive(Deserialize)]
struct EvalPuzzle {
    id: usize,
    groups: Vec<EvalGroup>,
}

#[derive(Deserialize)]
struct EvalGroup {
    name: String,
    words: Vec<String>,
}

/// A puzzle ready for assembly: one theme per group, every word a candidate of every theme.
struct Case {
    themes: Vec<ThemeResult>,
    /// Each word's true group (index into `themes`).
    truth: HashMap<String, usize>,
}

/// Words right and puzzles fully right over a set of cases.
#[derive(Default, Clone, Copy)]
struct Score {
    words: usize,
    of_words: usize,
    puzzles: usize,
    of_puzzles: usize,
}

impl Score {
    fn cell(&self) -> String {
        format!(
            "{:>4}/{:<4} {:>5.1}%  {:>2}/{:<2}",
            self.words,
            self.of_words,
            100.0 * self.words as f64 / self.of_words.max(1) as f64,
            self.puzzles,
            self.of_puzzles
        )
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load_set() -> Vec<EvalPuzzle> {
    let path = std::env::var_os("PLACEMENT_EVAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("bench/eval/connections.json"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let set: EvalSet = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not an evaluation set: {e}", path.display()));
    set.puzzles
}

fn case(p: &EvalPuzzle, vectors: &HashMap<String, Vector>) -> Case {
    let themes = eval_common::themes(
        p.groups.iter().map(|g| (&g.name, g.words.as_slice())),
        vectors,
    );
    let truth = p
        .groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| g.words.iter().map(move |w| (w.clone(), i)))
        .collect();
    Case { themes, truth }
}

fn score(cases: &[Case], weights: Weights) -> Score {
    let mut s = Score::default();
    for c in cases {
        let refs: Vec<&ThemeResult> = c.themes.iter().collect();
        let groups = select(&refs, 4, weights).expect("16 distinct words fill 4 x 4");
        let right = groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| group.words.iter().map(move |w| (g, w)))
            .filter(|(g, w)| c.truth[&w.word] == *g)
            .count();
        s.words += right;
        s.of_words += c.truth.len();
        s.puzzles += usize::from(right == c.truth.len());
        s.of_puzzles += 1;
    }
    s
}

fn row(label: &str, cases: &[Case], half: usize, w: Weights) -> (Score, Score, Score) {
    let (all, first, second) = (
        score(cases, w),
        score(&cases[..half], w),
        score(&cases[half..], w),
    );
    println!(
        "{label:<9} {:>5} {:>5}  {}  {}  {}",
        w.coherence,
        w.ambiguity,
        all.cell(),
        first.cell(),
        second.cell()
    );
    (all, first, second)
}

/// Mean time of one puzzle's assembly with `weights`, over at least `min` of repeats.
fn time_per_puzzle(cases: &[Case], weights: Weights, min: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < min {
        for c in cases {
            let refs: Vec<&ThemeResult> = c.themes.iter().collect();
            std::hint::black_box(select(&refs, 4, weights).unwrap());
            n += 1;
        }
    }
    start.elapsed().as_secs_f64() / n as f64
}

fn main() {
    let model_dir = root().join("models/all-MiniLM-L6-v2");
    if !model_dir.join("model.safetensors").is_file() {
        eprintln!("the local model is missing: run scripts/fetch-model.sh first");
        std::process::exit(1);
    }
    let puzzles = load_set();
    let model = LocalModel::load(&model_dir).expect("model loads");
    eprintln!("embedding {} puzzles", puzzles.len());
    let vectors = eval_common::embed_all(
        &model,
        puzzles
            .iter()
            .flat_map(|p| &p.groups)
            .flat_map(|g| std::iter::once(&g.name).chain(&g.words)),
    );
    let cases: Vec<Case> = puzzles.iter().map(|p| case(p, &vectors)).collect();
    let half = cases.len() / 2;
    let ids = |r: &[EvalPuzzle]| format!("{}-{}", r[0].id, r[r.len() - 1].id);
    println!(
        "puzzles {} first_half {} second_half {}",
        cases.len(),
        ids(&puzzles[..half]),
        ids(&puzzles[half..])
    );
    println!(
        "{:<9} {:>5} {:>5}  {:<25}  {:<25}  {:<25}",
        "setting", "coh", "amb", "all: words right, puzzles", "first half", "second half"
    );
    row("none", &cases, half, Weights::NONE);
    // Best on each half (ties to the smaller weights, earlier in the grid).
    let mut best = [(Weights::NONE, 0usize); 2];
    for coherence in [0.0, 0.25, 0.5, 1.0, 2.0, 4.0] {
        for ambiguity in [0.0, 0.5, 1.0, 2.0, 4.0] {
            let w = Weights {
                coherence,
                ambiguity,
            };
            let (_, first, second) = row("grid", &cases, half, w);
            for (b, s) in best.iter_mut().zip([first, second]) {
                if s.words > b.1 {
                    *b = (w, s.words);
                }
            }
        }
    }
    row("best-1st", &cases, half, best[0].0);
    row("best-2nd", &cases, half, best[1].0);
    row("defaults", &cases, half, Weights::DEFAULT);

    let min = Duration::from_secs(2);
    let d = Weights::DEFAULT;
    let settings = [
        Weights::NONE,
        d,
        Weights {
            ambiguity: 0.0,
            ..d
        },
        Weights {
            coherence: 0.0,
            ..d
        },
    ];
    let mut times = Vec::new();
    for w in settings {
        let t = time_per_puzzle(&cases, w, min);
        println!(
            "assemble_us_per_puzzle coherence={} ambiguity={} {:.1}",
            w.coherence,
            w.ambiguity,
            t * 1e6
        );
        times.push(t);
    }
    println!(
        "assemble_time_ratio defaults/none {:.2}",
        times[1] / times[0]
    );
}
