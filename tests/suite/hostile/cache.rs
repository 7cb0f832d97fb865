//! Hostile cases: cache database. Another process's lock is waited for out loud; a cache that
//! cannot be written is refused before any work with the cause and the fix; rows the
//! database refuses in the middle of a run are kept, retried and saved, and the run's outputs
//! are still written.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use mock_gemini::{BlockingMockServer, MockConfig, start_blocking};

use crate::common;

pub(super) fn mock() -> BlockingMockServer {
    start_blocking(MockConfig {
        dimension: 768,
        ..MockConfig::default()
    })
    .unwrap()
}

/// A run directory with 4 themes x 8 words (1 puzzle) for the mock at `base_url`.
pub(super) fn workspace(base_url: &str) -> tempfile::TempDir {
    common::gemini_dir(base_url, 4, 8, 1, "  request_timeout: 30\n")
}

pub(super) fn db(dir: &Path) -> PathBuf {
    dir.join("cache/embeddings.sqlite3")
}

/// `puzzlegen run` in `dir` at the default log level, through `wrapper` (a program and its
/// arguments, e.g. to drop capabilities) if given.
fn command(dir: &Path, wrapper: &[&str]) -> StdCommand {
    let mut cmd = if wrapper.is_empty() {
        common::command(dir)
    } else {
        common::wrapped(dir, &[wrapper, &["--"]].concat())
    };
    cmd.args(["run", "--config", "params.yaml"]);
    cmd
}

/// A child run whose stderr lines are collected with the time each arrived.
struct Child {
    child: std::process::Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>,
    reader: std::thread::JoinHandle<()>,
}

fn spawn(mut cmd: StdCommand) -> Child {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = std::sync::Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push((Instant::now(), line));
        }
    });
    Child {
        child,
        lines,
        reader,
    }
}

/// Waits for `child`; it must exit 0 with the outputs written. Returns (stdout, stderr,
/// everything).
fn outputs_written(dir: &Path, child: Child) -> (String, String, String) {
    let (code, stdout, stderr, _) = child.finish();
    let all = format!("exit {code}\n{stdout}\n{stderr}");
    assert_eq!(code, 0, "{all}");
    assert!(
        dir.join("out/final_puzzles.json").is_file(),
        "outputs not written:\n{all}"
    );
    (stdout, stderr, all)
}

impl Child {
    /// Waits (at most 120 s) and returns the exit code, stdout and stderr.
    fn finish(mut self) -> (i32, String, String, Vec<(Instant, String)>) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the run did not end within 120 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut stdout).unwrap();
        self.reader.join().unwrap();
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        let stderr = lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        (status.code().unwrap_or(-1), stdout, stderr, lines)
    }
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn a_lock_held_by_another_process_is_reported_at_once_and_waited_for() {
    let server = mock();
    let dir = workspace(&server.base_url());
    let db = db(dir.path());
    // An existing cache database (WAL), locked by another connection for 2 s.
    drop(puzzlegen::cache::store::Store::open(&db).unwrap());
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let locked_at = Instant::now();
    let child = spawn(command(dir.path(), &[]));
    std::thread::sleep(Duration::from_secs(2));
    holder.execute_batch("COMMIT").unwrap();
    let released_at = Instant::now();
    drop(holder);
    let (code, stdout, stderr, lines) = child.finish();
    let all = format!("exit {code}\n{stdout}\n{stderr}");
    assert_eq!(code, 0, "{all}");
    let waiting = lines
        .iter()
        .find(|(_, l)| {
            l.contains(&format!(
                "waiting for the lock on {}, held by another process",
                Path::new("cache/embeddings.sqlite3").display()
            ))
        })
        .unwrap_or_else(|| panic!("no line about the lock:\n{all}"));
    assert!(
        waiting.0 < released_at,
        "the wait was reported {:.1} s after the lock was taken, only after it was released",
        (waiting.0 - locked_at).as_secs_f64()
    );
    assert!(stderr.contains("got the lock on"), "{all}");
    assert!(!stderr.contains("not stored"), "{all}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM embeddings"),
        4 * 9,
        "every text stored once the lock was released"
    );
}

/// A wrapper that drops the capability to override file permissions when running as root
/// (root ignores a folder's mode otherwise); `None` when that is not possible here.
fn without_root_override() -> Option<Vec<&'static str>> {
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
    if !root {
        return Some(Vec::new());
    }
    let caps = "-dac_override,-dac_read_search";
    let ok = StdCommand::new("setpriv")
        .args(["--inh-caps", caps, "--bounding-set", caps, "--", "true"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| vec!["setpriv", "--inh-caps", caps, "--bounding-set", caps])
}

#[test]
fn a_read_only_cache_folder_is_refused_before_any_work_naming_the_folder_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let Some(wrapper) = without_root_override() else {
        eprintln!("skipped: running as root without setpriv, a folder's mode cannot be enforced");
        return;
    };
    let server = mock();
    let dir = workspace(&server.base_url());
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o555)).unwrap();
    let (code, stdout, stderr, _) = spawn(command(dir.path(), &wrapper)).finish();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let all = format!("exit {code}\n{stdout}\n{stderr}");
    assert_eq!(code, 2, "{all}");
    assert!(
        stderr.contains("cache: the cache folder is read-only")
            && stderr.contains("chmod u+w cache")
            && stderr.contains("cache.path"),
        "{all}"
    );
    assert!(!stderr.contains("unable to open database file"), "{all}");
    assert_eq!(server.stats().requests, 0, "refused before any work");

    // An existing database in that folder: the same, before any request.
    std::fs::remove_dir(&cache).unwrap();
    drop(puzzlegen::cache::store::Store::open(&db(dir.path())).unwrap());
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o555)).unwrap();
    let (code, stdout, stderr, _) = spawn(command(dir.path(), &wrapper)).finish();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let all = format!("exit {code}\n{stdout}\n{stderr}");
    assert_eq!(code, 2, "{all}");
    assert!(stderr.contains("the cache folder is read-only"), "{all}");
    assert_eq!(server.stats().requests, 0);
}

