//! The run journal: every finished theme result, appended the moment it completes, so that a
//! run killed at any point (even `kill -9`) starts again with the remaining work only.
//!
//! The journal is `<paths.outputs>/run_journal.jsonl`: a header line, then one JSON line per
//! finished theme with its ranked words and their similarities (the vectors are in the cache).
//! An entry only answers for the same theme, the same usable candidates and the same embedding
//! space, so a journal left by a run with other inputs is harmless; its scores are recomputed
//! from the cached vectors, and an entry that does not match them (a hand-edited journal) is
//! not used: the theme is processed again. A line cut short by a crash
//! is dropped; a journal that cannot be read at all is renamed aside (never deleted) and the
//! run goes on from the cache. A run that finishes all its work removes its journal.
//!
//! In batch mode (`embedding.mode: batch`) the journal also names each Batch API job the
//! moment it is created, with its texts ([`Journal::record_job`]), and each job whose results
//! are in the cache ([`Journal::record_collected`]): a run killed while its jobs run starts
//! again by re-attaching to them, never submitting a text twice.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::cache::{Cache, key};
use crate::embed::Space;
use crate::words::{ThemeResult, texts_of, usable_candidates};

/// The journal's file name inside the outputs directory.
pub(crate) const FILE_NAME: &str = "run_journal.jsonl";

const HEADER: &str = r#"{"puzzlegen_journal":1}"#;

/// The journal could not be written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write the run journal: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Entry {
    theme: String,
    /// Digest of the embedding space and the theme's usable candidates.
    inputs: String,
    ranked: Vec<(String, f32)>,
}

/// A Batch API job, as the journal names it. A job is known by `batch_job`, a display name
/// unique to it, written with its texts before the job is created; a second line gives the
/// API's name for it once created; a last one says it was collected. A run killed between
/// the create and the second line finds its job by display name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct JobLine {
    batch_job: String,
    /// The embedding space it embeds in (`model:dimension:task`).
    space: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    texts: Vec<String>,
    /// The API's name for it (`batches/...`), once created.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    /// Its results are in the cache, or it ended without any: nothing to wait for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    collected: bool,
}

/// A line of the journal after its header.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Line {
    Job(JobLine),
    Theme(Entry),
}

/// A Batch API job a run meant to create or created, and has not collected.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PendingJob {
    /// The display name given to the job (unique to it).
    pub(crate) display_name: String,
    /// The API's name, if the journal got to say it.
    pub(crate) name: Option<String>,
    pub(crate) texts: Vec<String>,
}

/// The Batch API jobs of `space` the journal at `path` names and has not collected, read
/// without changing the file (for `puzzlegen batch list` and `cancel`).
pub(crate) fn pending_jobs_in(path: &Path, space: &Space) -> Result<Vec<PendingJob>, String> {
    let (_, jobs) = read(path)?;
    Ok(jobs
        .into_iter()
        .filter(|j| j.space == space_name(space))
        .map(|j| PendingJob {
            display_name: j.batch_job,
            name: (!j.name.is_empty()).then_some(j.name),
            texts: j.texts,
        })
        .collect())
}

fn space_name(space: &Space) -> String {
    format!("{}:{}:{}", space.model_id, space.dimension, space.task_type)
}

/// An open journal and the results it held when opened.
pub(crate) struct Journal {
    path: PathBuf,
    file: Mutex<std::fs::File>,
    space: Space,
    finished: HashMap<String, Entry>,
    /// Jobs of earlier runs not collected yet, in creation order: those the journal named when
    /// opened, less those collected since.
    jobs: Mutex<Vec<PendingJob>>,
    /// Themes whose entry was found not to check out (said once each).
    told: Mutex<std::collections::HashSet<String>>,
}

/// The digest an entry is checked against: space, theme and usable candidates.
fn digest(space: &Space, theme: &str, words: &[&str]) -> String {
    // SipHash with fixed keys: stable for a given build; a digest that changes with a new
    // build only costs recomputing from the cache.
    let mut h = std::hash::DefaultHasher::new();
    (space, theme, words).hash(&mut h);
    format!("{:016x}", h.finish())
}

