//! The blind solver: a puzzle's words without its theme names, split into groups the way the
//! embedding model sees them.
//!
//! The score of a partition is the sum, over its groups, of the pairwise cosine similarities of
//! the group's words. [`solve`] finds the best partition and the best one that differs from it
//! (the runner-up) exactly, by dynamic programming over the set of words still unplaced: the
//! group holding the lowest of them is chosen first (so every partition is met once: 2,627,625
//! of them for 4 x 4), and the two best splits of each set that remains are kept, so a set is
//! split once however it was reached (6,890 sets for 4 x 4, the last two groups read off
//! directly). The two best partitions of a set are among each first group's score plus one of
//! the two best splits of the rest.

use crate::embed::cosine;

/// Words a partition can hold: groups are bit masks over the words.
pub const MAX_WORDS: usize = 16;

/// A partition: one bit mask per group, over the words' positions, ordered by lowest bit.
pub type Partition = Vec<u16>;

/// The best partition and the runner-up, with their scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Solution {
    pub best: Partition,
    pub best_score: f32,
    /// The best partition other than `best` (`None` when there is only one partition).
    pub runner_up: Option<(Partition, f32)>,
}

/// Why a puzzle cannot be solved blind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SolveError {
    #[error("the blind solver handles up to {MAX_WORDS} words; this puzzle has {0}")]
    TooManyWords(usize),
    #[error("{words} words do not split into groups of {size}")]
    Uneven { words: usize, size: usize },
}

/// Pairwise similarities of `n` words, and every group's score by mask.
struct Table {
    n: usize,
    size: usize,
    sim: Vec<f32>,
    /// Score of each group of `size` words, by mask (other masks unused).
    score: Vec<f32>,
}

impl Table {
    fn new(vectors: &[&[f32]], size: usize) -> Table {
        let n = vectors.len();
        let mut sim = vec![0.0f32; n * n];
        for i in 0..n {
            for j in i + 1..n {
                let s = cosine(vectors[i], vectors[j]);
                sim[i * n + j] = s;
                sim[j * n + i] = s;
            }
        }
        let mut t = Table {
            n,
            size,
            sim,
            score: vec![0.0; 1 << n],
        };
        for_each_group(full(n), size, &mut |mask| {
            let s = t.pairs(mask);
            t.score[usize::from(mask)] = s;
        });
        t
    }

    /// Sum of the pairwise similarities within `mask`.
    fn pairs(&self, mask: u16) -> f32 {
        let mut s = 0.0;
        for i in bits(mask) {
            for j in bits(mask & !((2u32 << i) - 1) as u16) {
                s += self.sim[i * self.n + j];
            }
        }
        s
    }
}

/// The positions of the set bits of `mask`, lowest first.
fn bits(mask: u16) -> impl Iterator<Item = usize> {
    let mut m = mask;
    std::iter::from_fn(move || {
        (m != 0).then(|| {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            i
        })
    })
}

/// The mask of `n` words.
fn full(n: usize) -> u16 {
    ((1u32 << n) - 1) as u16
}

/// Finds the best partition of `vectors` into groups of `size` and the runner-up.
pub fn solve(vectors: &[&[f32]], size: usize) -> Result<Solution, SolveError> {
    let table = checked_table(vectors, size)?;
    let mut splits = Splits {
        table: &table,
        index: vec![0; 1 << table.n],
        known: vec![BestTwo::EMPTY],
    };
    let all = full(table.n);
    let top = splits.best_two(all);
    let mut found = top.ranked().map(|(rank, _)| {
        let mut path = Vec::with_capacity(table.n / size);
        splits.partition(all, rank, &mut path);
        // Summed group by group in path order, as [`solve_exhaustive`] sums.
        let score = path
            .iter()
            .fold(0.0, |acc, g| acc + table.score[usize::from(*g)]);
        (path, score)
    });
    let (best, best_score) = found.next().expect("at least one partition");
    Ok(Solution {
        best,
        best_score,
        runner_up: found.next(),
    })
}

