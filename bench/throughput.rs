//! Local embedding throughput and the pipeline's own overhead.
//!
//! `cargo bench --bench throughput` (or `bench/run.sh`, which adds the sentence-transformers
//! baseline). Prints one `key value` line per figure; docs/PERFORMANCE.md records them.
//!
//! - texts/s at 32, 128 and 512 texts per call, on the CPU, of the model `BENCH_MODEL` names
//!   (a folder of `models/`: all-MiniLM-L6-v2 by default, or all-mpnet-base-v2), for two kinds
//!   of texts: single words (the example data's candidates) and short phrases (the distinct
//!   group names of the NYT evaluation set, read at bench time from `NYT_EVAL`, by default
//!   `../shared/eval/nyt_connections_dev.json`; skipped with a note when it is missing);
//! - for single words at 512 per call: several micro-batch sizes (texts per forward pass), and
//!   one core;
//! - the pipeline's overhead per theme (plan, dedupe, cosine, joint assembly, reports) with
//!   embeddings costing nothing (the fake provider), against the local model's time per theme.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use puzzlegen::config::{Config, Overrides};
use puzzlegen::embed::fake::FakeProvider;
use puzzlegen::embed::local::{LocalModel, LocalProvider};
use puzzlegen::input::Inputs;
use puzzlegen::pipeline;
use puzzlegen::progress::ProgressMode;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every distinct candidate word of the example data.
fn example_words() -> Vec<String> {
    let inputs = Inputs::load(
        &root().join("examples/selected_themes.json"),
        &root().join("examples/candidate_words.json"),
    )
    .expect("example data");
    let mut words: Vec<String> = inputs.candidates.values().flatten().cloned().collect();
    words.sort();
    words.dedup();
    words
}

/// The distinct group names of the NYT evaluation set (short phrases), if the file is there.
fn nyt_phrases() -> Option<Vec<String>> {
    let path = std::env::var_os("NYT_EVAL").map_or_else(
        || root().join("../shared/eval/nyt_connections_dev.json"),
        std::path::PathBuf::from,
    );
    let text = std::fs::read_to_string(&path)
        .map_err(|e| eprintln!("no phrases: {}: {e}", path.display()))
        .ok()?;
    let puzzles: serde_json::Value = serde_json::from_str(&text).expect("evaluation set");
    let mut names: Vec<String> = puzzles
        .as_array()?
        .iter()
        .flat_map(|p| p["groups"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    Some(names)
}

/// Runs `f` over `texts` in calls of `batch`, from the first call on and round again, until at
/// least `min` has passed; texts/s.
fn rate(texts: &[String], batch: usize, min: Duration, mut f: impl FnMut(&[String])) -> f64 {
    let start = Instant::now();
    let mut done = 0usize;
    for chunk in texts.chunks(batch).cycle() {
        f(chunk);
        done += chunk.len();
        if start.elapsed() >= min {
            break;
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    // SAFETY: first statement of main, before any thread is started; as the binary does.
    unsafe { puzzlegen::embed::local::prefer_per_core_batches() };
    let name = std::env::var("BENCH_MODEL").unwrap_or_else(|_| "all-MiniLM-L6-v2".into());
    let model_dir = root().join("models").join(&name);
    if !model_dir.join("model.safetensors").is_file() {
        eprintln!("the local model is missing: run scripts/fetch-model.sh {name} first");
        std::process::exit(1);
    }
    println!("model {name}");
    let words = example_words();
    println!("words {}", words.len());
    let phrases = nyt_phrases();
    if let Some(p) = &phrases {
        println!("phrases {}", p.len());
    }
    let seconds: f64 = std::env::var("BENCH_SECONDS").map_or(3.0, |s| s.parse().expect("seconds"));
    let min = Duration::from_secs_f64(seconds);

    let t = Instant::now();
    let model = LocalModel::load(&model_dir).expect("model loads");
    println!("model_load_seconds {:.3}", t.elapsed().as_secs_f64());
    // Warm-up: first calls allocate and fault in the weights.
    model.embed_blocking(&words[..64]).unwrap();

    let kinds = [("words", Some(&words)), ("phrases", phrases.as_ref())];
    for (kind, texts) in kinds {
        let Some(texts) = texts else { continue };
        for batch in [32, 128, 512] {
            let r = rate(texts, batch, min, |c| {
                model.embed_blocking(c).unwrap();
            });
            println!("local_texts_per_second texts={kind} batch={batch} {r:.0}");
        }
    }
    let mut model = model;
    for micro in [16, 32, 64, 128, 256] {
        model = model.with_micro_batch(micro);
        let r = rate(&words, 512, min, |c| {
            model.embed_blocking(c).unwrap();
        });
        println!("local_texts_per_second texts=words batch=512 micro_batch={micro} {r:.0}");
    }
    // One pool instead of one per core: what the per-core split buys.
    let model = model
        .with_micro_batch(puzzlegen::embed::local::MICRO_BATCH)
        .with_threads(1);
    let r = rate(&words, 512, min, |c| {
        model.embed_blocking(c).unwrap();
    });
    println!("local_texts_per_second texts=words batch=512 threads=1 {r:.0}");

    // Pipeline overhead on the example run, embeddings free vs. the local model.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let out = tempfile::tempdir().unwrap();
    let overrides = Overrides {
        themes: Some(root().join("examples/selected_themes.json")),
        candidates: Some(root().join("examples/candidate_words.json")),
        out: Some(out.path().to_owned()),
        model_dir: Some(model_dir.clone()),
        ..Overrides::default()
    };
    let mut config =
        Config::load(&root().join("examples/params.yaml"), &overrides).expect("example config");
    config.output.embedding_cache_file = out.path().join("cache.csv");
    let inputs = Inputs::load(&config.themes_file, &config.candidates_file).unwrap();
    let plan = pipeline::make_plan(&config, &inputs).unwrap();
    let themes = plan.distinct_themes().len() as f64;

    let run = |provider: Arc<dyn puzzlegen::embed::Provider>| {
        let t = Instant::now();
        let cache = puzzlegen::cache::Cache::in_memory(provider.space().clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let result = rt
            .block_on(pipeline::run_with(
                &config,
                inputs.clone(),
                plan.clone(),
                pipeline::Backend::alone(provider),
                cache,
                ProgressMode::Hidden,
                stop.clone(),
            ))
            .unwrap();
        pipeline::write_outputs(&config, result, &stop).unwrap();
        t.elapsed().as_secs_f64()
    };
    let dimension = model.space().dimension;
    let fake = (0..5)
        .map(|_| run(Arc::new(FakeProvider::new(dimension, 512))))
        .fold(f64::INFINITY, f64::min);
    let local = run(Arc::new(LocalProvider::load(&model_dir).unwrap()));
    println!("pipeline_themes {themes}");
    println!(
        "pipeline_ms_per_theme_fake_provider {:.3}",
        fake * 1e3 / themes
    );
    println!(
        "pipeline_ms_per_theme_local_model {:.3}",
        local * 1e3 / themes
    );
    println!("pipeline_overhead_share_of_local_run {:.3}", fake / local);
}
