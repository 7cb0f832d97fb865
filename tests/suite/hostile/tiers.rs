//! Hostile cases: what a run reads back from a tier (the SQLite cache, the shared Redis tier,
//! the run journal) is checked as an API answer is. A vector that cannot be used (not finite,
//! absurd) is counted, named with its source, and its text embedded again; a journal entry that
//! does not check out is recomputed. Either way the puzzles are those of a clean run.

use std::path::Path;

use super::cache::{db, mock, workspace};
use crate::common::{self, Finished, RedisServer};

/// `puzzlegen run` in `dir`, to the end.
fn run(dir: &Path) -> Finished {
    common::finish(common::puzzlegen(dir).args(["run", "--config", "params.yaml"]))
}

fn run_ok(dir: &Path) -> Finished {
    let f = run(dir);
    assert_eq!(f.code, 0, "{}", f.all());
    assert!(!f.stderr.contains("panicked"), "{}", f.all());
    f
}

fn read(dir: &Path, file: &str) -> serde_json::Value {
    common::read_json(&dir.join("out").join(file))
}

/// The first word of puzzle 1: a word the puzzles depend on.
fn a_chosen_word(dir: &Path) -> String {
    read(dir, "final_puzzles.json")["puzzle_1"]["words"][0]
        .as_str()
        .unwrap()
        .to_owned()
}

fn bad_cached_vectors(dir: &Path) -> u64 {
    read(dir, "puzzle_metadata.json")["embedding_stats"]["bad_cached_vectors"]
        .as_u64()
        .expect("embedding_stats.bad_cached_vectors")
}

/// Replaces the stored vector of `word` in the cache database of `dir` with `values`.
fn poison(dir: &Path, word: &str, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let changed = rusqlite::Connection::open(db(dir))
        .unwrap()
        .execute(
            "UPDATE embeddings SET vector = ?1 WHERE text_key = ?2",
            rusqlite::params![bytes, puzzlegen::cache::key(word)],
        )
        .unwrap();
    assert_eq!(changed, 1, "{word} is not in the cache");
}

/// The stored vector of `word` in the cache database of `dir`: every value finite.
fn assert_stored_finite(dir: &Path, word: &str) {
    let blob: Vec<u8> = rusqlite::Connection::open(db(dir))
        .unwrap()
        .query_row(
            "SELECT vector FROM embeddings WHERE text_key = ?1",
            [puzzlegen::cache::key(word)],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        blob.chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]).abs() <= 1.0),
        "{word}: the unusable vector is still stored"
    );
}

/// A run in `dir` to the end, then a rerun whose cache CSV cannot be written (a file size limit
/// of 200 KiB: the journal fits, the CSV of 36 vectors of 768 values does not): the rerun
/// fails after every theme is done and keeps its journal. Returns the first run's puzzles.
fn run_keeping_a_journal(dir: &Path) -> serde_json::Value {
    run_ok(dir);
    let clean = read(dir, "final_puzzles.json");
    let limited = "ulimit -f 400; exec \"$0\" run --config params.yaml";
    let out = common::wrapped(dir, &["sh", "-c", limited])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        dir.join("out/run_journal.jsonl").is_file(),
        "no journal kept:\n{stderr}"
    );
    clean
}

/// Removes the outputs and the journal of `dir`: the next run starts from the cache alone.
fn clear_outputs(dir: &Path) {
    std::fs::remove_dir_all(dir.join("out")).unwrap();
}

/// `puzzles: N ok` of the summary.
fn puzzles_ok(f: &Finished) -> usize {
    f.stdout
        .lines()
        .find_map(|l| l.strip_prefix("puzzles: ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no puzzles line:\n{}", f.all()))
}