/// The same answer as [`solve`] by visiting every partition: the reference the dynamic
/// programme is tested against and measured against (`cargo bench --bench design`).
pub fn solve_exhaustive(vectors: &[&[f32]], size: usize) -> Result<Solution, SolveError> {
    let table = checked_table(vectors, size)?;
    let mut search = Search {
        table: &table,
        top: Vec::with_capacity(2),
        path: Vec::with_capacity(table.n / size),
    };
    search.visit_all(full(table.n), 0.0);
    let mut top = search.top.into_iter();
    let (best, best_score) = top.next().expect("at least one partition");
    Ok(Solution {
        best,
        best_score,
        runner_up: top.next(),
    })
}

/// Checks the sizes and builds the table.
fn checked_table(vectors: &[&[f32]], size: usize) -> Result<Table, SolveError> {
    let n = vectors.len();
    if n > MAX_WORDS {
        return Err(SolveError::TooManyWords(n));
    }
    if size == 0 || n == 0 || !n.is_multiple_of(size) {
        return Err(SolveError::Uneven { words: n, size });
    }
    Ok(Table::new(vectors, size))
}

/// The two best splits of a set of words, best first: each a score, the group holding the
/// set's lowest word, and which split (0 or 1) of the rest follows it.
#[derive(Debug, Clone, Copy)]
struct BestTwo {
    entries: [(f32, u16, u8); 2],
    len: u8,
}

impl BestTwo {
    const EMPTY: BestTwo = BestTwo {
        entries: [(f32::NEG_INFINITY, 0, 0); 2],
        len: 0,
    };

    /// Keeps the split if it is among the two best so far (a tie keeps the earlier first).
    fn offer(&mut self, score: f32, group: u16, rest: u8) {
        let entry = (score, group, rest);
        if self.len == 0 || score > self.entries[0].0 {
            self.entries[1] = self.entries[0];
            self.entries[0] = entry;
        } else if self.len == 1 || score > self.entries[1].0 {
            self.entries[1] = entry;
        }
        self.len = (self.len + 1).min(2);
    }

    /// (rank, entry) of the splits kept.
    fn ranked(&self) -> impl Iterator<Item = (u8, (f32, u16, u8))> + '_ {
        (0..self.len).map(|r| (r, self.entries[usize::from(r)]))
    }
}

/// The dynamic programme of [`solve`]: the two best splits of each set of words met.
struct Splits<'a> {
    table: &'a Table,
    /// Per set (by mask): where its splits are in `known`, 0 for a set not met yet (zeroed
    /// memory: only the pages of the sets met are ever touched).
    index: Vec<u16>,
    /// The splits of the sets met, after a placeholder at 0.
    known: Vec<BestTwo>,
}

impl Splits<'_> {
    fn best_two(&mut self, rem: u16) -> BestTwo {
        let t = self.table;
        let words = rem.count_ones() as usize;
        let mut top = BestTwo::EMPTY;
        if words == t.size {
            top.offer(t.score[usize::from(rem)], rem, 0);
            return top;
        }
        let at = self.index[usize::from(rem)];
        if at != 0 {
            return self.known[usize::from(at)];
        }
        for_each_group_with_lowest(rem, t.size, |g| {
            let s = t.score[usize::from(g)];
            let rest = rem & !g;
            if words == 2 * t.size {
                top.offer(s + t.score[usize::from(rest)], g, 0);
                return;
            }
            let below = self.best_two(rest);
            for (rank, (score, _, _)) in below.ranked() {
                top.offer(s + score, g, rank);
            }
        });
        // At most C(15, 7) = 6,435 sets of one size are met: the index fits.
        self.index[usize::from(rem)] = u16::try_from(self.known.len()).expect("< 65,536 sets");
        self.known.push(top);
        top
    }

    /// Appends to `path` the groups of the split of `rem` ranked `rank` (0 best, 1 runner-up).
    fn partition(&mut self, rem: u16, rank: u8, path: &mut Vec<u16>) {
        if rem == 0 {
            return;
        }
        let (_, group, rest) = self.best_two(rem).entries[usize::from(rank)];
        path.push(group);
        self.partition(rem & !group, rest, path);
    }
}

