//! How files reach the disk: staged complete, then put in place, alone or as a set. The bottom
//! layer: it knows nothing of the rest of the crate.
//!
//! - A target that is a regular file, or none yet, is written to a temporary file in the same
//!   directory (named [`TEMP_PREFIX`]`...`), synced, and renamed over the target only when
//!   [`Staged::commit`] is called. [`commit_all`] commits a set after every member is staged,
//!   so a failure while staging (a full disk) leaves every old file as it was and no temporary
//!   file behind.
//! - A symlink is followed: its final target is replaced and the link stays a link; a dangling
//!   link gets its target created.
//! - A target that is not a regular file (character or block device, FIFO, socket, an open
//!   descriptor such as `/dev/fd/3`) is written through in place when staged, never replaced.
//! - `remove_stale_in` removes temporary files a killed run left (a live temporary file is
//!   held locked with `flock`, so a run never removes another's).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Writing a file failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write: {source}")]
pub struct WriteError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// Name prefix of every temporary file this tool writes next to an output.
pub const TEMP_PREFIX: &str = ".puzzlegen-tmp-";

/// Where an output goes once symlinks are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A regular file or nothing yet: replaced by a rename.
    Replace(PathBuf),
    /// A device, FIFO, socket or open descriptor: opened and written in place.
    Through(PathBuf),
}

/// Follows `path` (symlinks, up to 40) to what is to be written.
pub(crate) fn resolve_target(path: &Path) -> std::io::Result<Target> {
    let mut cur = path.to_path_buf();
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&cur) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Replace(cur)),
            Err(e) => return Err(e),
            Ok(m) => m,
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            // Links in /proc (/dev/fd/N, /dev/stdout) name open descriptors, not paths.
            if parent(&cur)
                .canonicalize()
                .is_ok_and(|d| d.starts_with("/proc"))
            {
                return Ok(Target::Through(cur));
            }
            let link = std::fs::read_link(&cur)?;
            cur = if link.is_absolute() {
                link
            } else {
                parent(&cur).join(link)
            };
            continue;
        }
        if kind.is_file() {
            return Ok(Target::Replace(cur));
        }
        if kind.is_dir() {
            return Err(std::io::Error::other("is a directory"));
        }
        return Ok(Target::Through(cur));
    }
    Err(std::io::Error::other("too many levels of symbolic links"))
}

pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Creates `dir` and its parents; a dangling symlink on the way gets its target created (rather
/// than failing with "File exists").
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::create_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => match resolve_target(dir) {
            Ok(Target::Replace(target)) if target != dir && !target.exists() => {
                std::fs::create_dir_all(target)
            }
            _ => Err(e),
        },
        r => r,
    }
}

/// A temporary file of ours, removed when dropped unless renamed into place. It is held
/// locked (`flock`) while it lives, so that [`remove_stale_in`] in another run never removes
/// it: only the files of a run that died are unlocked.
#[derive(Debug)]
struct TempFile {
    path: Option<PathBuf>,
    lock: Option<std::fs::File>,
}

