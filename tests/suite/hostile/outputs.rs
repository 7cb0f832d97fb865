//! Data destroyed or clobbered (issue 10): outputs never replace the cache database, a device,
//! a FIFO or a link; a complete output set survives a rerun that stops early or runs out of
//! disk; temporary files of a killed run do not stay.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mock_gemini::{MockConfig, start_blocking};

use crate::common;

/// Eight themes of six distinct words, one theme a line.
#[rustfmt::skip]
const WORDS: &[(&str, &[&str])] = &[
    ("Planets", &["Mercury", "Venus", "Mars", "Jupiter", "Saturn", "Neptune"]),
    ("Trees", &["Oak", "Maple", "Birch", "Pine", "Willow", "Cedar"]),
    ("Colors", &["Red", "Green", "Blue", "Yellow", "Purple", "Orange"]),
    ("Fish", &["Salmon", "Trout", "Cod", "Tuna", "Carp", "Perch"]),
    ("Fruit", &["Apple", "Pear", "Plum", "Cherry", "Peach", "Grape"]),
    ("Tools", &["Hammer", "Saw", "Drill", "Wrench", "Chisel", "Pliers"]),
    ("Birds", &["Robin", "Eagle", "Crow", "Owl", "Sparrow", "Hawk"]),
    ("Metals", &["Iron", "Copper", "Gold", "Silver", "Zinc", "Tin"]),
];

/// The output set of a run with default paths (`out`, `out/reports`, `cache`).
const SET: [&str; 6] = [
    "out/final_puzzles.json",
    "out/puzzle_metadata.json",
    "out/reports/embedding_analysis.json",
    "out/reports/puzzles.html",
    "out/puzzle_embeddings.csv",
    "cache/all_embeddings.csv",
];

fn run(dir: &Path, args: &[&str]) -> Output {
    common::command(dir).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A local-model run directory for `puzzles` puzzles over the first `themes` themes of
/// [`WORDS`], with `extra` YAML appended to params.yaml.
fn local_setup(themes: usize, puzzles: usize, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_inputs(dir.path(), &WORDS[..themes]);
    common::write_params(dir.path(), puzzles, extra);
    dir
}

fn run_ok(dir: &Path) -> Output {
    let out = run(dir, &["run", "--config", "params.yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

fn snapshot(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    SET.iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
            (*f, bytes)
        })
        .collect()
}

fn assert_unchanged(dir: &Path, before: &[(&'static str, Vec<u8>)], what: &str) {
    for (f, bytes) in before {
        let now = std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{what}: {f}: {e}"));
        assert!(&now == bytes, "{what}: {f} was replaced");
    }
}

/// Files under `dir` whose name starts with `.puzzlegen` (temporary files of ours).
fn temps(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            found.extend(temps(&p));
        } else if e.file_name().to_string_lossy().starts_with(".puzzlegen") {
            found.push(p);
        }
    }
    found
}

/// Sends `signal` (`-INT`, `-TERM`) to `child`.
fn send(signal: &str, child: &std::process::Child) {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {signal}");
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success(), "mkfifo {}", path.display());
}

/// Reads the FIFO at `path` to its end on a thread; the receiver gets what was read.
fn read_fifo(path: &Path) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let bytes = std::fs::read(&path).unwrap();
        let _ = tx.send(bytes);
    });
    rx
}

fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// A cache database with a few rows of model `m`, dimension 3, at `dir/cache/x.sqlite3`.
fn small_database(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("rows.csv"),
        "word,embedding_dim_1,embedding_dim_2,embedding_dim_3\n\
         alpha,1,0,0\nbeta,0,1,0\ngamma,0,0,1\n",
    )
    .unwrap();
    let out = run(dir, &[&["cache", "import", "rows.csv"][..], &DB].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    dir.join("cache/x.sqlite3")
}

fn export(dir: &Path, to: &str) -> Output {
    run(dir, &[&["cache", "export", "-o", to][..], &DB].concat())
}

/// The test database and its embedding space, as `cache` command flags.
const DB: [&str; 6] = [
    "--db",
    "cache/x.sqlite3",
    "--model",
    "m",
    "--dimension",
    "3",
];

