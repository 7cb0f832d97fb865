//! Refuses, before any work, a run whose outputs cannot fit on their disk.
//!
//! The puzzle CSV is by far the largest output: one row per group word and theme per puzzle,
//! each with every dimension written to `output.csv_precision` decimals (a 384-dimension model
//! writes about 74 KB per puzzle; 3072 dimensions about 590 KB). A run asked for millions of
//! puzzles would otherwise embed for hours and then fill the disk. The check uses a lower bound
//! of the size, so it never refuses a run that fits.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::text::Bytes;

/// The outputs would not fit in the free space of their disk.
#[derive(Debug, thiserror::Error)]
#[error(
    "{config}: puzzle_generation.total_puzzle_count is {puzzles}, whose puzzle CSV ({csv}) \
     needs at least {need} ({dimension} dimensions at output.csv_precision {precision}) but \
     {dir} has {free} free; at most {largest} puzzle(s) fit there (or lower \
     output.csv_precision, or point output.puzzle_embeddings_file at a larger disk)"
)]
pub struct SpaceError {
    pub config: String,
    pub csv: String,
    pub dir: String,
    pub puzzles: usize,
    pub largest: usize,
    pub dimension: usize,
    pub precision: usize,
    pub need: Bytes,
    pub free: Bytes,
}

/// The least number of bytes the puzzle CSV of one puzzle takes: every row holds `dimension`
/// numbers of at least `0.` plus `precision` digits and a separator.
pub fn min_csv_bytes_per_puzzle(config: &Config, dimension: usize) -> u64 {
    let p = &config.puzzle;
    let rows = p.themes_per_puzzle as u64 * (p.words_per_theme as u64 + 1);
    let per_number = config.output.csv_precision as u64 + 3;
    rows.saturating_mul(dimension as u64)
        .saturating_mul(per_number)
}

/// How many puzzles of `per_puzzle` bytes fit in `free` bytes.
pub(super) fn largest_that_fits(free: u64, per_puzzle: u64) -> usize {
    usize::try_from(free / per_puzzle.max(1)).unwrap_or(usize::MAX)
}

/// Refuses the run when the puzzle CSV cannot fit in the free space of its disk. A target that
/// is not a regular file (`/dev/null`, a FIFO) takes no space; a disk whose free space cannot
/// be read is not checked.
pub fn check_space(config: &Config, dimension: usize) -> Result<(), SpaceError> {
    let csv = &config.output.puzzle_embeddings_file;
    if std::fs::metadata(csv).is_ok_and(|m| !m.is_file()) {
        return Ok(());
    }
    let Some((dir, free)) = free_space(csv) else {
        return Ok(());
    };
    let per_puzzle = min_csv_bytes_per_puzzle(config, dimension);
    let puzzles = config.puzzle.total_puzzle_count;
    let need = per_puzzle.saturating_mul(puzzles as u64);
    if need <= free {
        return Ok(());
    }
    Err(SpaceError {
        config: config.source.display().to_string(),
        csv: csv.display().to_string(),
        dir: dir.display().to_string(),
        puzzles,
        largest: largest_that_fits(free, per_puzzle),
        dimension,
        precision: config.output.csv_precision,
        need: Bytes(need),
        free: Bytes(free),
    })
}

/// The nearest existing folder above `path` (the file's own folder may not exist yet) and the
/// bytes an unprivileged user may still write there.
fn free_space(path: &Path) -> Option<(PathBuf, u64)> {
    let absolute = std::env::current_dir().ok()?.join(path);
    let dir = absolute.ancestors().skip(1).find(|d| d.is_dir())?;
    let s = rustix::fs::statvfs(dir).ok()?;
    Some((dir.to_owned(), s.f_bavail.saturating_mul(s.f_frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_count_that_fits_is_the_floor() {
        assert_eq!(largest_that_fits(1000, 300), 3);
        assert_eq!(largest_that_fits(299, 300), 0);
        assert_eq!(largest_that_fits(5, 0), 5);
    }
}