/// Calls `f` with every group of `size` words of `rem` that holds the lowest word of `rem`
/// (no allocation: the other members run through their combinations in place).
fn for_each_group_with_lowest(rem: u16, size: usize, mut f: impl FnMut(u16)) {
    let low = rem & rem.wrapping_neg();
    let mut pos = [0u16; MAX_WORDS];
    let mut m = 0;
    let mut r = rem ^ low;
    while r != 0 {
        pos[m] = r & r.wrapping_neg();
        r &= r - 1;
        m += 1;
    }
    let k = size - 1;
    if k > m {
        return;
    }
    let mut idx = [0usize; MAX_WORDS];
    for (j, i) in idx[..k].iter_mut().enumerate() {
        *i = j;
    }
    loop {
        f(idx[..k].iter().fold(low, |g, &i| g | pos[i]));
        // The next combination: the rightmost index that can move does, the rest follow it.
        let Some(j) = (0..k).rev().find(|&j| idx[j] < m - k + j) else {
            return;
        };
        idx[j] += 1;
        for l in j + 1..k {
            idx[l] = idx[l - 1] + 1;
        }
    }
}

/// Calls `f` with every group of `size` words of `rem`.
fn for_each_group(rem: u16, size: usize, f: &mut impl FnMut(u16)) {
    fn rec(rest: u16, chosen: u16, left: usize, f: &mut impl FnMut(u16)) {
        if left == 0 {
            f(chosen);
            return;
        }
        let mut r = rest;
        while r != 0 {
            let bit = r & r.wrapping_neg();
            r &= r - 1;
            rec(r, chosen | bit, left - 1, f);
        }
    }
    rec(rem, 0, size, f);
}

struct Search<'a> {
    table: &'a Table,
    /// The two best partitions so far, best first.
    top: Vec<(Partition, f32)>,
    path: Vec<u16>,
}

impl Search<'_> {
    fn visit_all(&mut self, rem: u16, score: f32) {
        if rem == 0 {
            self.offer(score);
            return;
        }
        let t = self.table;
        for_each_group_with_lowest(rem, t.size, |g| {
            self.path.push(g);
            self.visit_all(rem & !g, score + t.score[usize::from(g)]);
            self.path.pop();
        });
    }

    fn offer(&mut self, score: f32) {
        let entry = (self.path.clone(), score);
        let at = self.top.iter().position(|(_, s)| score > *s);
        match at {
            Some(i) => {
                self.top.insert(i, entry);
                self.top.truncate(2);
            }
            None if self.top.len() < 2 => self.top.push(entry),
            None => {}
        }
    }
}

/// The blind solver's verdict on a puzzle whose intended groups are known.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Intended groups that the best partition reproduces exactly.
    pub groups_found: usize,
    /// The intended partition is the best one, strictly ahead of every other.
    pub unique: bool,
    /// Best partition's score minus the runner-up's (0 when there is no runner-up).
    pub gap: f32,
}

/// Judges `intended` (one mask per group) against the solver's answer.
pub fn verdict(solution: &Solution, intended: &[u16]) -> Verdict {
    let groups_found = solution
        .best
        .iter()
        .filter(|g| intended.contains(g))
        .count();
    let gap = solution
        .runner_up
        .as_ref()
        .map_or(0.0, |(_, s)| solution.best_score - s);
    Verdict {
        groups_found,
        unique: groups_found == intended.len() && (solution.runner_up.is_none() || gap > 0.0),
        gap,
    }
}