#[test]
fn export_onto_the_database_is_refused_and_the_database_kept() {
    let d = tempfile::tempdir().unwrap();
    let db = small_database(d.path());
    let before = std::fs::read(&db).unwrap();
    std::os::unix::fs::symlink("cache/x.sqlite3", d.path().join("link.sqlite3")).unwrap();
    for to in [
        "cache/x.sqlite3",
        "./cache/x.sqlite3",
        "cache/../cache/x.sqlite3",
        "link.sqlite3",
        "cache/x.sqlite3-wal",
    ] {
        let out = export(d.path(), to);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "-o {to}: {stderr}");
        assert!(
            stderr.contains("--out") && stderr.contains(to) && stderr.contains("cache database"),
            "-o {to}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(std::fs::read(&db).unwrap() == before, "-o {to}: changed");
        assert!(!d.path().join("cache/x.sqlite3-wal").exists());
    }
    assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
    // The database still reads.
    let out = export(d.path(), "ok.csv");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(d.path().join("ok.csv"))
            .unwrap()
            .lines()
            .count(),
        4
    );
}

#[test]
fn export_writes_through_a_fifo_a_descriptor_a_socket_and_a_link() {
    let d = tempfile::tempdir().unwrap();
    small_database(d.path());
    let expected = {
        assert_eq!(export(d.path(), "plain.csv").status.code(), Some(0));
        std::fs::read(d.path().join("plain.csv")).unwrap()
    };

    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let got = read_fifo(&fifo);
    let out = export(d.path(), "fifo");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(is_fifo(&fifo), "the FIFO was replaced");
    let got = got.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(got == expected, "the FIFO's reader got {}", text(&got));

    // `-o /dev/fd/3`, descriptor 3 being this test's pipe (the shell's stdout).
    let out = common::wrapped(
        d.path(),
        &[
            "sh",
            "-c",
            "exec \"$0\" cache export -o /dev/fd/3 --db cache/x.sqlite3 --model m \
             --dimension 3 3>&1 1>&2",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout == expected, "{}", text(&out.stdout));

    // A Unix socket: connected to and written, not replaced.
    let sock = d.path().join("sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let (tx, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = listener.accept().unwrap();
        let mut bytes = Vec::new();
        conn.read_to_end(&mut bytes).unwrap();
        let _ = tx.send(bytes);
    });
    let out = export(d.path(), "sock");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let kind = std::fs::symlink_metadata(&sock).unwrap().file_type();
    assert!(kind.is_socket(), "the socket was replaced");
    let got = got.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(got == expected, "the socket's reader got {}", text(&got));

    std::fs::write(d.path().join("real.csv"), "old").unwrap();
    std::os::unix::fs::symlink("real.csv", d.path().join("link.csv")).unwrap();
    assert_eq!(export(d.path(), "link.csv").status.code(), Some(0));
    let link = std::fs::symlink_metadata(d.path().join("link.csv")).unwrap();
    assert!(link.file_type().is_symlink(), "the link was replaced");
    assert!(std::fs::read(d.path().join("real.csv")).unwrap() == expected);
    assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
}

