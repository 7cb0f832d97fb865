//! The review page (`output.review_page`, default `<paths.reports>/puzzles.html`): one
//! self-contained HTML file to judge a run's puzzles before publishing them.
//!
//! It shows each puzzle as a grid coloured by group with its theme names, every word's
//! similarity to its theme and its margin (own-theme similarity minus its best similarity to
//! another theme of the puzzle), words whose margin is below `puzzle_generation.
//! ambiguity_margin` flagged with a marker and the word "ambiguous"; a themes x words heat map
//! per puzzle in a `<details>`; histograms of the chosen words' similarities and of the
//! margins; the weakest puzzles; failed puzzles and themes with their reasons; and the run's
//! figures. Sort and filter controls are plain buttons and a labelled input.
//!
//! The page is built from the output files' JSON only ([`PageInput`]): a run builds it from the
//! shapes it writes, `puzzlegen report` from the files on disk, so both give the same page.
//! Everything is inline (CSS, script, SVG); a Content-Security-Policy allows nothing else, so
//! the page makes no request. The template is `templates/puzzles.html` (askama).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use askama::Template;
use serde::Deserialize;

use super::charts::{self, Histogram, Marker, heat_class};
use super::shapes::{EmbeddingAnalysis, FailedPuzzle, FailedTheme, FinalPuzzles, PuzzleMetadata};
use super::shown::{Shown, visible};
use crate::config::DEFAULT_AMBIGUITY_MARGIN;
use crate::fsx::{Abort, Staged, WriteError, read_limited, stage_until};

/// The page's style sheet and script, inlined (their hashes go into the CSP).
const STYLE: &str = include_str!("../../templates/puzzles.css");
const SCRIPT: &str = include_str!("../../templates/puzzles.js");

/// Largest output file read back by `puzzlegen report`.
const MAX_INPUT_BYTES: u64 = 1 << 30;

/// How many puzzles the "weakest" table lists.
const WEAKEST: usize = 10;

/// Most characters shown of a word or a puzzle key, of a theme name or model, and of a failure
/// reason; the rest is in the `title` (see [`Shown`]).
const WORD_CHARS: usize = 40;
const THEME_CHARS: usize = 100;
const REASON_CHARS: usize = 300;

/// Why the page could not be built from the output files.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(
        "{path}: cannot read: {source} (written by `puzzlegen run`; if the run wrote its files \
         elsewhere, give its params.yaml with --config)"
    )]
    Missing {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {limit} bytes; not a puzzlegen output")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path}: line {line}: {message} (expected the {what} a puzzlegen run writes)")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
        what: &'static str,
    },
    #[error("{path}: {key}: {message}")]
    Inconsistent {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("cannot render the review page: {0}")]
    Render(String),
}

/// One puzzle of `final_puzzles.json`, as far as the page reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct PuzzleView {
    pub words: Vec<String>,
    pub theme_similarity_scores: Vec<f64>,
    pub themes: Vec<String>,
    pub quality: QualityView,
    /// Absent from files of older runs: groups then keep their order and take colours by
    /// position, without a level.
    #[serde(default)]
    pub difficulty: Option<DifficultyView>,
    /// Absent from files of older runs.
    #[serde(default)]
    pub solver: Option<SolverView>,
    /// Present when the run asked for red herrings.
    #[serde(default)]
    pub red_herrings: Option<Vec<HerringView>>,
}

/// A red herring of `final_puzzles.json`, as far as the page reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct HerringView {
    pub word: String,
    pub decoy_for: String,
}

/// A puzzle's `solver`: the verdict, or why it was not computed.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SolverView {
    Solved {
        groups_found: usize,
        unique: bool,
        gap: f64,
    },
    NotComputed {
        not_computed: String,
    },
}

impl SolverView {
    /// One line for the page.
    fn line(&self, groups: usize) -> String {
        match self {
            SolverView::Solved {
                unique: true, gap, ..
            } => {
                format!("one solution (blind solver, gap {gap:.2})")
            }
            SolverView::Solved { groups_found, .. } => format!(
                "blind solver finds {groups_found} of {groups} groups: another split looks better"
            ),
            SolverView::NotComputed { not_computed } => {
                format!("blind solver not run: {not_computed}")
            }
        }
    }
}

