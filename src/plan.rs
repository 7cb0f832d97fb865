//! Planning: which theme fills which slot of which puzzle.
//!
//! As the original `TaskGenerator`: `total_puzzle_count x themes_per_puzzle` slots filled from
//! the theme list in order, cycling through it when there are too few themes. Themes left over
//! are kept as spares, used by the assembly step to replace a theme that failed.

/// One puzzle's planned themes, in slot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedPuzzle {
    pub id: usize,
    pub themes: Vec<String>,
}

/// The whole plan of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub puzzles: Vec<PlannedPuzzle>,
    /// Themes not placed in any puzzle, in input order: replacements for failed themes.
    pub spares: Vec<String>,
    pub themes_needed: usize,
    pub themes_available: usize,
}

/// Why no plan can be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "{available} distinct theme(s) given but a puzzle needs {per_puzzle} different themes \
         (puzzle_generation.themes_per_puzzle)"
    )]
    TooFewThemes { available: usize, per_puzzle: usize },
    #[error(
        "puzzle_generation.total_puzzle_count: expected at most {largest} with {per_puzzle} \
         themes per puzzle (a run plans at most 10000000 theme slots), got {puzzles}"
    )]
    TooManySlots {
        puzzles: usize,
        per_puzzle: usize,
        largest: usize,
    },
    #[error("planning stopped: the run was told to stop")]
    Cancelled,
}

/// How many puzzles are planned between two looks at the cancellation flag.
const CANCEL_CHECK_EVERY: usize = 4096;

impl Plan {
    /// Fills `puzzles x per_puzzle` slots from `themes`, cycling when there are too few.
    pub fn new(themes: &[String], puzzles: usize, per_puzzle: usize) -> Result<Plan, PlanError> {
        Self::new_until(themes, puzzles, per_puzzle, || false)
    }

    /// As [`Plan::new`], giving up with [`PlanError::Cancelled`] as soon as `cancelled` says so
    /// (asked every few thousand puzzles, so a signal is honoured within milliseconds even for
    /// millions of slots).
    pub fn new_until(
        themes: &[String],
        puzzles: usize,
        per_puzzle: usize,
        cancelled: impl Fn() -> bool,
    ) -> Result<Plan, PlanError> {
        if themes.len() < per_puzzle {
            return Err(PlanError::TooFewThemes {
                available: themes.len(),
                per_puzzle,
            });
        }
        Self::cycling(themes, puzzles, per_puzzle, cancelled)
    }

    /// As [`Plan::new`], but fewer distinct themes than a puzzle needs are cycled through
    /// within a puzzle too (as the original `TaskGenerator` does): the Python API's
    /// `process_themes` on two themes. Such puzzles usually fail at assembly, with a reason.
    pub fn repeating(themes: &[String], puzzles: usize, per_puzzle: usize) -> Plan {
        match themes {
            [] => Plan {
                puzzles: Vec::new(),
                spares: Vec::new(),
                themes_needed: puzzles * per_puzzle,
                themes_available: 0,
            },
            _ => Self::cycling(themes, puzzles, per_puzzle, || false).expect("never cancelled"),
        }
    }

    /// `puzzles` puzzles of `per_puzzle` slots filled from `themes` in order, cycling; themes
    /// not placed are spares. `themes` must not be empty.
    fn cycling(
        themes: &[String],
        puzzles: usize,
        per_puzzle: usize,
        cancelled: impl Fn() -> bool,
    ) -> Result<Plan, PlanError> {
        let needed = puzzles * per_puzzle;
        let mut planned = Vec::with_capacity(puzzles);
        for p in 0..puzzles {
            if p.is_multiple_of(CANCEL_CHECK_EVERY) && cancelled() {
                return Err(PlanError::Cancelled);
            }
            planned.push(PlannedPuzzle {
                id: p + 1,
                themes: (0..per_puzzle)
                    .map(|t| themes[(p * per_puzzle + t) % themes.len()].clone())
                    .collect(),
            });
        }
        let spares = themes.iter().skip(needed).cloned().collect();
        Ok(Plan {
            puzzles: planned,
            spares,
            themes_needed: needed,
            themes_available: themes.len(),
        })
    }

