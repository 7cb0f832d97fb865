//! The SQLite embedding cache: lookups, time to the first lookup, CSV import.
//!
//! `cargo bench --bench cache` (or `bench/cache.sh`, which adds the pandas baseline). Prints
//! one `key value` line per figure; docs/PERFORMANCE.md records them. 3072-dim vectors.
//!
//! - lookups/s from memory (`Cache::get_many` on keys already in memory) and from disk
//!   (`Store::get_many`, and a fresh `Cache` whose memory is empty), random order, batches of
//!   100, on a store of 10k entries;
//! - time to the first lookup (`Cache::open` + one `get_many` of one random existing key),
//!   median of 20 fresh opens, on stores of 10k and 100k entries (warm OS page cache);
//! - `csv::import` of a 10k-row backup-layout CSV into a fresh store, rows/s and MB/s, and
//!   the share of it spent in `Store::put` (the same rows, already parsed, stored alone).
//!
//! Environment: `CACHE_BENCH_DIR` (work directory, default a temporary one; the generated CSV
//! is kept there as `backup.csv` for the pandas baseline), `CACHE_BENCH_BIG_ROWS` (entries of
//! the large store, default 100000).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mock_gemini::vectors::SplitMix64;
use puzzlegen::cache::Cache;
use puzzlegen::cache::csv;
use puzzlegen::cache::store::{Row, Store};
use puzzlegen::embed::{Space, Vector};

const DIM: usize = 3072;
const SMALL: usize = 10_000;
const BATCH: usize = 100;
const OPENS: usize = 20;
const IMPORTS: usize = 3;

fn space() -> Space {
    Space {
        model_id: "gemini-embedding-001".into(),
        dimension: DIM,
        task_type: "SEMANTIC_SIMILARITY".into(),
    }
}

/// Reproducible randomness: the mock server's splitmix64.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(SplitMix64::new(seed))
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        self.0.next_f64()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }

    /// A unit-length vector, each value rounded to 7 significant digits (as the Python
    /// pipeline's CSVs hold them).
    fn vector(&mut self) -> Vector {
        let mut v: Vec<f64> = (0..DIM).map(|_| self.unit() * 2.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= norm);
        v.into_iter().map(|x| seven_digits(x) as f32).collect()
    }
}

