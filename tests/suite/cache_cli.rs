//! `puzzlegen cache import|export|stats`, the first-run import, and damaged files: what a user
//! types and sees.

use std::path::Path;

use mock_gemini::{MockConfig, start_blocking};
use predicates::prelude::*;
use puzzlegen::cache::store::Store;
use puzzlegen::embed::Space;

use crate::common::{self, puzzlegen};

/// A mock server and a run directory with a workload of `themes` x 10 words for it; `extra`
/// YAML goes after the `gemini:` section's own lines.
fn gemini_job(
    themes: usize,
    puzzles: usize,
    extra: &str,
) -> (mock_gemini::BlockingMockServer, tempfile::TempDir) {
    let server = start_blocking(MockConfig::default()).unwrap();
    let dir = common::gemini_dir(&server.base_url(), themes, 10, puzzles, extra);
    (server, dir)
}

/// A new directory holding the file `name` with `contents`.
fn dir_with(name: &str, contents: impl AsRef<[u8]>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), contents).unwrap();
    dir
}

/// `puzzlegen run --config params.yaml` in `dir`, with `extra` arguments.
fn run(dir: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    puzzlegen(dir)
        .args(["run", "--config", "params.yaml"])
        .args(extra)
        .assert()
}

fn space3() -> Space {
    Space {
        model_id: "m".into(),
        dimension: 3,
        task_type: "SEMANTIC_SIMILARITY".into(),
    }
}

/// The stored vector of `text` (looked up by its key) in `db` (space `m`/3).
fn stored(db: &Path, text: &str) -> Option<Vec<f32>> {
    Store::open_existing(db)
        .unwrap()
        .get_many(&space3(), &[puzzlegen::cache::key(text)])
        .unwrap()[0]
        .as_ref()
        .map(|v| v.to_vec())
}

fn import(dir: &Path, file: &str) -> assert_cmd::assert::Assert {
    puzzlegen(dir)
        .args(["cache", "import", file, "--db", "c.sqlite3"])
        .args(["--model", "m", "--dimension", "3"])
        .assert()
}

#[test]
fn backup_layout_keeps_good_rows_and_names_the_lines_of_bad_ones() {
    let dir = dir_with(
        "backup.csv",
        "word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1,embedding_dim_2,embedding_dim_3\n\
         spoon,Cutlery,candidate,0.5,2025-01-01T00:00:00,0.1,0.2,0.3\n\
         \"New York, NY\",\"Cities, big\",candidate,0.25,1735689600.5,1,2,3\n\
         \"say \"\"cheese\"\"\",Photo,candidate,,,4,5,6\n\
         crème brûlée,Desserts 🍮,candidate,0.75,t,7,8,9\n\
         short,Cutlery,candidate,0.5,t,1,2\n\
         \"two\nlines\",X,candidate,0.5,t,1,1,1\n\
         bad number,Cutlery,candidate,0.5,t,1,x,3\n\
         ,Cutlery,candidate,0.5,t,1,2,3\n\
         fork,Cutlery,candidate,0.5,t,-1e-3,2.5E2,3\n",
    );
    import(dir.path(), "backup.csv")
        .code(1)
        .stderr(predicate::str::contains(
            "backup.csv: line 6: 7 fields, expected 8 (as in the header) (skipped)",
        ))
        .stderr(predicate::str::contains(
            "backup.csv: line 9: embedding_dim_2: expected a finite number, got \"x\"",
        ))
        .stderr(predicate::str::contains("backup.csv: line 10: empty word"))
        .stdout(predicate::str::contains(
            "9 row(s) read (cache backup layout",
        ))
        .stdout(predicate::str::contains(
            "6 added, 0 already in the cache, 3 skipped",
        ));
    let db = dir.path().join("c.sqlite3");
    assert_eq!(stored(&db, "spoon"), Some(vec![0.1, 0.2, 0.3]));
    assert_eq!(stored(&db, "New York, NY"), Some(vec![1.0, 2.0, 3.0]));
    assert_eq!(stored(&db, "say \"cheese\""), Some(vec![4.0, 5.0, 6.0]));
    assert_eq!(stored(&db, "crème brûlée"), Some(vec![7.0, 8.0, 9.0]));
    assert_eq!(
        stored(&db, "TWO\nlines "),
        Some(vec![1.0, 1.0, 1.0]),
        "key as the original's: lower case, trimmed, inner whitespace kept"
    );
    assert_eq!(stored(&db, "two lines"), None);
    assert_eq!(stored(&db, "fork"), Some(vec![-1e-3, 250.0, 3.0]));
    assert_eq!(stored(&db, "short"), None);

    // Metadata kept; importing again adds nothing and keeps the first vectors.
    let mut rows = Vec::new();
    Store::open_existing(&db)
        .unwrap()
        .for_each_row(&space3(), |r| {
            rows.push(r);
            Ok(())
        })
        .unwrap();
    let ny = rows.iter().find(|r| r.word == "New York, NY").unwrap();
    assert_eq!(ny.theme.as_deref(), Some("Cities, big"));
    assert_eq!(ny.timestamp.as_deref(), Some("1735689600.5"));
    assert_eq!(ny.similarity, Some(0.25));
    import(dir.path(), "backup.csv")
        .code(1)
        .stdout(predicate::str::contains("0 added, 6 already in the cache"));
}