/// A puzzle's `difficulty`: aligned with `themes`.
#[derive(Debug, Clone, Deserialize)]
pub struct DifficultyView {
    pub scores: Vec<f64>,
    pub levels: Vec<u8>,
}

/// A puzzle's `quality`.
#[derive(Debug, Clone, Deserialize)]
pub struct QualityView {
    pub min_margin: f64,
    pub word_margins: Vec<f64>,
    pub group_coherence: Vec<f64>,
    /// Absent from files of older runs: the page then has no heat map for the puzzle.
    #[serde(default)]
    pub theme_similarities: Vec<Vec<f64>>,
}

/// `final_puzzles.json` in file order: (`puzzle_<id>`, puzzle).
#[derive(Debug, Clone, Default)]
pub struct PuzzlesView(pub Vec<(String, PuzzleView)>);

impl<'de> Deserialize<'de> for PuzzlesView {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = PuzzlesView;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of puzzles (\"puzzle_1\": {...})")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut all = Vec::new();
                while let Some(entry) = m.next_entry::<String, PuzzleView>()? {
                    all.push(entry);
                }
                Ok(PuzzlesView(all))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// `puzzle_metadata.json`, as far as the page reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct MetadataView {
    pub processing_time: f64,
    pub failed_puzzles: Vec<FailedPuzzle>,
    #[serde(default)]
    pub failed_themes: Vec<FailedTheme>,
    #[serde(default)]
    pub embedding_stats: Option<StatsView>,
    #[serde(default)]
    pub puzzle_generation: Option<GenerationView>,
}

/// `embedding_stats` of the metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct StatsView {
    pub lookups: u64,
    pub cache_hits: u64,
    pub cache_hit_rate: f64,
    pub texts_embedded: u64,
    pub requests: u64,
}

/// `puzzle_generation` of the metadata.
#[derive(Debug, Clone, Deserialize)]
pub struct GenerationView {
    #[serde(default)]
    pub ambiguity_margin: Option<f64>,
}

/// `embedding_analysis.json`, as far as the page reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct AnalysisView {
    pub pipeline_info: PipelineView,
}

/// `pipeline_info` of the analysis.
#[derive(Debug, Clone, Deserialize)]
pub struct PipelineView {
    pub gemini_model: String,
    pub embedding_dimension: usize,
    #[serde(default)]
    pub provider: Option<String>,
}

/// Everything the page shows: the three output files and the ambiguity threshold.
#[derive(Debug, Clone)]
pub struct PageInput {
    pub puzzles: PuzzlesView,
    pub metadata: MetadataView,
    pub analysis: AnalysisView,
    /// Words whose margin is below this are flagged ambiguous.
    pub threshold: f64,
}

/// The three files `puzzlegen report` reads.
#[derive(Debug, Clone)]
pub struct PageSources {
    pub final_puzzles: PathBuf,
    pub metadata: PathBuf,
    pub analysis: PathBuf,
}

impl PageSources {
    /// The files of the run whose `puzzle_metadata.json` is in `dir` (its outputs folder), and
    /// where its page goes: where the run recorded them (`output_files`, relative to `dir`), or
    /// the layout of `run --out DIR` (`DIR/reports/...`) for a run that recorded none.
    pub fn in_outputs(dir: &Path) -> (PageSources, PathBuf) {
        #[derive(serde::Deserialize)]
        struct Recorded {
            output_files: Option<crate::report::shapes::OutputFiles>,
        }
        let metadata = dir.join("puzzle_metadata.json");
        let recorded = read_limited(&metadata, MAX_INPUT_BYTES)
            .ok()
            .and_then(|b| serde_json::from_slice::<Recorded>(&b).ok())
            .and_then(|r| r.output_files);
        match recorded {
            Some(f) => (
                PageSources {
                    final_puzzles: dir.join(f.final_puzzles),
                    metadata,
                    analysis: dir.join(f.analysis),
                },
                dir.join(f.review_page),
            ),
            None => (
                PageSources {
                    final_puzzles: dir.join("final_puzzles.json"),
                    metadata,
                    analysis: dir.join("reports").join("embedding_analysis.json"),
                },
                dir.join("reports").join("puzzles.html"),
            ),
        }
    }
}

