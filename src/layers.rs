//! The crate's layers, checked: every module may use only the modules below it, so there is no
//! import cycle and a run reads in one direction. A new module must be placed in [`LAYERS`].
//!
//! The check reads the `crate::<module>` paths of each file under `src/` (its test module
//! excluded: tests may use anything) and fails on any that points up or sideways.

use std::collections::BTreeSet;
use std::path::Path;

/// The modules, bottom first. Each may use only those before it.
#[rustfmt::skip]
const LAYERS: &[&str] = &[
    "clock",    // wall-clock time as UNIX seconds; nothing of ours
    "fsx",      // files written atomically, read with a cap; nothing of ours
    "text",     // text for messages
    "metrics",  // what the process counts for Prometheus, and /metrics
    "embed",    // providers and the embedding space
    "words",    // normalised words, the plural rule, scored results
    "limit",    // the request limiter
    "config",   // params.yaml
    "cache",    // vectors already paid for
    "distributed", // the limiter and cache tier shared through Redis
    "service",  // cache + limiter + retries in front of a provider
    "journal",  // finished themes of an interrupted run
    "theme",    // one theme: embed, score, rank
    "input",    // the themes and candidates files
    "plan",     // which theme in which slot
    "progress", // progress bars
    "engine",   // themes processed concurrently
    "assemble", // each puzzle's words
    "design",   // difficulty and the blind solver
    "report",   // the output files
    "pipeline", // the order of the steps
    "layers",   // this check
];

/// Every `from -> to` use between two different top-level modules, read from `src/`.
fn uses(src: &Path) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path != src.join("bin") {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let first = relative.components().next().unwrap().as_os_str();
            let module = Path::new(first).file_stem().unwrap().to_string_lossy();
            if module == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text
                .split("#[cfg(test)]\nmod tests")
                .next()
                .unwrap_or_default();
            for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let name: String = line[i + 7..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        found.insert((module.to_string(), name));
                    }
                }
            }
        }
    }
    found
}

/// The uses that break the layering: to a module not below, or from or to an unplaced one.
fn violations(uses: &BTreeSet<(String, String)>, layers: &[&str]) -> Vec<String> {
    let level = |m: &str| layers.iter().position(|l| *l == m);
    uses.iter()
        .filter_map(|(from, to)| match (level(from), level(to)) {
            (Some(f), Some(t)) if t < f => None,
            (Some(_), Some(_)) => Some(format!("{from} uses {to}, which is not below it")),
            (None, _) => Some(format!("{from} is not placed in LAYERS")),
            (_, None) => Some(format!("{to} (used by {from}) is not placed in LAYERS")),
        })
        .collect()
}

#[test]
fn every_module_uses_only_the_modules_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let uses = uses(&src);
    assert!(
        uses.contains(&("pipeline".into(), "report".into())),
        "the reader found no uses: {uses:?}"
    );
    let bad = violations(&uses, LAYERS);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn a_cycle_or_an_upward_use_is_caught() {
    let uses = |pairs: &[(&str, &str)]| -> BTreeSet<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    let layers = ["a", "b", "c"];
    assert!(violations(&uses(&[("b", "a"), ("c", "a"), ("c", "b")]), &layers).is_empty());
    // A cycle: one of its uses points up, whatever the order.
    let cycle = uses(&[("a", "b"), ("b", "c"), ("c", "a")]);
    assert_eq!(
        violations(&cycle, &layers),
        [
            "a uses b, which is not below it",
            "b uses c, which is not below it"
        ]
    );
    assert_eq!(
        violations(&uses(&[("d", "a")]), &layers),
        ["d is not placed in LAYERS"]
    );
}