impl TempFile {
    fn path(&self) -> &Path {
        self.path.as_deref().expect("a live temporary file")
    }
    /// Put in place: no longer ours to remove.
    fn disarm(mut self) {
        self.path = None;
    }
    /// The same file, renamed to `to` (the lock goes with it).
    fn moved_to(mut self, to: PathBuf) -> TempFile {
        self.path = None;
        TempFile {
            path: Some(to),
            lock: self.lock.take(),
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// An output written complete, not yet in place (see the module documentation).
#[derive(Debug)]
#[must_use = "a staged output is removed unless committed"]
pub struct Staged {
    /// The path as given (named in messages and returned by [`commit`](Self::commit)).
    path: PathBuf,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Complete and synced in `tmp`, to be renamed to `dest`.
    Temp { tmp: TempFile, dest: PathBuf },
    /// Written through in place already (a device, FIFO, descriptor).
    Written,
}

fn error(path: &Path) -> impl Fn(std::io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.to_owned(),
        source,
    }
}

/// Writes `path` complete with `fill`: to a synced temporary file next to its target if that
/// is a regular file (or none yet), in place if it is a device, FIFO or descriptor. Nothing
/// replaces the old file until [`Staged::commit`]; on failure nothing is left behind.
pub fn stage(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<Staged, WriteError> {
    stage_until(path, &|| false, fill)
}

/// Asked now and then while an output is written (every [`ABORT_CHECK_BYTES`]): true gives
/// the write up ([`WriteError::is_abandoned`]), leaving nothing behind and nothing replaced.
pub type Abort<'a> = &'a (dyn Fn() -> bool + Sync);

/// How many bytes are written between two questions to an [`Abort`].
pub const ABORT_CHECK_BYTES: usize = 1 << 16;

/// Why a write was given up (the source of an abandoned [`WriteError`]).
#[derive(Debug, thiserror::Error)]
#[error("given up: the run was told to stop")]
pub struct Abandoned;

impl WriteError {
    /// True when the write was given up by its [`Abort`], not failed.
    pub fn is_abandoned(&self) -> bool {
        self.source.get_ref().is_some_and(|e| e.is::<Abandoned>())
    }
}

/// A writer that asks `abort` every [`ABORT_CHECK_BYTES`] and fails with [`Abandoned`] on yes.
struct Abortable<'a> {
    inner: &'a mut dyn Write,
    abort: Abort<'a>,
    unchecked: usize,
}

impl Write for Abortable<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.unchecked += buf.len();
        if self.unchecked >= ABORT_CHECK_BYTES {
            self.unchecked = 0;
            if (self.abort)() {
                return Err(std::io::Error::other(Abandoned));
            }
        }
        self.inner.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// As [`stage`], giving the write up as soon as `abort` says so.
pub fn stage_until(
    path: &Path,
    abort: Abort,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<Staged, WriteError> {
    let fill = |w: &mut dyn Write| {
        fill(&mut Abortable {
            inner: w,
            abort,
            unchecked: 0,
        })
    };
    let err = error(path);
    match resolve_target(path).map_err(&err)? {
        Target::Through(target) => {
            use std::os::unix::fs::FileTypeExt;
            let socket = std::fs::metadata(&target).is_ok_and(|m| m.file_type().is_socket());
            // A socket is connected to (it cannot be opened); anything else opened for writing.
            let out: Box<dyn Write> = if socket {
                Box::new(std::os::unix::net::UnixStream::connect(&target).map_err(&err)?)
            } else {
                Box::new(
                    std::fs::OpenOptions::new()
                        .write(true)
                        .truncate(true)
                        .open(&target)
                        .map_err(&err)?,
                )
            };
            let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
            fill(&mut w).map_err(&err)?;
            w.flush().map_err(&err)?;
            Ok(Staged {
                path: path.to_owned(),
                state: State::Written,
            })
        }
        Target::Replace(dest) => {
            let tmp = fill_temp(&dest, fill).map_err(&err)?;
            Ok(Staged {
                path: path.to_owned(),
                state: State::Temp { tmp, dest },
            })
        }
    }
}

/// A complete, synced temporary file next to `dest`, with `dest`'s mode if it exists.
fn fill_temp(
    dest: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<TempFile> {
    let dir = parent(dest);
    ensure_dir(dir)?;
    let named = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .permissions(new_file_permissions())
        .tempfile_in(dir)?;
    let (mut file, tmp) = named.keep().map_err(|e| e.error)?;
    file.lock()?;
    let tmp = TempFile {
        path: Some(tmp),
        lock: file.try_clone().ok(),
    };
    // A replaced file keeps its mode (set explicitly: the umask does not apply).
    if let Ok(old) = std::fs::metadata(dest) {
        file.set_permissions(old.permissions())?;
    }
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        fill(&mut w)?;
        w.flush()?;
    }
    file.sync_all()?;
    Ok(tmp)
}

/// The mode an ordinary new file gets: 0666, less the umask (applied by the kernel).
fn new_file_permissions() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o666)
}

impl Staged {
    /// The path this output was staged for.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the file in place (a rename over its target); returns the path as given.
    pub fn commit(self) -> Result<PathBuf, WriteError> {
        match self.state {
            State::Written => Ok(self.path),
            State::Temp { tmp, dest } => {
                std::fs::rename(tmp.path(), &dest).map_err(error(&self.path))?;
                tmp.disarm();
                // The rename itself is made durable (best effort).
                if let Ok(d) = std::fs::File::open(parent(&dest)) {
                    let _ = d.sync_all();
                }
                Ok(self.path)
            }
        }
    }