impl Journal {
    /// Opens the journal at `path`, keeping the results it holds. A damaged journal is renamed
    /// to `<path>.damaged-<unix time>` (with a warning) and a new one is started.
    pub(crate) fn open(path: &Path, space: &Space) -> Result<Journal, JournalError> {
        let err = |source| JournalError {
            path: path.to_owned(),
            source,
        };
        let (finished, jobs) = match read(path) {
            Ok((entries, jobs)) => (entries, jobs),
            Err(reason) => {
                let aside = aside_name(path);
                std::fs::rename(path, &aside).map_err(err)?;
                tracing::warn!(
                    "{}: {reason}; renamed to {} and continuing from the cache",
                    path.display(),
                    aside.display()
                );
                (HashMap::new(), Vec::new())
            }
        };
        let jobs: Vec<JobLine> = jobs
            .into_iter()
            .filter(|j| j.space == space_name(space))
            .collect();
        // Rewrite what was good (atomically), so appends never follow a torn line.
        crate::fsx::write_atomic(path, |w| {
            writeln!(w, "{HEADER}")?;
            for e in finished.values() {
                serde_json::to_writer(&mut *w, e)?;
                writeln!(w)?;
            }
            for j in &jobs {
                serde_json::to_writer(&mut *w, j)?;
                writeln!(w)?;
            }
            Ok(())
        })
        .map_err(|e| err(e.source))?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(err)?;
        Ok(Journal {
            path: path.to_owned(),
            file: Mutex::new(file),
            space: space.clone(),
            finished,
            jobs: Mutex::new(
                jobs.into_iter()
                    .map(|j| PendingJob {
                        display_name: j.batch_job,
                        name: (!j.name.is_empty()).then_some(j.name),
                        texts: j.texts,
                    })
                    .collect(),
            ),
            told: Mutex::default(),
        })
    }

    /// Where the journal is.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The Batch API jobs of earlier runs not collected yet (a round of a run collects them,
    /// and the next round does not see them again).
    pub(crate) fn pending_jobs(&self) -> Vec<PendingJob> {
        self.lock_jobs().clone()
    }

    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, Vec<PendingJob>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Says that a job named `display_name` is about to be created for `texts`.
    pub(crate) fn record_job_intent(
        &self,
        display_name: &str,
        texts: &[String],
    ) -> Result<(), JournalError> {
        self.append(&self.job_line(display_name, texts.to_vec(), "", false))
    }

    /// Gives the API's `name` of the job `display_name`, just created.
    pub(crate) fn record_job(&self, display_name: &str, name: &str) -> Result<(), JournalError> {
        if let Some(job) = self
            .lock_jobs()
            .iter_mut()
            .find(|j| j.display_name == display_name)
        {
            job.name = Some(name.to_owned());
        }
        self.append(&self.job_line(display_name, Vec::new(), name, false))
    }

    /// Says that job `display_name` needs no more waiting: its results are in the cache, it
    /// ended without them, or it was never created.
    pub(crate) fn record_collected(&self, display_name: &str) -> Result<(), JournalError> {
        self.lock_jobs().retain(|j| j.display_name != display_name);
        self.append(&self.job_line(display_name, Vec::new(), "", true))
    }

    fn job_line(
        &self,
        display_name: &str,
        texts: Vec<String>,
        name: &str,
        collected: bool,
    ) -> JobLine {
        JobLine {
            batch_job: display_name.to_owned(),
            space: space_name(&self.space),
            texts,
            name: name.to_owned(),
            collected,
        }
    }

    /// Appends one JSON line in one write: a crash leaves it whole or torn, never interleaved.
    fn append(&self, value: &impl Serialize) -> Result<(), JournalError> {
        let mut line = serde_json::to_vec(value).expect("a journal line is plain data");
        line.push(b'\n');
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write_all(&line)
            .map_err(|source| JournalError {
                path: self.path.clone(),
                source,
            })
    }

    /// How many results the journal held when opened.
    pub(crate) fn len(&self) -> usize {
        self.finished.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.finished.is_empty()
    }