#[test]
fn theme_layout_and_missing_optional_columns_are_read_by_header() {
    let dir = dir_with(
        "themes.csv",
        "theme,word,word_type,similarity_to_theme,rank,embedding_dim_1,embedding_dim_2,embedding_dim_3\n\
         Cutlery,Cutlery,theme,1.000000,0,0.5,0.5,0.5\n\
         Cutlery,spoon,candidate,0.900000,1,0.1,0.2,0.3\n\
         Kitchen,spoon,candidate,0.800000,1,0.9,0.9,0.9\n",
    );
    import(dir.path(), "themes.csv")
        .success()
        .stdout(predicate::str::contains("theme layout"))
        .stdout(predicate::str::contains(
            "2 added, 1 already in the cache, 0 skipped",
        ));
    let db = dir.path().join("c.sqlite3");
    assert_eq!(
        stored(&db, "spoon"),
        Some(vec![0.1, 0.2, 0.3]),
        "first row wins"
    );
    assert_eq!(stored(&db, "Cutlery"), Some(vec![0.5, 0.5, 0.5]));

    // Only the required columns, in another order, with a UTF-8 byte order mark.
    std::fs::write(
        dir.path().join("bare.csv"),
        "\u{feff}embedding_dim_3,word,embedding_dim_1,embedding_dim_2\n3,knife,1,2\n",
    )
    .unwrap();
    import(dir.path(), "bare.csv")
        .success()
        .stdout(predicate::str::contains("1 added"));
    assert_eq!(stored(&db, "knife"), Some(vec![1.0, 2.0, 3.0]));
}

#[test]
fn files_that_cannot_be_imported_are_named_and_nothing_is_created() {
    let dir = dir_with(
        "wide.csv",
        "word,embedding_dim_1,embedding_dim_2,embedding_dim_3,embedding_dim_4\nx,1,2,3,4\n",
    );
    import(dir.path(), "wide.csv")
        .code(2)
        .stderr(predicate::str::contains(
            "wide.csv: the header has embedding_dim_1..4 but the cache's dimension is 3",
        ));
    std::fs::write(dir.path().join("junk.csv"), [0u8, 159, 146, 150, 10, 1, 2]).unwrap();
    import(dir.path(), "junk.csv")
        .code(2)
        .stderr(predicate::str::contains("junk.csv: no `word` column"));
    import(dir.path(), "missing.csv")
        .code(2)
        .stderr(predicate::str::contains("missing.csv: cannot read"));
    assert!(!dir.path().join("c.sqlite3").exists());
    puzzlegen(dir.path())
        .args(["cache", "import", "wide.csv"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "give --model ID and --dimension N",
        ));
}

#[test]
fn export_writes_the_backup_layout_that_import_reads() {
    let dir = dir_with(
        "in.csv",
        "word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1,embedding_dim_2,embedding_dim_3\n\
         \"a, b\",T,candidate,0.5,1735689600.25,0.1,0.2,0.30000001\n\
         \" A, B \",X,candidate,0.5,1735689600.25,9,9,9\n\
         iso,Y,,,2025-01-02T03:04:05Z,1,2,3\n",
    );
    import(dir.path(), "in.csv")
        .success()
        .stdout(predicate::str::contains("2 added, 1 already in the cache"));
    puzzlegen(dir.path())
        .args(["cache", "export", "-o", "out.csv", "--db", "c.sqlite3"])
        .args(["--model", "m", "--dimension", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("out.csv: 2 embedding(s)"));
    // One row per key; times in UNIX seconds (the original reads them with float()).
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.csv")).unwrap(),
        "word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1,embedding_dim_2,embedding_dim_3\n\
         \"a, b\",T,candidate,0.5,1735689600.25,0.1,0.2,0.3\n\
         iso,Y,,,1735787045.000000,1,2,3\n"
    );
    puzzlegen(dir.path())
        .args(["cache", "stats", "--db", "c.sqlite3"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "entries:         2  m / 3 / SEMANTIC_SIMILARITY",
        ))
        .stdout(predicate::str::contains("last run: none recorded"));
}

/// A backup-layout CSV holding the mock's vectors for `texts` (768 dims).
fn python_cache_csv(texts: &[String]) -> String {
    let mut csv = String::from("word,theme,word_type,similarity_to_theme,timestamp");
    for d in 1..=768 {
        csv.push_str(&format!(",embedding_dim_{d}"));
    }
    csv.push('\n');
    for t in texts {
        let mut v = mock_gemini::vectors::gemini_embedding(t, 768);
        puzzlegen::embed::normalize(&mut v);
        csv.push_str(&format!("{t},,,,"));
        for x in v {
            csv.push_str(&format!(",{x}"));
        }
        csv.push('\n');
    }
    csv
}