    /// The same content, to be committed at `path` instead (moved next to its new target, or
    /// copied there across file systems). An output already written through stays where it is.
    pub fn retarget(self, path: &Path) -> Result<Staged, WriteError> {
        let State::Temp { tmp, .. } = self.state else {
            return Ok(self);
        };
        let err = error(path);
        match resolve_target(path).map_err(&err)? {
            Target::Through(_) => {
                let mut from = std::fs::File::open(tmp.path()).map_err(&err)?;
                stage(path, |w| std::io::copy(&mut from, w).map(|_| ()))
            }
            Target::Replace(dest) => {
                let dir = parent(&dest);
                ensure_dir(dir).map_err(&err)?;
                let moved = tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .make_in(dir, |p| std::fs::rename(tmp.path(), p));
                let tmp = match moved {
                    Ok(p) => {
                        let p = p.into_temp_path().keep().map_err(|e| err(e.error))?;
                        tmp.moved_to(p)
                    }
                    // Another file system: copied.
                    Err(e) if e.raw_os_error() == Some(18) => {
                        let mut from = std::fs::File::open(tmp.path()).map_err(&err)?;
                        fill_temp(&dest, |w| std::io::copy(&mut from, w).map(|_| ()))
                            .map_err(&err)?
                    }
                    Err(e) => return Err(err(e)),
                };
                Ok(Staged {
                    path: path.to_owned(),
                    state: State::Temp { tmp, dest },
                })
            }
        }
    }
}

/// Puts a staged set in place, one rename after another (renames need no space, so once every
/// member is staged they do not fail for a full disk). Returns the paths as given.
pub fn commit_all(set: Vec<Staged>) -> Result<Vec<PathBuf>, WriteError> {
    // On an error, the members not yet committed are dropped: their temporary files removed.
    set.into_iter().map(Staged::commit).collect()
}

/// Writes `path` through a temporary file in the same directory, renamed into place at the end
/// (a device, FIFO or descriptor is written in place; a symlink's target is replaced).
pub fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<(), WriteError> {
    stage(path, fill)?.commit().map(|_| ())
}

/// What a file is, for telling whether two paths name the same file.
#[derive(Debug, PartialEq, Eq)]
enum Identity {
    /// An existing file: its device and inode.
    Node(u64, u64),
    /// No file yet: where it would be, with its directory's symlinks resolved.
    Path(PathBuf),
}

fn identity(path: &Path) -> Option<Identity> {
    let target = match resolve_target(path).ok()? {
        Target::Replace(p) | Target::Through(p) => p,
    };
    match std::fs::metadata(&target) {
        Ok(m) => Some(Identity::Node(m.dev(), m.ino())),
        Err(_) => Some(Identity::Path(normalize(&target))),
    }
}

/// `path` made absolute, its longest existing ancestor's symlinks resolved and the rest's `.`
/// and `..` applied (a path that does not exist yet cannot be canonicalized as a whole).
fn normalize(path: &Path) -> PathBuf {
    let absolute = std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_owned());
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    let mut base = loop {
        if let Ok(c) = existing.canonicalize() {
            break c;
        }
        match (existing.parent(), existing.file_name()) {
            (Some(up), Some(name)) => {
                rest.push(name.to_owned());
                existing = up;
            }
            _ => break existing.to_owned(),
        }
    };
    for name in rest.iter().rev() {
        match name.to_str() {
            Some(".") => {}
            Some("..") => {
                base.pop();
            }
            _ => base.push(name),
        }
    }
    base
}

/// True when `a` and `b` name the same file (same device and inode, or the same place once
/// symlinks are followed).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (identity(a), identity(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// True when writing `path` would replace a file (it is a regular file or none yet), rather
/// than write through a device, FIFO or descriptor.
pub(crate) fn replaces(path: &Path) -> bool {
    matches!(resolve_target(path), Ok(Target::Replace(_)))
}

/// Removes the temporary files of ours in `dir` that no live process holds locked.
pub(crate) fn remove_stale_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let ours = e.file_name().to_str().is_some_and(is_our_temp);
        if !ours || !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        // Locked: another run is writing it right now.
        let Ok(f) = std::fs::File::open(e.path()) else {
            continue;
        };
        if f.try_lock().is_ok() && std::fs::remove_file(e.path()).is_ok() {
            tracing::info!(
                "removed {}, left by an earlier run that was killed",
                e.path().display()
            );
            removed += 1;
        }
    }
    removed
}