#[test]
fn a_fifo_and_a_device_as_outputs_are_written_through() {
    let d = local_setup(
        4,
        1,
        "output:\n  puzzle_embeddings_file: fifo\n  embedding_cache_file: null\n",
    );
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let null = d.path().join("null");
    let made = Command::new("mknod")
        .args([null.to_str().unwrap(), "c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod");
    let got = read_fifo(&fifo);
    run_ok(d.path());
    assert!(is_fifo(&fifo), "the FIFO was replaced by a regular file");
    let null_kind = std::fs::symlink_metadata(&null).unwrap().file_type();
    assert!(
        null_kind.is_char_device(),
        "the device node was replaced: {null_kind:?}"
    );
    let got = text(&got.recv_timeout(Duration::from_secs(60)).unwrap());
    let mut lines = got.lines();
    assert!(
        lines
            .next()
            .unwrap_or_default()
            .starts_with("theme,word,word_type,similarity_to_theme,rank,embedding_dim_1,"),
        "{got:.200}"
    );
    // One puzzle: 4 themes, each a theme row and 4 words.
    assert_eq!(lines.count(), 20, "{got:.200}");
    assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
}

#[test]
fn symlinked_outputs_keep_the_link_and_replace_the_target() {
    let d = local_setup(
        4,
        1,
        "output:\n  puzzle_embeddings_file: link.csv\n  embedding_cache_file: cache/all_embeddings.csv\n",
    );
    std::fs::write(d.path().join("real.csv"), "old").unwrap();
    std::os::unix::fs::symlink("real.csv", d.path().join("link.csv")).unwrap();
    // The outputs folder a dangling link: its target is created.
    std::os::unix::fs::symlink("elsewhere/out", d.path().join("out")).unwrap();
    run_ok(d.path());
    for link in ["link.csv", "out"] {
        let m = std::fs::symlink_metadata(d.path().join(link)).unwrap();
        assert!(m.file_type().is_symlink(), "{link} was replaced");
    }
    let csv = std::fs::read_to_string(d.path().join("real.csv")).unwrap();
    assert!(csv.starts_with("theme,word,"), "{csv:.100}");
    assert!(d.path().join("elsewhere/out/final_puzzles.json").is_file());
    assert!(
        d.path()
            .join("elsewhere/out/reports/embedding_analysis.json")
            .is_file()
    );
}

#[test]
fn outputs_onto_the_database_the_journal_or_an_input_are_refused() {
    for (key, value) in [
        ("puzzle_embeddings_file", "cache/embeddings.sqlite3"),
        ("puzzle_embeddings_file", "./cache/embeddings.sqlite3-wal"),
        ("embedding_cache_file", "out/run_journal.jsonl"),
        ("embedding_cache_file", "themes.json"),
        ("puzzle_embeddings_file", "params.yaml"),
        ("puzzle_embeddings_file", "cache/all_embeddings.csv"),
        ("review_page", "params.yaml"),
        ("review_page", "out/final_puzzles.json"),
    ] {
        let d = local_setup(4, 1, &format!("output:\n  {key}: {value}\n"));
        let inputs: Vec<(String, Vec<u8>)> = ["themes.json", "candidates.json", "params.yaml"]
            .iter()
            .map(|f| (f.to_string(), std::fs::read(d.path().join(f)).unwrap()))
            .collect();
        let out = run(d.path(), &["run", "--config", "params.yaml"]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {value}: {stderr}");
        assert!(
            stderr.contains(&format!("output.{key}")) && stderr.contains(value),
            "{key}: {value}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        for (f, bytes) in inputs {
            assert!(std::fs::read(d.path().join(&f)).unwrap() == bytes, "{f}");
        }
        assert!(!d.path().join("out").exists(), "{value}: something written");
        assert!(
            !d.path().join("cache").exists(),
            "{value}: something written"
        );
    }
}

#[test]
fn stale_temporary_files_of_ours_are_removed_by_the_next_run() {
    let d = local_setup(4, 1, "");
    run_ok(d.path());
    let stale = [
        "out/.puzzlegen-tmp-K1LLED",
        "out/reports/.puzzlegen-tmp-XFSZ01",
        "cache/.puzzlegen-tmp-abcdef",
        "out/.puzzlegen-Ab3xYz",
    ];
    let kept = [
        "out/notes.txt",
        "out/.puzzlegen-notes.txt",
        "out/.tmpAb3xYz",
    ];
    for f in stale.iter().chain(&kept) {
        std::fs::write(d.path().join(f), "x").unwrap();
    }
    run_ok(d.path());
    for f in stale {
        assert!(!d.path().join(f).exists(), "{f} left");
    }
    for f in kept {
        assert!(d.path().join(f).exists(), "{f} is not ours but was removed");
    }
}

/// Unmounts the tmpfs at its path when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_while_writing_leaves_the_old_set_whole() {
    let d = local_setup(8, 1, "");
    let out = d.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&out)
        .status()
        .is_ok_and(|s| s.success());
    let _guard = mounted.then(|| Mounted(out.clone()));
    if !mounted {
        // Covered by `a_file_size_limit_is_reported_and_leaves_the_old_set_whole`.
        eprintln!("cannot mount a tmpfs here: disk full checked by the file size limit only");
        return;
    }
    run_ok(d.path());
    let before = snapshot(d.path());
    // Fill the outputs' file system but for 1400 KiB: enough for the run to start (twenty
    // puzzles need at least 1350 KiB of puzzle CSV), not for the CSV it writes (~1440 KiB).
    let filler = out.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(1400 * 1024)).unwrap();
    }
    common::write_params(d.path(), 20, "");
    let run = run(d.path(), &["run", "--config", "params.yaml"]);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(3), "{stderr}");
    // Not the journal: the new set itself did not fit.
    assert!(
        stderr.contains("out/puzzle_embeddings.csv: cannot write: No space left"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot read"), "{stderr}");
    assert_unchanged(d.path(), &before, "disk full");
    assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
}

#[test]
fn a_file_size_limit_is_reported_and_leaves_the_old_set_whole() {
    // Two puzzles over 8 themes: a cache database of ~140 KB, a cache CSV of ~280 KB.
    let d = local_setup(8, 2, "");
    run_ok(d.path());
    let before = snapshot(d.path());
    // `ulimit -f 400` (dash: 512-byte blocks, 200 KiB per file): the database (every text
    // already in it) and the journal fit, the new cache CSV does not. SIGXFSZ used to kill
    // the run without a word and leave its temporary files.
    let ulimit = "ulimit -f 400; exec \"$0\" run --config params.yaml";
    let out = common::wrapped(d.path(), &["sh", "-c", ulimit])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("all_embeddings.csv: cannot write: File too large"),
        "{stderr}"
    );
    assert_unchanged(d.path(), &before, "file size limit");
    assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
}