/// Masks of consecutive groups of `size` positions: the intended partition of a puzzle whose
/// words are listed group by group.
pub fn consecutive(groups: usize, size: usize) -> Vec<u16> {
    (0..groups)
        .map(|g| (((1u32 << size) - 1) << (g * size)) as u16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unit vectors: word `i` of group `g` leans on axis `g`, with a private axis for noise.
    fn clustered(groups: usize, size: usize, lean: f32) -> Vec<Vec<f32>> {
        let dims = groups + groups * size;
        (0..groups * size)
            .map(|i| {
                let mut v = vec![0.0; dims];
                v[i / size] = lean;
                v[groups + i] = 1.0;
                v
            })
            .collect()
    }

    fn refs(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(|x| x.as_slice()).collect()
    }

    /// Brute force over every partition, for comparison.
    fn brute(vectors: &[&[f32]], size: usize) -> Vec<(Partition, f32)> {
        let n = vectors.len();
        let mut all = Vec::new();
        fn rec(
            rem: u16,
            size: usize,
            path: &mut Vec<u16>,
            v: &[&[f32]],
            all: &mut Vec<(Partition, f32)>,
            score: f32,
        ) {
            if rem == 0 {
                all.push((path.clone(), score));
                return;
            }
            let low = rem & rem.wrapping_neg();
            let mut groups = Vec::new();
            for_each_group(rem & !low, size - 1, &mut |g| groups.push(low | g));
            for g in groups {
                let mut s = 0.0;
                for i in 0..16 {
                    for j in i + 1..16 {
                        if g >> i & 1 == 1 && g >> j & 1 == 1 {
                            s += cosine(v[i], v[j]);
                        }
                    }
                }
                path.push(g);
                rec(rem & !g, size, path, v, all, score + s);
                path.pop();
            }
        }
        rec(
            (1u16 << n) - 1,
            size,
            &mut Vec::new(),
            vectors,
            &mut all,
            0.0,
        );
        all.sort_by(|a, b| b.1.total_cmp(&a.1));
        all
    }

    #[test]
    fn clear_clusters_are_found_and_unique() {
        let v = clustered(4, 4, 2.0);
        let s = solve(&refs(&v), 4).unwrap();
        assert_eq!(s.best, consecutive(4, 4));
        let verdict = verdict(&s, &consecutive(4, 4));
        assert_eq!(verdict.groups_found, 4);
        assert!(verdict.unique);
        assert!(verdict.gap > 0.1, "{verdict:?}");
    }

    #[test]
    fn matches_brute_force_on_random_words() {
        // A small deterministic generator: no dependency for a test.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f32 / 1000.0 - 1.0
        };
        for (groups, size) in [(3, 3), (2, 4), (3, 4), (4, 2), (2, 2)] {
            let v: Vec<Vec<f32>> = (0..groups * size)
                .map(|_| (0..6).map(|_| next()).collect())
                .collect();
            let s = solve(&refs(&v), size).unwrap();
            let all = brute(&refs(&v), size);
            assert_eq!(s.best, all[0].0, "{groups}x{size}");
            assert!((s.best_score - all[0].1).abs() < 1e-4);
            let (runner, score) = s.runner_up.clone().unwrap();
            assert!((score - all[1].1).abs() < 1e-4, "{groups}x{size}");
            assert_ne!(runner, s.best);
        }
    }

    #[test]
    fn four_by_four_matches_the_exhaustive_search() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % 2000) as f32 / 1000.0 - 0.3
        };
        for lean in [0.0, 0.6] {
            // Words near four centres (more or less clearly), as real puzzles are.
            let v: Vec<Vec<f32>> = (0..16)
                .map(|i| {
                    let mut x: Vec<f32> = (0..8).map(|_| next()).collect();
                    x[i % 4] += lean * 3.0;
                    x
                })
                .collect();
            let fast = solve(&refs(&v), 4).unwrap();
            let all = solve_exhaustive(&refs(&v), 4).unwrap();
            assert_eq!(fast.best, all.best, "lean {lean}");
            assert_eq!(fast.runner_up, all.runner_up, "lean {lean}");
        }
    }

    #[test]
    fn a_planted_alternative_makes_the_puzzle_not_unique() {
        // Words 3 and 4 (last of group 0, first of group 1) swapped in meaning: the best
        // partition differs from the intended one in two groups.
        let mut v = clustered(4, 4, 2.0);
        v.swap(3, 4);
        let s = solve(&refs(&v), 4).unwrap();
        let verdict = verdict(&s, &consecutive(4, 4));
        assert_eq!(verdict.groups_found, 2);
        assert!(!verdict.unique);
    }

    #[test]
    fn a_tie_is_not_unique() {
        // Every word the same: every partition scores the same.
        let v = vec![vec![1.0, 0.0]; 8];
        let s = solve(&refs(&v), 4).unwrap();
        let verdict = verdict(&s, &consecutive(2, 4));
        assert_eq!(verdict.gap, 0.0);
        assert!(!verdict.unique);
    }

    #[test]
    fn sizes_it_cannot_handle_are_refused() {
        let v = vec![vec![1.0, 0.0]; 20];
        assert_eq!(
            solve(&refs(&v), 4).unwrap_err(),
            SolveError::TooManyWords(20)
        );
        assert_eq!(
            solve(&refs(&v[..10]), 4).unwrap_err(),
            SolveError::Uneven { words: 10, size: 4 }
        );
    }
}