    /// How many of the planned puzzles differ (in their themes, in order): cycling through too
    /// few themes plans the same puzzle again and again.
    pub fn distinct_puzzles(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        self.puzzles
            .iter()
            .filter(|p| seen.insert(&p.themes[..]))
            .count()
    }

    /// True when themes had to be used more than once to fill every slot.
    pub fn themes_reused(&self) -> bool {
        self.themes_needed > self.themes_available
    }

    /// Distinct planned themes in first-use order: each is processed once, however often used.
    pub fn distinct_themes(&self) -> Vec<String> {
        // Slots are filled cycling through the (distinct) themes in order, so the first
        // `min(needed, available)` slots hold each planned theme once: no pass over millions.
        self.puzzles
            .iter()
            .flat_map(|p| p.themes.iter())
            .take(self.themes_needed.min(self.themes_available))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn fills_slots_in_order_and_keeps_spares() {
        let p = Plan::new(&names(10), 2, 4).unwrap();
        assert_eq!(p.puzzles[0].themes, ["t0", "t1", "t2", "t3"]);
        assert_eq!(p.puzzles[1].id, 2);
        assert_eq!(p.puzzles[1].themes, ["t4", "t5", "t6", "t7"]);
        assert_eq!(p.spares, ["t8", "t9"]);
        assert!(!p.themes_reused());
    }

    #[test]
    fn repeated_puzzles_are_counted_once() {
        let themes: Vec<String> = (0..32).map(|i| format!("t{i}")).collect();
        // The original's params: 80 puzzles of 4 from 32 themes are 8 puzzles, 10 times each.
        assert_eq!(Plan::new(&themes, 80, 4).unwrap().distinct_puzzles(), 8);
        assert_eq!(Plan::new(&themes, 8, 4).unwrap().distinct_puzzles(), 8);
        // 30 themes do not divide into fours: the cycle shifts, every puzzle differs.
        assert_eq!(
            Plan::new(&themes[..30], 15, 4).unwrap().distinct_puzzles(),
            15
        );
    }

    #[test]
    fn cycles_when_too_few_and_never_repeats_within_a_puzzle() {
        let p = Plan::new(&names(5), 3, 4).unwrap();
        assert!(p.themes_reused());
        assert!(p.spares.is_empty());
        assert_eq!(p.puzzles[1].themes, ["t4", "t0", "t1", "t2"]);
        for puzzle in &p.puzzles {
            let set: std::collections::HashSet<_> = puzzle.themes.iter().collect();
            assert_eq!(set.len(), 4);
        }
        assert_eq!(p.distinct_themes().len(), 5);
    }

    #[test]
    fn distinct_themes_in_first_use_order() {
        assert_eq!(
            Plan::new(&names(10), 2, 4).unwrap().distinct_themes().len(),
            8
        );
        assert_eq!(
            Plan::new(&names(6), 3, 4).unwrap().distinct_themes(),
            names(6)
        );
    }

    #[test]
    fn planning_stops_when_cancelled() {
        let calls = std::cell::Cell::new(0);
        let e = Plan::new_until(&names(4), 1_000_000, 4, || {
            calls.set(calls.get() + 1);
            calls.get() > 2
        })
        .unwrap_err();
        assert_eq!(e, PlanError::Cancelled);
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn fewer_themes_than_a_puzzle_needs_is_an_error() {
        assert_eq!(
            Plan::new(&names(3), 1, 4).unwrap_err(),
            PlanError::TooFewThemes {
                available: 3,
                per_puzzle: 4
            }
        );
    }

    #[test]
    fn repeating_cycles_within_a_puzzle_when_themes_are_few() {
        let themes = vec!["A".to_string(), "B".to_string()];
        assert!(matches!(
            Plan::new(&themes, 2, 4),
            Err(PlanError::TooFewThemes { .. })
        ));
        let plan = Plan::repeating(&themes, 2, 4);
        assert_eq!(plan.puzzles.len(), 2);
        assert_eq!(plan.puzzles[0].themes, ["A", "B", "A", "B"]);
        assert_eq!(plan.distinct_themes(), ["A", "B"]);
        assert!(Plan::repeating(&[], 2, 4).puzzles.is_empty());
    }
}
