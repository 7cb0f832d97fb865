//! Spare themes into failed slots: which slots failed, and which spare fills each.
//!
//! Pure functions over the plan's slots; the pipeline processes the spares and calls these
//! between rounds. Each spare is used at most once, slots are filled in plan order.

use crate::report::shapes::{Replacement, puzzle_key};

/// A slot of the plan: (index of the puzzle in the plan, index of the theme in the puzzle).
pub type Slot = (usize, usize);

/// The slots whose theme `failed`, in plan order.
pub fn failed_slots(slots: &[Vec<String>], failed: impl Fn(&str) -> bool) -> Vec<Slot> {
    slots
        .iter()
        .enumerate()
        .flat_map(|(p, themes)| {
            let failed = &failed;
            themes
                .iter()
                .enumerate()
                .filter(move |(_, t)| failed(t))
                .map(move |(s, _)| (p, s))
        })
        .collect()
}

/// Puts `spares` (processed successfully, in order) into the `failed` slots, one each, and
/// returns what was replaced. `puzzle_id` gives a puzzle's id from its index, `reason` why a
/// theme failed. Slots left over when the spares run out keep their failed theme.
pub fn fill_with_spares(
    slots: &mut [Vec<String>],
    failed: &[Slot],
    spares: impl IntoIterator<Item = String>,
    puzzle_id: impl Fn(usize) -> usize,
    reason: impl Fn(&str) -> String,
) -> Vec<Replacement> {
    failed
        .iter()
        .zip(spares)
        .map(|(&(p, s), spare)| {
            let failed = std::mem::replace(&mut slots[p][s], spare.clone());
            let reason = reason(&failed);
            let id = puzzle_id(p);
            tracing::info!(
                "{}: theme {failed:?} failed ({reason}); using spare theme {spare:?}",
                puzzle_key(id)
            );
            Replacement {
                puzzle_id: id,
                failed_theme: failed,
                reason,
                spare_theme: spare,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(puzzles: &[&[&str]]) -> Vec<Vec<String>> {
        puzzles
            .iter()
            .map(|p| p.iter().map(|t| t.to_string()).collect())
            .collect()
    }

    #[test]
    fn failed_slots_are_found_in_plan_order() {
        let s = slots(&[&["A", "X", "B"], &["X", "C", "Y"]]);
        let failed = failed_slots(&s, |t| t == "X" || t == "Y");
        assert_eq!(failed, vec![(0, 1), (1, 0), (1, 2)]);
        assert!(failed_slots(&s, |_| false).is_empty());
    }

    #[test]
    fn each_spare_fills_one_slot_in_order_and_the_rest_stay_failed() {
        let mut s = slots(&[&["A", "X", "B"], &["X", "C", "Y"]]);
        let failed = failed_slots(&s, |t| t == "X" || t == "Y");
        let replaced = fill_with_spares(
            &mut s,
            &failed,
            ["S1".to_string(), "S2".to_string()],
            |p| p + 10,
            |t| format!("{t} broke"),
        );
        assert_eq!(s, slots(&[&["A", "S1", "B"], &["S2", "C", "Y"]]));
        let got: Vec<(usize, &str, &str, &str)> = replaced
            .iter()
            .map(|r| {
                (
                    r.puzzle_id,
                    r.failed_theme.as_str(),
                    r.reason.as_str(),
                    r.spare_theme.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![(10, "X", "X broke", "S1"), (11, "X", "X broke", "S2")]
        );
        // The slot left over is still failed: the next round finds it.
        assert_eq!(failed_slots(&s, |t| t == "X" || t == "Y"), vec![(1, 2)]);
    }

    #[test]
    fn more_spares_than_slots_leaves_the_extra_spares_unused() {
        let mut s = slots(&[&["X"]]);
        let replaced = fill_with_spares(
            &mut s,
            &[(0, 0)],
            ["S1".to_string(), "S2".to_string()],
            |p| p,
            |_| String::new(),
        );
        assert_eq!(replaced.len(), 1);
        assert_eq!(s, slots(&[&["S1"]]));
    }
}