impl PageInput {
    /// The page of a run, from the shapes it writes (read back as a reader of the files
    /// would). The threshold is the metadata's.
    pub fn from_shapes(
        puzzles: &FinalPuzzles,
        metadata: &PuzzleMetadata,
        analysis: &EmbeddingAnalysis,
    ) -> Result<PageInput, PageError> {
        let puzzles = through_json("final_puzzles.json", puzzles)?;
        let metadata = through_json("puzzle_metadata.json", metadata)?;
        let analysis = through_json("embedding_analysis.json", analysis)?;
        Ok(PageInput::with_threshold(puzzles, metadata, analysis, None))
    }

    /// The page rebuilt from the output files; `threshold` overrides the one the metadata
    /// recorded (else [`DEFAULT_AMBIGUITY_MARGIN`] for files of runs that recorded none).
    pub fn from_files(files: &PageSources, threshold: Option<f64>) -> Result<PageInput, PageError> {
        let puzzles: PuzzlesView = read_json(&files.final_puzzles, "final_puzzles.json")?;
        let metadata: MetadataView = read_json(&files.metadata, "puzzle_metadata.json")?;
        let analysis: AnalysisView = read_json(&files.analysis, "embedding_analysis.json")?;
        check_aligned(&files.final_puzzles, &puzzles)?;
        Ok(PageInput::with_threshold(
            puzzles, metadata, analysis, threshold,
        ))
    }

    fn with_threshold(
        puzzles: PuzzlesView,
        metadata: MetadataView,
        analysis: AnalysisView,
        threshold: Option<f64>,
    ) -> PageInput {
        let recorded = metadata
            .puzzle_generation
            .as_ref()
            .and_then(|g| g.ambiguity_margin);
        PageInput {
            threshold: threshold.or(recorded).unwrap_or(DEFAULT_AMBIGUITY_MARGIN),
            puzzles,
            metadata,
            analysis,
        }
    }
}

/// `value` as a reader of its file sees it: serialised, then read back as `T`.
fn through_json<T: serde::de::DeserializeOwned>(
    what: &str,
    value: &impl serde::Serialize,
) -> Result<T, PageError> {
    serde_json::to_value(value)
        .and_then(serde_json::from_value)
        .map_err(|e| PageError::Render(format!("{what}: {e}")))
}

fn read_json<T: serde::de::DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, PageError> {
    let bytes = read_limited(path, MAX_INPUT_BYTES).map_err(|e| match e {
        crate::fsx::LimitedReadError::Io(source) => PageError::Missing {
            path: path.to_owned(),
            source,
        },
        crate::fsx::LimitedReadError::TooLarge => PageError::TooLarge {
            path: path.to_owned(),
            limit: MAX_INPUT_BYTES,
        },
    })?;
    serde_json::from_slice(&bytes).map_err(|e| PageError::Malformed {
        path: path.to_owned(),
        line: e.line(),
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_owned(),
        what,
    })
}

/// Refuses a puzzle whose lists do not line up (each word needs its score and margin).
fn check_aligned(path: &Path, puzzles: &PuzzlesView) -> Result<(), PageError> {
    for (key, p) in &puzzles.0 {
        let n = p.words.len();
        let bad = |field: &str, len: usize| PageError::Inconsistent {
            path: path.to_owned(),
            key: format!("{key}.{field}"),
            message: format!("{len} value(s) for {n} word(s)"),
        };
        if p.theme_similarity_scores.len() != n {
            return Err(bad(
                "theme_similarity_scores",
                p.theme_similarity_scores.len(),
            ));
        }
        if p.quality.word_margins.len() != n {
            return Err(bad("quality.word_margins", p.quality.word_margins.len()));
        }
        if p.themes.is_empty() || n % p.themes.len() != 0 {
            return Err(PageError::Inconsistent {
                path: path.to_owned(),
                key: format!("{key}.themes"),
                message: format!(
                    "{} theme(s) cannot share {n} word(s) evenly",
                    p.themes.len()
                ),
            });
        }
    }
    Ok(())
}

/// One word of a grid.
struct WordCell {
    word: Shown,
    similarity: String,
    margin: String,
    ambiguous: bool,
    /// The theme a planted red herring pulls toward.
    herring: Option<Shown>,
}

/// One group of a grid: its theme, colour, difficulty, coherence and words.
struct GroupCard {
    theme: Shown,
    colour: usize,
    /// "yellow · difficulty 0.27" when the puzzle has difficulty figures.
    level: Option<String>,
    coherence: String,
    words: Vec<WordCell>,
}