    /// How many of the results held answer for this run: made in this embedding space from
    /// the usable candidates `candidates_of` gives their theme now.
    pub(crate) fn usable<'a>(&self, candidates_of: impl Fn(&str) -> Option<&'a [String]>) -> usize {
        self.finished
            .values()
            .filter(|e| {
                candidates_of(&e.theme).is_some_and(|c| self.answers(e, &usable_candidates(c)))
            })
            .count()
    }

    /// Whether `e` was made in this space from `words`.
    fn answers(&self, e: &Entry, words: &[String]) -> bool {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        e.inputs == digest(&self.space, &e.theme, &refs)
    }

    /// The result of `theme` if the journal holds it, made from the same `words` in this
    /// space, and every vector it needs is in `cache`. The scores are recomputed from those
    /// vectors: the journal only says which themes are done. An entry whose words or scores
    /// differ from the recomputed ones (a hand-edited journal) is not used: said once, and
    /// `None` (the theme is processed again).
    pub(crate) fn restore(
        &self,
        theme: &str,
        words: &[String],
        cache: &Cache,
    ) -> Option<ThemeResult> {
        let e = self.finished.get(theme)?;
        if !self.answers(e, words) {
            return None;
        }
        let keys: Vec<String> = texts_of(theme, words).iter().map(|t| key(t)).collect();
        let mut vectors = cache.get_many(&keys).into_iter();
        let vector = vectors.next()??;
        let scored = words
            .iter()
            .zip(vectors)
            .map(|(w, v)| Some((w.clone(), v?)))
            .collect::<Option<Vec<_>>>()?;
        let result = ThemeResult::rank(theme, vector, scored);
        if let Some(why) = disagreement(&e.ranked, &result) {
            let first = self
                .told
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(theme.to_owned());
            if first {
                tracing::warn!(
                    "{}: the entry of theme {theme:?} does not check out ({why}); the theme is \
                     processed again",
                    self.path.display()
                );
            }
            return None;
        }
        Some(result)
    }

    /// Appends a finished result (made from the usable candidates `words`).
    pub(crate) fn record(
        &self,
        result: &ThemeResult,
        words: &[String],
    ) -> Result<(), JournalError> {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        let entry = Entry {
            theme: result.theme.clone(),
            inputs: digest(&self.space, &result.theme, &refs),
            ranked: result
                .ranked
                .iter()
                .map(|w| (w.word.clone(), w.similarity))
                .collect(),
        };
        self.append(&entry)
    }

    /// Removes the journal: the run it belongs to is complete.
    pub(crate) fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(
                "{}: cannot remove the run journal: {e}",
                self.path.display()
            );
        }
    }
}

/// How a journalled ranking (`ranked`: word and similarity) differs from `result`, the one
/// recomputed from the cached vectors; `None` if it does not.
fn disagreement(ranked: &[(String, f32)], result: &ThemeResult) -> Option<String> {
    if ranked.len() != result.ranked.len() {
        return Some(format!(
            "{} word(s) journalled, {} usable candidate(s)",
            ranked.len(),
            result.ranked.len()
        ));
    }
    let distinct: std::collections::HashSet<&str> =
        ranked.iter().map(|(w, _)| w.as_str()).collect();
    if distinct.len() != ranked.len() {
        return Some("a word journalled twice".into());
    }
    let computed: HashMap<&str, f32> = result
        .ranked
        .iter()
        .map(|w| (w.word.as_str(), w.similarity))
        .collect();
    ranked
        .iter()
        .find_map(|(word, similarity)| match computed.get(word.as_str()) {
            None => Some(format!("{word:?} is not one of its candidates")),
            // The same vectors give the same cosine: any difference is an edit.
            Some(s) if (s - similarity).abs() > 1e-6 || !similarity.is_finite() => Some(format!(
                "similarity of {word:?}: {similarity} journalled, {s} from the cached vectors"
            )),
            Some(_) => None,
        })
}

fn aside_name(path: &Path) -> PathBuf {
    let secs = crate::clock::unix_secs();
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".damaged-{secs}"));
    PathBuf::from(name)
}

/// What a journal holds: finished themes, and Batch API jobs not collected.
type Read = (HashMap<String, Entry>, Vec<JobLine>);

