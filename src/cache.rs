//! The embedding cache: vectors already paid for, keyed by text within one embedding space.
//!
//! A cache belongs to exactly one [`Space`](crate::embed::Space) (model id, dimension, task
//! type), so vectors of one model never answer for another. This is the in-memory layer; it is
//! shared by every theme in flight.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::embed::{Space, Vector};

/// Texts to vectors for one embedding space, safe to share between tasks.
pub struct MemoryCache {
    space: Space,
    map: Mutex<HashMap<String, Vector>>,
}

impl MemoryCache {
    pub fn new(space: Space) -> MemoryCache {
        MemoryCache {
            space,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn space(&self) -> &Space {
        &self.space
    }

    /// The cached vector of each text, `None` where it is missing.
    pub fn get_many(&self, texts: &[String]) -> Vec<Option<Vector>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        texts.iter().map(|t| map.get(t).cloned()).collect()
    }

    /// Stores vectors for texts (same order).
    pub fn insert_many(&self, texts: &[String], vectors: &[Vector]) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        for (t, v) in texts.iter().zip(vectors) {
            map.insert(t.clone(), v.clone());
        }
    }
}