/// A temporary file name of ours: [`TEMP_PREFIX`]`...`, or `.puzzlegen-` and six letters and
/// digits (the names earlier versions used).
fn is_our_temp(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
        || name
            .strip_prefix(".puzzlegen-")
            .is_some_and(|rest| rest.len() == 6 && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// Why [`read_limited`] gave up.
#[derive(Debug)]
pub enum LimitedReadError {
    Io(std::io::Error),
    TooLarge,
}

/// Reads `path` whole, refusing (before reading, when the size is known, else after `limit + 1`
/// bytes) a file larger than `limit` bytes: `/dev/zero` or a huge file never fills memory.
pub fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, LimitedReadError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(LimitedReadError::Io)?;
    let meta = file.metadata().map_err(LimitedReadError::Io)?;
    if meta.is_file() && meta.len() > limit {
        return Err(LimitedReadError::TooLarge);
    }
    let mut bytes = Vec::with_capacity(if meta.is_file() {
        meta.len() as usize
    } else {
        0
    });
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(LimitedReadError::Io)?;
    if bytes.len() as u64 > limit {
        return Err(LimitedReadError::TooLarge);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_set_whose_member_fails_replaces_nothing_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.json");
        let b = d.path().join("b.json");
        std::fs::write(&a, "old a").unwrap();
        std::fs::write(&b, "old b").unwrap();
        let staged_a = stage(&a, |w| w.write_all(b"new a")).unwrap();
        let e = stage(&b, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(e.unwrap_err().to_string().contains("cannot write"));
        drop(staged_a);
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old a");
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "old b");
        assert_eq!(names(d.path()), ["a.json", "b.json"]);

        let set = vec![
            stage(&a, |w| w.write_all(b"new a")).unwrap(),
            stage(&b, |w| w.write_all(b"new b")).unwrap(),
        ];
        assert_eq!(commit_all(set).unwrap(), [a.clone(), b.clone()]);
        assert_eq!(std::fs::read_to_string(&b).unwrap(), "new b");
        assert_eq!(names(d.path()), ["a.json", "b.json"]);
    }

    #[test]
    fn symlinks_are_followed_and_kept() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.csv");
        std::fs::write(&real, "old").unwrap();
        let link = d.path().join("link.csv");
        std::os::unix::fs::symlink("real.csv", &link).unwrap();
        write_atomic(&link, |w| w.write_all(b"new")).unwrap();
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&real).unwrap(), "new");

        // Dangling: the target is created.
        let dangling = d.path().join("dangling.csv");
        std::os::unix::fs::symlink("sub/made.csv", &dangling).unwrap();
        write_atomic(&dangling, |w| w.write_all(b"made")).unwrap();
        assert!(
            dangling
                .symlink_metadata()
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("sub/made.csv")).unwrap(),
            "made"
        );
        assert!(same_file(&link, &real));
        assert!(!same_file(&link, &dangling));
    }

    #[test]
    fn only_our_temp_names_are_ours() {
        assert!(is_our_temp(".puzzlegen-tmp-Ab3xYz"));
        assert!(is_our_temp(".puzzlegen-Ab3xYz"));
        assert!(!is_our_temp(".puzzlegen-notes.txt"));
        assert!(!is_our_temp("puzzlegen-tmp-x"));
        assert!(!is_our_temp(".tmpAb3xYz"));
    }

    #[test]
    fn a_dangling_link_as_folder_gets_its_target_created() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        std::os::unix::fs::symlink("elsewhere/out", &out).unwrap();
        write_atomic(&out.join("f.json"), |w| w.write_all(b"{}")).unwrap();
        assert!(out.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(d.path().join("elsewhere/out/f.json").is_file());
    }

    #[test]
    fn stale_temps_go_and_live_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out.csv");
        let live = stage(&out, |w| w.write_all(b"new")).unwrap();
        std::fs::write(d.path().join(".puzzlegen-tmp-DEAD01"), "x").unwrap();
        assert_eq!(remove_stale_in(d.path()), 1);
        assert_eq!(names(d.path()).len(), 1, "the live temp file stays");
        let moved = live.retarget(&d.path().join("partial/out.csv")).unwrap();
        assert_eq!(
            remove_stale_in(&d.path().join("partial")),
            0,
            "still locked"
        );
        moved.commit().unwrap();
        assert_eq!(names(&d.path().join("partial")), ["out.csv"]);
        assert_eq!(names(d.path()), ["partial"]);
    }

    #[test]
    fn retarget_moves_a_staged_file_to_another_folder() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.csv");
        std::fs::write(&a, "old").unwrap();
        let other = d.path().join("partial/a.csv");
        let s = stage(&a, |w| w.write_all(b"new"))
            .unwrap()
            .retarget(&other)
            .unwrap();
        assert_eq!(names(d.path()), ["a.csv", "partial"]);
        assert_eq!(names(&d.path().join("partial")).len(), 1);
        s.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "old");
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "new");
        assert_eq!(names(&d.path().join("partial")), ["a.csv"]);
    }

    #[test]
    fn atomic_write_leaves_the_old_file_when_filling_fails() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.json");
        std::fs::write(&p, "old").unwrap();
        let e = write_atomic(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            1,
            "no temp file left"
        );
        write_atomic(&p, |w| w.write_all(b"new")).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
    }
}