/// A Gemini-mock run directory: 24 themes of 15 words, the first 12 listed in themes.json.
fn gemini_setup(server: &mock_gemini::BlockingMockServer) -> tempfile::TempDir {
    let dir = common::gemini_dir(
        &server.base_url(),
        24,
        15,
        3,
        "  batch_size: 4\n  requests_per_minute: 1000000\n",
    );
    list_themes(dir.path(), 0);
    dir
}

/// Lists themes `first..first + 12` of the workload in themes.json.
fn list_themes(dir: &Path, first: usize) {
    let themes: Vec<String> = (first..first + 12)
        .map(|t| format!("Theme {t:03}"))
        .collect();
    std::fs::write(
        dir.join("themes.json"),
        serde_json::json!({ "themes": themes }).to_string(),
    )
    .unwrap();
}

/// The partial set of a stopped run, in out/partial/.
fn assert_partial_set(dir: &Path, stdout: &str) {
    for f in [
        "final_puzzles.json",
        "puzzle_metadata.json",
        "embedding_analysis.json",
        "puzzles.html",
        "puzzle_embeddings.csv",
        "all_embeddings.csv",
    ] {
        let p = dir.join("out/partial").join(f);
        assert!(p.is_file(), "{} missing", p.display());
    }
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("out/partial/puzzle_metadata.json")).unwrap(),
    )
    .unwrap();
    assert!(meta["successful_puzzles"].as_u64().unwrap() < 3, "{meta}");
    assert!(
        stdout.contains("partial outputs in out/partial"),
        "{stdout}"
    );
}

#[test]
fn a_complete_set_survives_a_rerun_stopped_by_sigint() {
    let server = start_blocking(MockConfig {
        dimension: 768,
        ..MockConfig::default()
    })
    .unwrap();
    let d = gemini_setup(&server);
    run_ok(d.path());
    let before = snapshot(d.path());
    assert!(!d.path().join("out/run_journal.jsonl").exists());

    // Other themes: the rerun has work to do; stopped with two answers given.
    list_themes(d.path(), 12);
    let answered = server.stats().responses_ok + 2;
    server.hold_after(Some(answered));
    let child = common::spawn_run(d.path());
    let t = Instant::now();
    while !(server.stats().responses_ok == answered && server.held() > 0) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "never reached the gate"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    send("-INT", &child);
    let out = child.wait_with_output().unwrap();
    server.hold_after(None);
    assert_stopped(d.path(), &out, 130, &before, "SIGINT");
    assert!(d.path().join("out/run_journal.jsonl").exists());

    // The next run finishes the work, and its complete set replaces partial/.
    run_ok(d.path());
    assert!(
        !d.path().join("out/partial").exists(),
        "stale partial/ kept"
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.path().join("out/puzzle_metadata.json")).unwrap())
            .unwrap();
    assert_eq!(meta["successful_puzzles"], 3, "{meta}");
    assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
}