fn seven_digits(x: f64) -> f64 {
    if x == 0.0 {
        return 0.0;
    }
    let scale = 10f64.powi(6 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// The text of entry `i`: mostly plain, some with commas, quotes, unicode.
fn word(i: usize) -> String {
    match i % 10 {
        3 => format!("New York, NY {i}"),
        5 => format!("the \"big\" apple {i}"),
        7 => format!("café crème {i}"),
        8 => format!("Zürich — 東京 {i}"),
        _ => format!("word{i}"),
    }
}

fn row(i: usize, rng: &mut Rng) -> Row {
    let word_type = if i.is_multiple_of(26) {
        "theme"
    } else {
        "candidate"
    };
    Row {
        key: word(i),
        word: word(i),
        theme: Some(format!("Theme, number {}", i % 97)),
        word_type: Some(word_type.into()),
        similarity: Some(seven_digits(rng.unit()) as f32),
        timestamp: Some("2025-01-02T03:04:05.123456".into()),
        vector: rng.vector(),
    }
}

/// A store of `n` entries, written with `Store::put` in chunks of 1000 rows.
fn build_store(path: &Path, n: usize, seed: u64) {
    let t = Instant::now();
    let mut rng = Rng::new(seed);
    let mut store = Store::open(path).expect("store opens");
    for start in (0..n).step_by(1000) {
        let rows: Vec<Row> = (start..(start + 1000).min(n))
            .map(|i| row(i, &mut rng))
            .collect();
        store.put(&space(), &rows, &[]).expect("rows stored");
    }
    drop(store);
    println!(
        "store_build_seconds entries={n} {:.1} ({} MB)",
        t.elapsed().as_secs_f64(),
        file_mb(path)
    );
}

fn file_mb(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) >> 20
}

/// Runs `f` over `keys` in batches of `BATCH` (passes over all of them) until at least
/// `min` has passed; lookups/s.
fn lookup_rate(keys: &[String], min: Duration, mut f: impl FnMut(&[String]) -> usize) -> f64 {
    let start = Instant::now();
    let mut found = 0usize;
    let mut done = 0usize;
    while start.elapsed() < min {
        for chunk in keys.chunks(BATCH) {
            found += f(chunk);
            done += chunk.len();
        }
    }
    assert_eq!(found, done, "every key is in the store");
    done as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `Cache::open` + one `get_many` of one random existing key, in seconds.
fn first_lookup(path: &Path, entries: usize, rng: &mut Rng) -> f64 {
    let key = word(rng.below(entries));
    let t = Instant::now();
    let cache = Cache::open(path, space()).expect("cache opens");
    let got = cache.get_many(std::slice::from_ref(&key));
    let secs = t.elapsed().as_secs_f64();
    assert!(got[0].is_some(), "{key} is in the store");
    drop(cache);
    secs
}

fn main() {
    let big: usize = std::env::var("CACHE_BENCH_BIG_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let keep = std::env::var_os("CACHE_BENCH_DIR").map(PathBuf::from);
    let tmp = match &keep {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let dir = tmp.path();
    println!("dimension {DIM}");

    // 1. Lookups on a store of 10k entries.
    let small = dir.join("small.sqlite3");
    build_store(&small, SMALL, 1);
    let mut rng = Rng::new(42);
    let mut keys: Vec<String> = (0..SMALL).map(word).collect();
    rng.shuffle(&mut keys);
    let min = Duration::from_secs(3);

    let store = Store::open(&small).expect("store opens");
    let disk = lookup_rate(&keys, min, |c| {
        let got = store.get_many(&space(), c).expect("lookup");
        got.iter().filter(|v| v.is_some()).count()
    });
    drop(store);
    println!("lookups_per_second_disk entries={SMALL} {disk:.0}");

    // The realistic miss path: a fresh cache (empty memory) per pass over all keys.
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < min {
        let cache = Cache::open(&small, space()).expect("cache opens");
        for chunk in keys.chunks(BATCH) {
            let got = cache.get_many(chunk);
            assert!(got.iter().all(Option::is_some));
            done += chunk.len();
        }
    }
    let via_cache = done as f64 / start.elapsed().as_secs_f64();
    println!("lookups_per_second_disk_via_cache entries={SMALL} {via_cache:.0}");

    let cache = Cache::open(&small, space()).expect("cache opens");
    cache.get_many(&keys); // every key now in memory
    rng.shuffle(&mut keys);
    let memory = lookup_rate(&keys, min, |c| {
        cache.get_many(c).iter().filter(|v| v.is_some()).count()
    });
    drop(cache);
    println!("lookups_per_second_memory entries={SMALL} {memory:.0}");
    println!("lookup_ratio_memory_over_disk {:.1}", memory / disk);

    // 2. Time to the first lookup, 10k against `big` entries; runs interleaved.
    let large = dir.join("large.sqlite3");
    build_store(&large, big, 2);
    first_lookup(&small, SMALL, &mut rng); // warm-up
    first_lookup(&large, big, &mut rng);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..OPENS {
        a.push(first_lookup(&small, SMALL, &mut rng));
        b.push(first_lookup(&large, big, &mut rng));
    }
    let (a, b) = (median(a) * 1e3, median(b) * 1e3);
    println!("first_lookup_ms entries={SMALL} {a:.3}");
    println!("first_lookup_ms entries={big} {b:.3}");
    println!("first_lookup_ratio_large_over_small {:.2}", b / a);
    std::fs::remove_file(&large).expect("large store removed");

    // 3. Import of a 10k-row backup CSV into a fresh store.
    let csv_path = keep.as_deref().unwrap_or(dir).join("backup.csv");
    let t = Instant::now();
    let mut rng = Rng::new(3);
    let rows: Vec<Row> = (0..SMALL).map(|i| row(i, &mut rng)).collect();
    csv::write_backup(&csv_path, DIM, rows.iter()).expect("CSV written");
    let bytes = std::fs::metadata(&csv_path).expect("CSV exists").len();
    println!(
        "csv_write_seconds rows={SMALL} {:.1} ({} MB)",
        t.elapsed().as_secs_f64(),
        bytes >> 20
    );
    // The SQLite share of an import: the same rows, already parsed, in the import's chunks.
    let mut times = Vec::new();
    for run in 0..IMPORTS {
        let path = dir.join(format!("put{run}.sqlite3"));
        let mut store = Store::open(&path).expect("store opens");
        let t = Instant::now();
        for chunk in rows.chunks(1024) {
            store.put(&space(), chunk, &[]).expect("rows stored");
        }
        times.push(t.elapsed().as_secs_f64());
        drop(store);
        std::fs::remove_file(&path).expect("store removed");
    }
    drop(rows);
    let put = median(times);
    println!("store_put_seconds rows={SMALL} {put:.3}");
    let mut times = Vec::new();
    for run in 0..IMPORTS {
        let path = dir.join(format!("import{run}.sqlite3"));
        let mut store = Store::open(&path).expect("store opens");
        let t = Instant::now();
        let report = csv::import(&csv_path, &mut store, &space()).expect("import");
        times.push(t.elapsed().as_secs_f64());
        assert_eq!((report.added, report.bad.len()), (SMALL as u64, 0));
        drop(store);
        std::fs::remove_file(&path).expect("store removed");
    }
    let secs = median(times);
    println!("import_seconds rows={SMALL} {secs:.3}");
    println!("import_share_store_put {:.2}", put / secs);
    println!("import_rows_per_second {:.0}", SMALL as f64 / secs);
    println!(
        "import_mb_per_second {:.0}",
        bytes as f64 / (1u64 << 20) as f64 / secs
    );
    if keep.is_some() {
        println!("csv_path {}", csv_path.display());
    } else {
        std::fs::remove_file(&csv_path).expect("CSV removed");
    }
}