#[test]
fn an_infinite_value_in_the_sqlite_cache_is_not_used_and_its_text_is_embedded_again() {
    let server = mock();
    let dir = workspace(&server.base_url());
    run_ok(dir.path());
    let clean = read(dir.path(), "final_puzzles.json");
    assert_eq!(bad_cached_vectors(dir.path()), 0);
    let word = a_chosen_word(dir.path());
    let mut values = vec![0.01f32; 768];
    values[3] = f32::INFINITY;
    poison(dir.path(), &word, &values);
    clear_outputs(dir.path());
    let paid = server.stats().texts_embedded;

    let f = run_ok(dir.path());
    assert_eq!(read(dir.path(), "final_puzzles.json"), clean, "{}", f.all());
    assert_eq!(bad_cached_vectors(dir.path()), 1, "{}", f.all());
    let line = rejection(&f, &word);
    assert!(
        line.contains("cache/embeddings.sqlite3") && line.contains("embedding_dim_4 is inf"),
        "{line}"
    );
    assert_eq!(server.stats().texts_embedded - paid, 1, "{}", f.all());
    assert_stored_finite(dir.path(), &word);
}

#[test]
fn an_infinite_value_under_a_journal_is_not_used_and_the_run_writes_its_outputs() {
    let server = mock();
    let dir = workspace(&server.base_url());
    let clean = run_keeping_a_journal(dir.path());
    let word = {
        // The words of the first theme, best first, as journalled.
        let journal = std::fs::read_to_string(dir.path().join("out/run_journal.jsonl")).unwrap();
        let entry: serde_json::Value =
            serde_json::from_str(journal.lines().nth(1).unwrap()).unwrap();
        entry["ranked"][0][0].as_str().unwrap().to_owned()
    };
    poison(dir.path(), &word, &vec![f32::NAN; 768]);

    let f = run_ok(dir.path());
    assert_eq!(bad_cached_vectors(dir.path()), 1, "{}", f.all());
    assert!(
        rejection(&f, &word).contains("cache/embeddings.sqlite3"),
        "{}",
        f.all()
    );
    assert_stored_finite(dir.path(), &word);
    assert_eq!(read(dir.path(), "final_puzzles.json"), clean);
}

/// The one line of `f` saying that a vector of `word` cannot be used.
fn rejection(f: &Finished, word: &str) -> String {
    let key = format!("{:?}", puzzlegen::cache::key(word));
    let lines: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| l.contains("cannot be used"))
        .collect();
    assert!(
        lines.len() == 1 && lines[0].contains(&key),
        "not said once:\n{}",
        f.all()
    );
    lines[0].to_owned()
}

/// `EVAL script 1 key args...` on `redis`; the raw answer.
fn eval(redis: &RedisServer, script: &str, key: &str, args: &[&str]) -> String {
    redis.command(&[&["EVAL", script, "1", key], args].concat())
}

#[test]
fn an_absurd_vector_in_the_shared_redis_tier_is_not_used_nor_copied() {
    let redis = RedisServer::start();
    let server = mock();
    let with_redis = |dir: &Path| {
        let params = dir.join("params.yaml");
        let yaml = std::fs::read_to_string(&params).unwrap();
        let yaml = format!("{yaml}distributed:\n  redis_url: {}\n", redis.url());
        std::fs::write(&params, yaml).unwrap();
    };
    let first = workspace(&server.base_url());
    with_redis(first.path());
    run_ok(first.path());
    let clean = read(first.path(), "final_puzzles.json");
    let word = a_chosen_word(first.path());
    let key = puzzlegen::cache::key(&word);
    // The value key of the word, as the shared tier named it; 768 x 1e30 written over it.
    let found = eval(
        &redis,
        "local k = redis.call('KEYS', 'puzzlegen:vec:*:' .. KEYS[1]) return k[1]",
        &key,
        &[],
    );
    let value_key = found
        .lines()
        .nth(1)
        .expect("the word's value key")
        .to_owned();
    assert!(value_key.starts_with("puzzlegen:vec:"), "{found}");
    let set = eval(
        &redis,
        "redis.call('SET', KEYS[1], string.rep(struct.pack('<f', 1e30), 768)) return 1",
        &value_key,
        &[],
    );
    assert_eq!(set.trim(), ":1", "{set}");
    let paid = server.stats().texts_embedded;

    // Another run on the same Redis, with a cache of its own.
    let second = workspace(&server.base_url());
    with_redis(second.path());
    let f = run_ok(second.path());
    assert_eq!(
        read(second.path(), "final_puzzles.json"),
        clean,
        "{}",
        f.all()
    );
    assert_eq!(bad_cached_vectors(second.path()), 1, "{}", f.all());
    let line = rejection(&f, &word);
    assert!(
        line.contains(&format!("Redis tier at {}", redis.url())) && line.contains("absurd"),
        "{line}"
    );
    assert_eq!(server.stats().texts_embedded - paid, 1, "{}", f.all());
    assert_stored_finite(second.path(), &word);
    let csv = std::fs::read_to_string(second.path().join("cache/all_embeddings.csv"))
        .expect("the cache CSV");
    assert!(
        !csv.contains("e30"),
        "the absurd vector was copied into the cache CSV"
    );
    // The shared tier holds the vector paid for again.
    let first_value = eval(
        &redis,
        "return tostring(struct.unpack('<f', redis.call('GET', KEYS[1])))",
        &value_key,
        &[],
    );
    assert!(!first_value.contains("e+30"), "{first_value}");
}