#[test]
fn first_run_imports_the_python_cache_csv_and_pays_only_for_the_rest() {
    let (server, dir) = gemini_job(8, 2, "");
    // The Python pipeline had embedded the first two themes.
    let mut known = Vec::new();
    for t in 0..2 {
        known.push(format!("Theme {t:03}"));
        known.extend((0..10).map(|i| format!("word{t}x{i}")));
    }
    std::fs::create_dir_all(dir.path().join("cache")).unwrap();
    std::fs::write(
        dir.path().join("cache/all_embeddings.csv"),
        python_cache_csv(&known),
    )
    .unwrap();
    run(dir.path(), &[])
        .success()
        .stderr(predicate::str::contains(
            "first run with a cache database: imported 22 embedding(s) from cache/all_embeddings.csv",
        ));
    let s = server.stats();
    assert_eq!(s.distinct_texts_embedded, 88 - 22, "{s:?}");
    assert_eq!(s.duplicate_texts, 0);
    let db = dir.path().join("cache/embeddings.sqlite3");
    let bytes = std::fs::read(&db).unwrap();
    assert!(
        !bytes
            .windows(common::KEY.len())
            .any(|w| w == common::KEY.as_bytes()),
        "the API key is not stored"
    );
    puzzlegen(dir.path())
        .args(["cache", "stats", "--config", "params.yaml"])
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "entries:        88  gemini-embedding-001 / 768 / SEMANTIC_SIMILARITY",
        ))
        .stdout(predicate::str::contains(
            "22 of 88 texts from the cache (25.0% hit rate), 66 embedded",
        ));
}

#[test]
fn a_damaged_cache_database_stops_the_run_and_is_left_alone() {
    let (_server, dir) = gemini_job(4, 1, "");
    run(dir.path(), &["--quiet"]).success();
    let db = dir.path().join("cache/embeddings.sqlite3");
    let good = std::fs::read(&db).unwrap();
    assert!(good.len() > 8192, "{} bytes", good.len());

    // Cut in half (a copy that did not finish), then overwritten with junk.
    for (what, bytes) in [
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "not an SQLite database",
            b"this is not a database at all".repeat(10),
        ),
    ] {
        std::fs::write(&db, &bytes).unwrap();
        run(dir.path(), &["--quiet"])
            .code(2)
            .stderr(predicate::str::contains(
                "cache/embeddings.sqlite3: the cache database is damaged",
            ))
            .stderr(predicate::str::contains(what))
            .stderr(predicate::str::contains("panicked").not());
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "left as it was");
        puzzlegen(dir.path())
            .args(["cache", "stats", "--config", "params.yaml"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("damaged"));
    }
}

#[test]
fn a_damaged_journal_is_set_aside_and_the_run_goes_on_from_the_cache() {
    let (_server, dir) = gemini_job(4, 1, "");
    std::fs::create_dir_all(dir.path().join("out")).unwrap();
    std::fs::write(
        dir.path().join("out/run_journal.jsonl"),
        "\u{0}\u{1}garbage\n",
    )
    .unwrap();
    run(dir.path(), &[])
        .success()
        .stderr(predicate::str::contains(
            "run_journal.jsonl: line 1: expected",
        ))
        .stderr(predicate::str::contains("renamed to"))
        .stderr(predicate::str::contains("run_journal.jsonl.damaged-"));
    // What the renamed file holds is checked by the journal's unit test.
    assert!(dir.path().join("out/final_puzzles.json").is_file());
}

#[test]
fn every_run_leaves_the_cache_in_the_originals_backup_layout_csv() {
    let (_server, dir) = gemini_job(4, 1, "");
    run(dir.path(), &["--quiet"]).success();
    let csv = std::fs::read_to_string(dir.path().join("cache/all_embeddings.csv")).unwrap();
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("word,theme,word_type,similarity_to_theme,timestamp,embedding_dim_1,")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 44, "every text of the run");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("Theme 000,Theme 000,theme,,")),
        "a theme row has no similarity, as the original's"
    );
    assert!(rows.iter().all(|r| r.split(',').count() == 5 + 768));
}

#[test]
fn python_sqlite3_reads_the_cache_as_the_readme_says() {
    let dir = dir_with(
        "in.csv",
        "word,theme,embedding_dim_1,embedding_dim_2,embedding_dim_3\ncafé,Drinks,0.5,-0.25,1e-3\n",
    );
    import(dir.path(), "in.csv").success();
    // The README's recipe, without numpy: little-endian float32 blobs, looked up by
    // text.lower().strip(), the oldest row of the key.
    let script = "import sqlite3, struct, sys\n\
        db = sqlite3.connect(sys.argv[1])\n\
        for word, theme, dim, blob in db.execute('SELECT word, theme, dimension, vector FROM embeddings WHERE model_id = ? AND dimension = ? AND task_type = ? AND text_key = ? ORDER BY id LIMIT 1', ('m', 3, 'SEMANTIC_SIMILARITY', ' CAFÉ\\n'.lower().strip())):\n\
        \x20   print(word, theme, dim, list(struct.unpack('<%df' % dim, blob)))\n";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("c.sqlite3"))
        .output()
        .expect("python3 is needed for this test: apt-get install python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "café Drinks 3 [0.5, -0.25, 0.0010000000474974513]\n"
    );
}