/// One row of a heat map: a theme and its similarity to each word (value, colour class).
struct HeatRow {
    theme: Shown,
    colour: usize,
    cells: Vec<(String, &'static str)>,
}

/// One puzzle of the page.
struct PuzzleCard {
    key: Shown,
    /// The key as the card's `id` and the weakest table's links (plain visible text).
    anchor: String,
    id: String,
    min_margin: String,
    /// The minimum margin for sorting (full precision).
    sort_margin: String,
    /// Theme names as shown, lower case, for the filter.
    themes: String,
    groups: Vec<GroupCard>,
    /// The blind solver's verdict, when the file has one.
    solver: Option<String>,
    /// The other puzzles identical to this one (themes and words), shown here once.
    copies: Option<Shown>,
    flagged: usize,
    heat_words: Vec<Shown>,
    heat: Vec<HeatRow>,
}

/// A line of the "weakest puzzles" table.
struct WeakRow {
    key: Shown,
    anchor: String,
    min_margin: String,
    word: Shown,
}

/// A failed puzzle of the summary, with its themes and why.
struct FailedPuzzleLine {
    puzzle_id: usize,
    themes: Vec<Shown>,
    error: Shown,
}

/// A failed theme of the summary, and why.
struct FailedThemeLine {
    theme: Shown,
    error: Shown,
}

/// The page (`templates/puzzles.html`).
#[derive(Template)]
#[template(path = "puzzles.html")]
struct Page<'a> {
    csp: String,
    style: &'a str,
    script: &'a str,
    threshold: String,
    model: Shown,
    puzzles: Vec<PuzzleCard>,
    /// Puzzles in the file, copies included (`puzzles` holds each distinct one once).
    total: usize,
    flagged: usize,
    words: usize,
    weakest: Vec<WeakRow>,
    failed_puzzles: Vec<FailedPuzzleLine>,
    failed_themes: Vec<FailedThemeLine>,
    figures: Vec<(&'static str, String)>,
    similarity_chart: String,
    margin_chart: String,
}

/// The page as HTML text.
pub fn render(input: &PageInput) -> Result<String, PageError> {
    let distinct = distinct(&input.puzzles);
    let puzzles: Vec<PuzzleCard> = distinct.iter().map(|d| card(d, input.threshold)).collect();
    let page = Page {
        csp: csp(),
        style: STYLE,
        script: SCRIPT,
        threshold: format!("{:.3}", input.threshold),
        model: model_line(&input.analysis),
        total: input.puzzles.0.len(),
        flagged: puzzles.iter().map(|p| p.flagged).sum(),
        words: distinct.iter().map(|d| d.puzzle.words.len()).sum(),
        weakest: weakest(&distinct),
        failed_puzzles: input
            .metadata
            .failed_puzzles
            .iter()
            .map(failed_puzzle)
            .collect(),
        failed_themes: input
            .metadata
            .failed_themes
            .iter()
            .map(failed_theme)
            .collect(),
        figures: figures(input, distinct.len()),
        similarity_chart: similarity_chart(&input.puzzles),
        margin_chart: margin_chart(&input.puzzles, input.threshold),
        puzzles,
    };
    page.render().map_err(|e| PageError::Render(e.to_string()))
}

/// Stages the page at `path` (see [`stage_until`]).
pub fn stage_page(path: &Path, input: &PageInput, abort: Abort) -> Result<Staged, WriteError> {
    let html = render(input).map_err(|e| WriteError {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    })?;
    stage_until(path, abort, |w| w.write_all(html.as_bytes()))
}

/// The policy: nothing may be fetched; only this script and this style sheet may run.
fn csp() -> String {
    let hash = |s: &str| {
        use base64::Engine as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    };
    format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; img-src 'none'; \
         connect-src 'none'; base-uri 'none'; form-action 'none'",
        hash(SCRIPT),
        hash(STYLE)
    )
}

fn model_line(a: &AnalysisView) -> Shown {
    let p = &a.pipeline_info;
    let line = match &p.provider {
        Some(provider) => format!(
            "{} ({provider}, {} dimensions)",
            p.gemini_model, p.embedding_dimension
        ),
        None => format!("{} ({} dimensions)", p.gemini_model, p.embedding_dimension),
    };
    Shown::new(&line, THEME_CHARS)
}