#[test]
fn a_hand_edited_journal_is_recomputed_and_the_summary_counts_what_the_outputs_hold() {
    let server = mock();
    let dir = workspace(&server.base_url());
    let clean = run_keeping_a_journal(dir.path());
    let path = dir.path().join("out/run_journal.jsonl");
    let journal = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = journal.lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 5, "a header and 4 themes: {journal}");
    let mut edit = |n: usize, f: &dyn Fn(&mut serde_json::Value)| {
        let mut e: serde_json::Value = serde_json::from_str(&lines[n]).unwrap();
        f(&mut e);
        lines[n] = e.to_string();
    };
    // A similarity of 5.0, and a word list cut to one word.
    edit(1, &|e| e["ranked"][0][1] = serde_json::json!(5.0));
    edit(2, &|e| {
        let first = e["ranked"][0].clone();
        e["ranked"] = serde_json::json!([first]);
    });
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let paid = server.stats().texts_embedded;

    let f = run_ok(dir.path());
    assert_eq!(server.stats().texts_embedded, paid, "all from the cache");
    let edited = read(dir.path(), "final_puzzles.json");
    let scores = edited.to_string();
    assert!(!scores.contains("5.0"), "{scores}");
    assert_eq!(
        (puzzles_ok(&f), edited.as_object().unwrap().len()),
        (1, 1),
        "the puzzle was not made, or the summary's count differs from final_puzzles.json:\n{}",
        f.all()
    );
    let said: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| l.contains("run_journal.jsonl") && l.contains("does not check out"))
        .collect();
    assert_eq!(said.len(), 2, "{}", f.all());
    assert_eq!(edited, clean, "not the puzzles of a run without a journal");
}

#[test]
fn a_database_damaged_in_the_middle_is_refused_before_anything_is_paid_for() {
    let server = mock();
    let dir = workspace(&server.base_url());
    run_ok(dir.path());
    let db = db(dir.path());
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() >= 16 * 4096, "{} bytes", bytes.len());
    // Garbage over four pages in the middle; the header (page 1) intact.
    let middle = bytes.len() / 2 / 4096 * 4096;
    bytes[middle..middle + 4 * 4096].fill(0xab);
    std::fs::write(&db, &bytes).unwrap();
    // A word more per theme: the run would have texts to pay for.
    common::write_workload(dir.path(), 4, 9);
    let requests = server.stats().requests;

    let f = run(dir.path());
    let paid = server.stats().requests - requests;
    assert_eq!(
        paid,
        0,
        "requests paid for before the damage was found:\n{}",
        f.all()
    );
    assert_eq!(f.code, 2, "{}", f.all());
    assert!(!f.stderr.contains("panicked"), "{}", f.all());
    assert!(
        f.stderr.contains(
            "error: cache/embeddings.sqlite3: the cache database is damaged (quick_check: "
        ) && f.stderr.contains("puzzlegen cache import"),
        "{}",
        f.all()
    );
    assert_eq!(std::fs::read(&db).unwrap(), bytes, "the file was changed");
}