#[test]
fn an_immutable_cache_database_is_refused_before_any_work() {
    let server = mock();
    let dir = workspace(&server.base_url());
    let db = db(dir.path());
    drop(puzzlegen::cache::store::Store::open(&db).unwrap());
    let chattr = |flag: &str| {
        StdCommand::new("chattr")
            .arg(flag)
            .arg(&db)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !chattr("+i") {
        eprintln!("skipped: chattr +i is not possible here (not root, or no such attribute)");
        return;
    }
    let (code, stdout, stderr, _) = spawn(command(dir.path(), &[])).finish();
    assert!(chattr("-i"), "cannot remove the immutable flag again");
    let all = format!("exit {code}\n{stdout}\n{stderr}");
    assert_eq!(code, 2, "{all}");
    assert!(
        stderr.contains("the cache database is immutable (chattr +i)")
            && stderr.contains("chattr -i cache/embeddings.sqlite3"),
        "{all}"
    );
    assert!(!stderr.contains("not stored"), "{all}");
    assert_eq!(server.stats().requests, 0);
    assert!(
        !std::fs::read_dir(dir.path().join("cache"))
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().contains("unsaved")),
        "no empty rescue file"
    );
}

#[test]
fn rows_the_database_refuses_mid_run_are_saved_and_the_outputs_still_written() {
    let server = mock();
    let dir = workspace(&server.base_url());
    let db = db(dir.path());
    // Hold every request until the run is going, then break the database under its feet.
    server.hold_after(Some(0));
    let child = spawn(command(dir.path(), &[]));
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.held() == 0 {
        assert!(Instant::now() < deadline, "no request arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE embeddings")
        .unwrap();
    server.hold_after(None);
    let (_, stderr, all) = outputs_written(dir.path(), child);
    // Logged once when it happened, naming the count, then where they went.
    assert!(
        stderr.contains("not stored yet") && stderr.contains("kept in memory"),
        "{all}"
    );
    let rescue: Vec<PathBuf> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".unsaved-"))
        .collect();
    assert_eq!(rescue.len(), 1, "{rescue:?}\n{all}");
    let name = rescue[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        stderr.contains(&name) && stderr.contains("puzzlegen cache import"),
        "{all}"
    );
    let text = std::fs::read_to_string(&rescue[0]).unwrap();
    let rows = text.lines().count() - 1;
    let embedded = server.stats().distinct_texts_embedded as usize;
    assert_eq!(rows, embedded, "every embedding paid for is saved");
    assert!(
        stderr.contains(&format!("{rows} embedding(s) could not be stored")),
        "{all}"
    );
    assert_eq!(embedded, 4 * 9);
}

#[test]
fn a_full_cache_disk_loses_nothing_and_the_outputs_are_still_written() {
    let server = mock();
    let dir = workspace(&server.base_url());
    // The cache CSV goes with the outputs: only the database sits on the full disk.
    let params = dir.path().join("params.yaml");
    let mut yaml = std::fs::read_to_string(&params).unwrap();
    yaml.push_str("output:\n  embedding_cache_file: out/all_embeddings.csv\n");
    std::fs::write(&params, yaml).unwrap();
    std::fs::create_dir(dir.path().join("cache")).unwrap();
    // A 96 KB tmpfs as the cache folder, in a private mount namespace: room for the empty
    // database, not for 36 vectors of 768 dimensions (nor for the rescue file).
    let probe = StdCommand::new("unshare")
        .args(["-m", "sh", "-c", "mount -t tmpfs -o size=96k tmpfs cache"])
        .current_dir(dir.path())
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("skipped: cannot mount a small tmpfs here (unshare -m and mount need root)");
        return;
    }
    let mut cmd = common::wrapped(
        dir.path(),
        &[
            "unshare",
            "-m",
            "sh",
            "-c",
            "mount -t tmpfs -o size=96k tmpfs cache && exec \"$0\" \"$@\"",
        ],
    );
    cmd.args(["run", "--config", "params.yaml"]);
    let (stdout, stderr, all) = outputs_written(dir.path(), spawn(cmd));
    assert!(
        stderr.contains("the disk holding the cache database is full: free some space"),
        "{all}"
    );
    // The folder next to the database is full too: the rows went to the working directory.
    let rescue: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("embeddings.sqlite3.unsaved-"))
        .collect();
    assert_eq!(rescue.len(), 1, "{rescue:?}\n{all}");
    let rows = std::fs::read_to_string(&rescue[0]).unwrap().lines().count() - 1;
    // What fitted was stored (the summary says how many), the rest saved.
    let stored: usize = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("cache:")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no cache line in the summary:\n{all}"));
    assert_eq!(
        rows + stored,
        server.stats().distinct_texts_embedded as usize,
        "{all}"
    );
    assert!(rows > 0, "{all}");
    assert!(
        stderr.contains(&format!("{rows} embedding(s) could not be stored"))
            && stderr.contains("puzzlegen cache import"),
        "{all}"
    );
}
