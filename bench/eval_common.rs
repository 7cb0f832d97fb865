//! What the evaluation benches (`placement.rs`, `design.rs`) share: every text of a set
//! embedded once with the local model, and a puzzle's themes scored as a run scores them (each
//! group name a theme, every word of the puzzle a candidate of every theme).

use std::collections::HashMap;

use puzzlegen::embed::local::LocalModel;
use puzzlegen::embed::{Vector, cosine};
use puzzlegen::words::{ScoredWord, ThemeResult};

/// Embeds each distinct text once.
pub fn embed_all<'a>(
    model: &LocalModel,
    texts: impl Iterator<Item = &'a String>,
) -> HashMap<String, Vector> {
    let mut texts: Vec<String> = texts.cloned().collect();
    texts.sort();
    texts.dedup();
    let mut vectors = HashMap::new();
    for chunk in texts.chunks(256) {
        let embedded = model.embed_blocking(chunk).expect("local model embeds");
        for (t, v) in chunk.iter().zip(embedded) {
            vectors.insert(t.clone(), Vector::from(v));
        }
    }
    vectors
}

/// One theme per `(name, words)` group, every word of all groups its candidate, best first.
pub fn themes<'a>(
    groups: impl Iterator<Item = (&'a String, &'a [String])> + Clone,
    vectors: &HashMap<String, Vector>,
) -> Vec<ThemeResult> {
    let words: Vec<&String> = groups.clone().flat_map(|(_, w)| w).collect();
    groups
        .map(|(name, _)| {
            let theme_vector = vectors[name].clone();
            let mut ranked: Vec<ScoredWord> = words
                .iter()
                .map(|w| ScoredWord {
                    word: (*w).clone(),
                    similarity: cosine(&theme_vector, &vectors[*w]),
                    vector: vectors[*w].clone(),
                })
                .collect();
            ranked.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
            ThemeResult {
                theme: name.clone(),
                vector: theme_vector,
                ranked,
            }
        })
        .collect()
}