#[test]
fn a_damaged_row_met_mid_run_costs_that_row_only_and_the_outputs_are_written() {
    let server = mock();
    let dir = workspace(&server.base_url());
    run_ok(dir.path());
    let clean = read(dir.path(), "final_puzzles.json");
    let word = a_chosen_word(dir.path());
    // A vector cut to 10 bytes: the start-up check reads pages, not values.
    poison(dir.path(), &word, &[0.5, 0.5, 0.0][..2]);
    let paid = server.stats().texts_embedded;

    let f = run_ok(dir.path());
    assert_eq!(read(dir.path(), "final_puzzles.json"), clean, "{}", f.all());
    assert!(
        rejection(&f, &word).contains("8 bytes, expected 3072"),
        "{}",
        f.all()
    );
    // The cache CSV (from the database as the run began) goes on without it, and says so.
    let left_out = format!(
        "cache/embeddings.sqlite3: the row of {:?} holds 8 bytes, not 768 values of 4 bytes: \
         left out",
        puzzlegen::cache::key(&word)
    );
    assert!(f.stderr.contains(&left_out), "{}", f.all());
    assert_eq!(server.stats().texts_embedded - paid, 1, "{}", f.all());
    assert_stored_finite(dir.path(), &word);
    let csv = std::fs::read_to_string(dir.path().join("cache/all_embeddings.csv")).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 4 * 9,
        "every text once in the cache CSV"
    );
}

#[test]
fn a_database_damaged_mid_run_loses_nothing_paid_for_and_the_outputs_are_written() {
    let server = mock();
    let dir = workspace(&server.base_url());
    run_ok(dir.path());
    let db = db(dir.path());
    // A word more per theme: 4 texts to pay for, held at the mock until the damage is done.
    common::write_workload(dir.path(), 4, 9);
    let old_csv = std::fs::read(dir.path().join("cache/all_embeddings.csv")).unwrap();
    let paid = server.stats().texts_embedded;
    server.hold_after(Some(server.stats().responses_ok));
    let child = common::spawn_run(dir.path());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while server.held() == 0 {
        assert!(std::time::Instant::now() < deadline, "no request arrived");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Everything but the header page (the schema) overwritten with garbage.
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[4096..].fill(0xab);
    std::fs::write(&db, &bytes).unwrap();
    server.hold_after(None);
    let out = child.wait_with_output().unwrap();
    let f = Finished {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        seconds: 0.0,
    };
    assert_eq!(f.code, 0, "{}", f.all());
    assert!(dir.path().join("out/final_puzzles.json").is_file());
    // At least the 4 new texts; texts looked up after the damage were paid for again.
    let embedded = server.stats().texts_embedded - paid;
    assert!(embedded >= 4, "{}", f.all());
    // Said as it is: nothing stored in the database, everything this run paid for saved to a
    // file named, with the command that brings it back.
    assert!(
        f.stdout
            .contains("cache:   0 new embedding(s) stored in cache/embeddings.sqlite3"),
        "{}",
        f.all()
    );
    assert!(!f.stderr.contains("left as it is"), "{}", f.all());
    let rescue: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("embeddings.sqlite3.unsaved-"))
        .collect();
    assert_eq!(rescue.len(), 1, "{rescue:?}\n{}", f.all());
    let saved = format!(
        "{embedded} embedding(s) could not be stored in cache/embeddings.sqlite3 \
         (cache/embeddings.sqlite3: the cache database is damaged (database disk image is \
         malformed)"
    );
    assert!(
        f.stderr.contains(&saved)
            && f.stderr
                .contains(&format!("puzzlegen cache import cache/{}", rescue[0])),
        "{}",
        f.all()
    );
    let rows = std::fs::read_to_string(dir.path().join("cache").join(&rescue[0])).unwrap();
    assert_eq!(rows.lines().count() as u64, 1 + embedded, "{rows}");
    // The cache CSV: complete (the database was read before the damage), or left as it was.
    let csv = std::fs::read(dir.path().join("cache/all_embeddings.csv")).unwrap();
    let complete = String::from_utf8_lossy(&csv).lines().count() == 1 + 4 * 10;
    assert!(complete || csv == old_csv, "{}", f.all());
}