fn failed_puzzle(f: &FailedPuzzle) -> FailedPuzzleLine {
    FailedPuzzleLine {
        puzzle_id: f.puzzle_id,
        themes: f
            .themes
            .iter()
            .map(|t| Shown::new(t, THEME_CHARS))
            .collect(),
        error: Shown::new(&f.error, REASON_CHARS),
    }
}

fn failed_theme(f: &FailedTheme) -> FailedThemeLine {
    FailedThemeLine {
        theme: Shown::new(&f.theme, THEME_CHARS),
        error: Shown::new(&f.error, REASON_CHARS),
    }
}

/// A puzzle of the page with the keys of the later puzzles identical to it.
struct Distinct<'a> {
    key: &'a str,
    puzzle: &'a PuzzleView,
    copies: Vec<&'a str>,
}

/// Each distinct puzzle (same themes, same words) once, in file order: a run with fewer themes
/// than slots makes the same puzzle again and again (the original's params: 80 puzzles, 8
/// distinct).
fn distinct(puzzles: &PuzzlesView) -> Vec<Distinct<'_>> {
    let mut first: HashMap<(&[String], &[String]), usize> = HashMap::new();
    let mut out: Vec<Distinct<'_>> = Vec::new();
    for (key, p) in &puzzles.0 {
        match first.entry((&p.themes[..], &p.words[..])) {
            Entry::Occupied(at) => out[*at.get()].copies.push(key),
            Entry::Vacant(slot) => {
                slot.insert(out.len());
                out.push(Distinct {
                    key,
                    puzzle: p,
                    copies: Vec::new(),
                });
            }
        }
    }
    out
}

/// How many copies' keys a card names before counting the rest.
const COPIES_NAMED: usize = 8;

/// "Also made as puzzle_9, puzzle_17 ... (10 in all)".
fn copies_line(copies: &[&str]) -> Option<Shown> {
    if copies.is_empty() {
        return None;
    }
    let mut line = format!(
        "Also made as {}",
        copies[..copies.len().min(COPIES_NAMED)].join(", ")
    );
    if copies.len() > COPIES_NAMED {
        line.push_str(&format!(" and {} more", copies.len() - COPIES_NAMED));
    }
    line.push_str(&format!(
        " ({} identical puzzles in all: the run had fewer themes than slots; shown once)",
        copies.len() + 1
    ));
    Some(Shown::new(&line, REASON_CHARS))
}

fn card(d: &Distinct<'_>, threshold: f64) -> PuzzleCard {
    let (key, p) = (d.key, d.puzzle);
    let per_group = p.words.len() / p.themes.len().max(1);
    // Groups from yellow to purple when the puzzle has levels (one per theme), else in order.
    let levels = p
        .difficulty
        .as_ref()
        .filter(|d| d.levels.len() == p.themes.len() && d.scores.len() == p.themes.len());
    let mut order: Vec<usize> = (0..p.themes.len()).collect();
    if let Some(d) = levels {
        order.sort_by_key(|&g| d.levels[g]);
    }
    let mut groups = Vec::with_capacity(p.themes.len());
    for g in order {
        let theme = &p.themes[g];
        let level = levels.map(|d| usize::from(d.levels[g].min(3)));
        let range = g * per_group..(g + 1) * per_group;
        let words = range
            .map(|i| WordCell {
                word: Shown::new(&p.words[i], WORD_CHARS),
                similarity: format!("{:.2}", p.theme_similarity_scores[i]),
                margin: format!("{:+.3}", p.quality.word_margins[i]),
                ambiguous: p.quality.word_margins[i] < threshold,
                herring: p
                    .red_herrings
                    .iter()
                    .flatten()
                    .find(|h| h.word == p.words[i])
                    .map(|h| Shown::new(&h.decoy_for, THEME_CHARS)),
            })
            .collect();
        groups.push(GroupCard {
            theme: Shown::new(theme, THEME_CHARS),
            colour: level.unwrap_or(g % 4),
            level: levels.zip(level).map(|(d, l)| {
                format!(
                    "{} \u{b7} difficulty {:.2}",
                    crate::design::COLOURS[l],
                    d.scores[g]
                )
            }),
            coherence: p
                .quality
                .group_coherence
                .get(g)
                .map_or_else(|| "-".into(), |c| format!("{c:.2}")),
            words,
        });
    }
    let heat = p
        .quality
        .theme_similarities
        .iter()
        .zip(&p.themes)
        .enumerate()
        .map(|(g, (row, theme))| HeatRow {
            theme: Shown::new(theme, THEME_CHARS),
            colour: levels.map_or(g % 4, |d| usize::from(d.levels[g].min(3))),
            cells: row
                .iter()
                .map(|s| (format!("{s:.2}"), heat_class(*s)))
                .collect(),
        })
        .collect();
    let themes: Vec<String> = p.themes.iter().map(|t| visible(t, THEME_CHARS)).collect();
    PuzzleCard {
        key: Shown::new(key, WORD_CHARS),
        anchor: visible(key, WORD_CHARS),
        id: visible(key.strip_prefix("puzzle_").unwrap_or(key), WORD_CHARS),
        min_margin: format!("{:+.3}", p.quality.min_margin),
        sort_margin: format!("{}", p.quality.min_margin),
        themes: themes.join(" | ").to_lowercase(),
        flagged: groups
            .iter()
            .flat_map(|g: &GroupCard| &g.words)
            .filter(|w| w.ambiguous)
            .count(),
        solver: p.solver.as_ref().map(|v| v.line(p.themes.len())),
        copies: copies_line(&d.copies),
        groups,
        heat_words: p.words.iter().map(|w| Shown::new(w, WORD_CHARS)).collect(),
        heat,
    }
}