/// A stopped rerun: exit `code`, the complete earlier set untouched, its work in partial/.
fn assert_stopped(
    dir: &Path,
    out: &Output,
    code: i32,
    before: &[(&'static str, Vec<u8>)],
    what: &str,
) {
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: {stdout}\n{}",
        text(&out.stderr)
    );
    assert_unchanged(dir, before, what);
    assert_partial_set(dir, &stdout);
}

#[test]
fn a_complete_set_survives_a_rerun_stopped_by_a_wrong_key() {
    let server = start_blocking(MockConfig {
        dimension: 768,
        api_key: Some(common::KEY.into()),
        ..MockConfig::default()
    })
    .unwrap();
    let d = gemini_setup(&server);
    run_ok(d.path());
    let before = snapshot(d.path());

    list_themes(d.path(), 12);
    let out = common::command(d.path())
        .env("PUZZLEGEN_TEST_KEY", "a-wrong-key")
        .args(["run", "--config", "params.yaml"])
        .output()
        .unwrap();
    assert_stopped(d.path(), &out, 3, &before, "wrong key");
    assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
}

/// Reads the FIFO at `path` slowly (16 KB per 10 ms) to its end, so that a writer is still
/// writing when the test acts; `started` gets a message at the first bytes.
fn read_fifo_slowly(
    path: &Path,
    started: std::sync::mpsc::Sender<()>,
) -> std::thread::JoinHandle<usize> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 16 << 10];
        let mut total = 0;
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                return total;
            }
            if total == 0 {
                let _ = started.send(());
            }
            total += n;
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

#[test]
fn sigterm_while_writing_the_outputs_ends_the_run_at_once_and_replaces_nothing() {
    let d = local_setup(4, 200, "");
    run_ok(d.path());
    let before = snapshot(d.path());

    // The rerun writes its puzzle CSV (~15 MB) into a FIFO read slowly: the signal lands while
    // it writes, whatever the machine's speed.
    let params = d.path().join("params.yaml");
    let mut yaml = std::fs::read_to_string(&params).unwrap();
    yaml.push_str("output:\n  puzzle_embeddings_file: fifo\n");
    std::fs::write(&params, yaml).unwrap();
    let fifo = d.path().join("fifo");
    mkfifo(&fifo);
    let (tx, started) = std::sync::mpsc::channel();
    let reader = read_fifo_slowly(&fifo, tx);
    let child = common::spawn_run(d.path());
    started
        .recv_timeout(Duration::from_secs(120))
        .expect("the run never began writing its puzzle CSV");
    let signalled = Instant::now();
    send("-TERM", &child);
    let out = child.wait_with_output().unwrap();
    let took = signalled.elapsed();
    let read = reader.join().unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(took < Duration::from_secs(1), "took {took:?}: {stderr}");
    assert!(
        read < 15 << 20,
        "the whole CSV ({read} bytes) was written after the signal: {stderr}"
    );
    assert!(
        stderr.contains("stopped by a signal before the outputs were written")
            && stderr.contains("run_journal.jsonl holds the 4 finished theme(s)"),
        "{stderr}"
    );
    assert_unchanged(d.path(), &before, "SIGTERM while writing");
    assert!(temps(d.path()).is_empty(), "{:?}", temps(d.path()));
    assert!(!d.path().join("out/partial").exists(), "partial/ left");

    // The journal holds the work: the next run writes the outputs from it.
    std::fs::remove_file(&fifo).unwrap();
    let out = run_ok(d.path());
    assert!(
        text(&out.stdout).contains("4 resumed from the journal"),
        "{}",
        text(&out.stdout)
    );
}