/// The entries of the journal at `path` (none if there is no file), and its jobs not collected
/// (in creation order). A last line without its newline is a write cut short by a crash and is
/// dropped; anything else unreadable is damage.
fn read(path: &Path) -> Result<Read, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((HashMap::new(), Vec::new()));
        }
        Err(e) => return Err(format!("cannot read: {e}")),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut entries = HashMap::new();
    let mut jobs: Vec<JobLine> = Vec::new();
    let mut line = String::new();
    let mut number = 0;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("line {}: {e}", number + 1))?;
        if n == 0 {
            break;
        }
        number += 1;
        if !line.ends_with('\n') {
            tracing::debug!("run journal: dropping line {number}, cut short by a crash");
            break;
        }
        let text = line.trim_end();
        if number == 1 {
            if text != HEADER {
                return Err(format!("line 1: expected {HEADER}"));
            }
            continue;
        }
        match serde_json::from_str(text).map_err(|e| format!("line {number}: {e}"))? {
            Line::Theme(e) => {
                entries.insert(e.theme.clone(), e);
            }
            Line::Job(j) if j.collected => jobs.retain(|p| p.batch_job != j.batch_job),
            Line::Job(j) => match jobs.iter_mut().find(|p| p.batch_job == j.batch_job) {
                Some(known) if !j.name.is_empty() => known.name = j.name,
                Some(_) => {}
                None => jobs.push(j),
            },
        }
    }
    Ok((entries, jobs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::Vector;
    use crate::words::ScoredWord;

    fn space() -> Space {
        crate::embed::test_space(2)
    }

    fn result(cache: &Cache) -> (ThemeResult, Vec<String>) {
        let v = |a: f32| Vector::from(vec![a, 1.0]);
        let words = vec!["fork".to_owned(), "spoon".to_owned()];
        cache.insert_many(
            &["Cutlery".into(), "fork".into(), "spoon".into()],
            &[v(0.0), v(1.0), v(2.0)],
        );
        let r = ThemeResult::rank(
            "Cutlery",
            v(0.0),
            [("fork".to_owned(), v(1.0)), ("spoon".to_owned(), v(2.0))],
        );
        (r, words)
    }

    #[test]
    fn a_job_collected_is_pending_neither_in_this_run_nor_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run_journal.jsonl");
        let texts = |t: &str| vec![t.to_owned()];
        {
            let journal = Journal::open(&path, &space()).unwrap();
            journal.record_job_intent("a", &texts("one")).unwrap();
            journal.record_job("a", "batches/a").unwrap();
            journal.record_job_intent("b", &texts("two")).unwrap();
        }
        let journal = Journal::open(&path, &space()).unwrap();
        let names = |j: &Journal| -> Vec<(String, Option<String>)> {
            j.pending_jobs()
                .into_iter()
                .map(|p| (p.display_name, p.name))
                .collect()
        };
        assert_eq!(
            names(&journal),
            vec![("a".into(), Some("batches/a".into())), ("b".into(), None)]
        );
        // Found by display name, then collected: a later round does not see it again.
        journal.record_job("b", "batches/b").unwrap();
        journal.record_collected("a").unwrap();
        assert_eq!(
            names(&journal),
            vec![("b".into(), Some("batches/b".into()))]
        );
        drop(journal);
        let journal = Journal::open(&path, &space()).unwrap();
        assert_eq!(
            names(&journal),
            vec![("b".into(), Some("batches/b".into()))]
        );
    }

    #[test]
    fn results_survive_a_torn_last_line_and_only_answer_for_the_same_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let cache = Cache::in_memory(space());
        let (r, words) = result(&cache);
        let journal = Journal::open(&path, &space()).unwrap();
        journal.record(&r, &words).unwrap();
        drop(journal);
        // A crash in the middle of the next append.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"theme":"Bir"#).unwrap();
        let journal = Journal::open(&path, &space()).unwrap();
        assert_eq!(journal.len(), 1);
        let back = journal.restore("Cutlery", &words, &cache).unwrap();
        assert_eq!(back.scores(), r.scores());
        assert_eq!(back.ranked[0].word, "fork");
        assert_eq!(&*back.ranked[1].vector, &[2.0, 1.0]);
        let other_words = vec!["fork".to_owned(), "knife".to_owned()];
        assert!(journal.restore("Cutlery", &other_words, &cache).is_none());
        assert!(
            journal
                .restore("Cutlery", &words, &Cache::in_memory(space()))
                .is_none(),
            "vectors missing from the cache: recompute"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "torn line gone: {text}");
    }

    #[test]
    fn an_entry_that_does_not_match_its_recomputed_scores_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let cache = Cache::in_memory(space());
        let (r, words) = result(&cache);
        let entry = |ranked: &[(&str, f32)]| {
            let mut edited = r.clone();
            edited.ranked = ranked
                .iter()
                .map(|&(word, similarity)| ScoredWord {
                    word: word.into(),
                    similarity,
                    vector: r.ranked[0].vector.clone(),
                })
                .collect();
            edited
        };
        let (fork, spoon) = (r.ranked[0].similarity, r.ranked[1].similarity);
        for (ranked, why) in [
            (vec![("fork", 5.0), ("spoon", spoon)], "5.0 similarity"),
            (vec![("fork", fork)], "cut to one word"),
            (vec![("fork", fork), ("fork", fork)], "a word twice"),
            (vec![("fork", fork), ("knife", spoon)], "another word"),
        ] {
            let journal = Journal::open(&path, &space()).unwrap();
            journal.record(&entry(&ranked), &words).unwrap();
            drop(journal);
            let journal = Journal::open(&path, &space()).unwrap();
            assert!(
                journal.restore("Cutlery", &words, &cache).is_none(),
                "{why}"
            );
        }
        let journal = Journal::open(&path, &space()).unwrap();
        journal.record(&r, &words).unwrap();
        drop(journal);
        let journal = Journal::open(&path, &space()).unwrap();
        assert!(
            journal.restore("Cutlery", &words, &cache).is_some(),
            "the true entry"
        );
    }

    #[test]
    fn a_damaged_journal_is_renamed_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "{\"puzzlegen_journal\":1}\nnot json\n{}\n").unwrap();
        let journal = Journal::open(&path, &space()).unwrap();
        assert!(journal.is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("run_journal.jsonl.damaged-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&aside[0])).unwrap(),
            "{\"puzzlegen_journal\":1}\nnot json\n{}\n"
        );
    }
}