/// The puzzles with the smallest minimum margin, weakest first, with their weakest word (each
/// distinct puzzle once).
fn weakest(puzzles: &[Distinct<'_>]) -> Vec<WeakRow> {
    let mut all: Vec<(&str, &PuzzleView)> = puzzles.iter().map(|d| (d.key, d.puzzle)).collect();
    all.sort_by(|a, b| a.1.quality.min_margin.total_cmp(&b.1.quality.min_margin));
    all.into_iter()
        .take(WEAKEST)
        .map(|(key, p)| {
            let worst = p
                .quality
                .word_margins
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map_or("", |(i, _)| &p.words[i]);
            WeakRow {
                key: Shown::new(key, WORD_CHARS),
                anchor: visible(key, WORD_CHARS),
                min_margin: format!("{:+.3}", p.quality.min_margin),
                word: Shown::new(worst, WORD_CHARS),
            }
        })
        .collect()
}

fn figures(input: &PageInput, distinct: usize) -> Vec<(&'static str, String)> {
    let m = &input.metadata;
    let total = input.puzzles.0.len();
    let mut rows = vec![
        (
            "Puzzles",
            if distinct == total {
                total.to_string()
            } else {
                format!("{total} ({distinct} distinct)")
            },
        ),
        ("Failed puzzles", m.failed_puzzles.len().to_string()),
        ("Failed themes", m.failed_themes.len().to_string()),
        ("Wall time", format!("{:.2} s", m.processing_time)),
    ];
    if let Some(s) = &m.embedding_stats {
        rows.push(("Embedding requests", s.requests.to_string()));
        rows.push(("Texts embedded", s.texts_embedded.to_string()));
        rows.push((
            "Cache hit rate",
            format!(
                "{:.1} % ({} of {} lookups)",
                s.cache_hit_rate * 100.0,
                s.cache_hits,
                s.lookups
            ),
        ));
    }
    rows
}

fn similarity_chart(puzzles: &PuzzlesView) -> String {
    let values: Vec<f64> = puzzles
        .0
        .iter()
        .flat_map(|(_, p)| p.theme_similarity_scores.iter().copied())
        .collect();
    charts::histogram(&Histogram {
        title: "Chosen words: similarity to their theme",
        x_label: "similarity to own theme",
        values: &values,
        bins: 24,
        marker: None,
    })
}

fn margin_chart(puzzles: &PuzzlesView, threshold: f64) -> String {
    let values: Vec<f64> = puzzles
        .0
        .iter()
        .flat_map(|(_, p)| p.quality.word_margins.iter().copied())
        .collect();
    let mut label = String::new();
    let _ = write!(label, "ambiguous below {threshold:.3}");
    charts::histogram(&Histogram {
        title: "Chosen words: margin to the nearest other theme",
        x_label: "margin (own-theme minus best other-theme similarity)",
        values: &values,
        bins: 24,
        marker: Some(Marker {
            at: threshold,
            label: &label,
        }),
    })
}

/// A made-up run of `n` puzzles with long theme names, for the page's size test and bench:
/// no embedding involved, numbers from a fixed pseudo-random sequence.
pub fn sample(n: usize) -> PageInput {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 10_000) as f64 / 10_000.0
    };
    let puzzles = (1..=n)
        .map(|id| {
            let themes: Vec<String> = (0..4)
                .map(|t| format!("Theme number {} of the sample run", id * 4 + t))
                .collect();
            let words: Vec<String> = (0..16).map(|w| format!("sampleword{id}x{w}")).collect();
            let sims: Vec<f64> = (0..16).map(|_| 0.2 + 0.6 * next()).collect();
            let margins: Vec<f64> = (0..16).map(|_| -0.1 + 0.4 * next()).collect();
            let matrix = (0..4)
                .map(|_| (0..16).map(|_| round(next())).collect())
                .collect();
            let quality = QualityView {
                min_margin: margins.iter().copied().fold(f64::INFINITY, f64::min),
                word_margins: margins.iter().copied().map(round).collect(),
                group_coherence: (0..4).map(|_| round(next())).collect(),
                theme_similarities: matrix,
            };
            let p = PuzzleView {
                words,
                theme_similarity_scores: sims.into_iter().map(round).collect(),
                themes,
                quality,
                difficulty: Some(DifficultyView {
                    scores: (0..4).map(|_| round(next())).collect(),
                    levels: vec![2, 0, 3, 1],
                }),
                solver: None,
                red_herrings: None,
            };
            (super::shapes::puzzle_key(id), p)
        })
        .collect();
    PageInput {
        puzzles: PuzzlesView(puzzles),
        metadata: MetadataView {
            processing_time: 12.5,
            failed_puzzles: Vec::new(),
            failed_themes: Vec::new(),
            embedding_stats: None,
            puzzle_generation: None,
        },
        analysis: AnalysisView {
            pipeline_info: PipelineView {
                gemini_model: "sample".into(),
                embedding_dimension: 384,
                provider: None,
            },
        },
        threshold: DEFAULT_AMBIGUITY_MARGIN,
    }
}

fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_hundred_puzzles_stay_under_two_megabytes() {
        let html = render(&sample(200)).unwrap();
        assert_eq!(html.matches("<section class=\"puzzle\"").count(), 200);
        assert!(
            html.len() < 2 << 20,
            "the page for 200 puzzles is {} bytes",
            html.len()
        );
    }

    #[test]
    fn words_below_the_threshold_are_flagged_in_text() {
        let mut input = sample(1);
        let margins = &mut input.puzzles.0[0].1.quality.word_margins;
        margins.iter_mut().for_each(|m| *m = 0.3);
        margins[5] = 0.01;
        margins[9] = -0.2;
        let html = render(&input).unwrap();
        let flagged: Vec<&str> = html.split("<li class=\"word amb\"><b>").skip(1).collect();
        assert_eq!(flagged.len(), 2, "{html}");
        assert!(flagged[0].starts_with("sampleword1x5<"), "{}", flagged[0]);
        assert!(flagged[1].starts_with("sampleword1x9<"), "{}", flagged[1]);
        // Two words, and the legend in the header.
        assert_eq!(html.matches("<span class=\"flag\">").count(), 3);
    }

    #[test]
    fn theme_names_are_escaped_and_the_policy_hashes_the_inline_code() {
        let mut input = sample(1);
        input.puzzles.0[0].1.themes[0] = "<script>alert(1)</script>".into();
        let html = render(&input).unwrap();
        assert!(!html.contains("<script>alert"), "unescaped theme name");
        assert!(html.contains("default-src 'none'"));
        assert_eq!(html.matches("<script").count(), 1);
    }

    #[test]
    fn malformed_files_are_named_with_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("final_puzzles.json");
        std::fs::write(&bad, "{\n  \"puzzle_1\": {\"words\": 3}\n}\n").unwrap();
        let sources = PageSources {
            final_puzzles: bad.clone(),
            metadata: dir.path().join("puzzle_metadata.json"),
            analysis: dir.path().join("embedding_analysis.json"),
        };
        let e = PageInput::from_files(&sources, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{}: line 2: invalid type", bad.display())),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        std::fs::remove_file(&bad).unwrap();
        let e = PageInput::from_files(&sources, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read") && e.contains("puzzlegen run"),
            "{e}"
        );
    }
}
