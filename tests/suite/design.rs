//! Puzzle design in a run's outputs: each puzzle's difficulty (scores, levels, colours) and the
//! blind solver's verdict in final_puzzles.json, their distribution in puzzle_metadata.json,
//! and sizes the solver cannot take said per puzzle.

use crate::common::{puzzlegen, read_json, repo_file, write_inputs, write_params};

const PLANETS: &[&str] = &["Mercury", "Venus", "Mars", "Jupiter", "Saturn", "Neptune"];
const BALLS: &[&str] = &["Foot", "Base", "Basket", "Snow", "Hand", "Meat"];
const UTENSILS: &[&str] = &["Spoon", "Fork", "Ladle", "Whisk", "Spatula", "Tongs"];
const CHESS: &[&str] = &["Rook", "Pawn", "Bishop", "Knight", "Queen", "King"];

fn themes() -> Vec<(&'static str, &'static [&'static str])> {
    vec![
        ("Planets", PLANETS),
        ("___ BALL", BALLS),
        ("Kitchen utensils", UTENSILS),
        ("Chess pieces", CHESS),
    ]
}

/// Writes `groups` as a run's inputs into `dir` with a params.yaml for `puzzles` puzzles whose
/// text `edit` changes, runs it, and returns the params.yaml and final_puzzles.json.
fn run_groups(
    dir: &std::path::Path,
    groups: &[(&str, &[&str])],
    puzzles: usize,
    edit: impl Fn(String) -> String,
) -> (std::path::PathBuf, serde_json::Value) {
    write_inputs(dir, groups);
    let params = write_params(dir, puzzles, "");
    std::fs::write(&params, edit(std::fs::read_to_string(&params).unwrap())).unwrap();
    puzzlegen(dir)
        .args(["run", "--config"])
        .arg(&params)
        .assert()
        .success();
    (params, read_json(&dir.join("out/final_puzzles.json")))
}

#[test]
fn every_puzzle_has_levels_colours_and_a_solver_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (_, finals) = run_groups(dir.path(), &themes(), 1, |y| y);
    let p = &finals["puzzle_1"];
    // The original's keys come first, in its order; the new ones after.
    let keys: Vec<&str> = p.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys[..5],
        [
            "words",
            "theme_similarity_scores",
            "themes",
            "all_candidates",
            "all_similarities"
        ]
    );
    let themes: Vec<&str> = p["themes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    assert_eq!(
        themes,
        ["Planets", "___ BALL", "Kitchen utensils", "Chess pieces"],
        "themes keep the input order"
    );
    let d = &p["difficulty"];
    let scores: Vec<f64> = d["scores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    let levels: Vec<u64> = d["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect();
    let colours: Vec<&str> = d["colours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let mut sorted = levels.clone();
    sorted.sort();
    assert_eq!(sorted, [0, 1, 2, 3], "levels are ranks: {levels:?}");
    for (a, b) in (0..4).flat_map(|a| (0..4).map(move |b| (a, b))) {
        if scores[a] < scores[b] {
            assert!(levels[a] < levels[b], "higher score, higher level: {d}");
        }
    }
    let names = ["yellow", "green", "blue", "purple"];
    for (l, c) in levels.iter().zip(&colours) {
        assert_eq!(names[*l as usize], *c);
    }
    assert_eq!(
        colours[1], "purple",
        "a blank in the theme name is wordplay: {d}"
    );
    let solver = &p["solver"];
    let found = solver["groups_found"].as_u64().unwrap();
    assert!(found <= 4);
    assert_eq!(
        solver["unique"].as_bool().unwrap(),
        found == 4 && solver["gap"].as_f64().unwrap() > 0.0
    );

    let meta = read_json(&dir.path().join("out/puzzle_metadata.json"));
    let md = &meta["difficulty"];
    assert_eq!(md["groups_per_level"], serde_json::json!([1, 1, 1, 1]));
    assert_eq!(md["score"]["count"], 4);
    assert_eq!(md["solver_puzzles"], 1);
    assert_eq!(
        md["solver_unique"].as_u64().unwrap(),
        u64::from(solver["unique"].as_bool().unwrap())
    );
}

#[test]
fn other_sizes_spread_levels_and_say_why_the_solver_did_not_run() {
    let dir = tempfile::tempdir().unwrap();
    // 4 themes x 5 words: 20 words, more than the blind solver takes.
    let (_, finals) = run_groups(dir.path(), &themes(), 1, |y| {
        y.replace("words_per_theme: 4", "words_per_theme: 5")
    });
    let p = &finals["puzzle_1"];
    assert_eq!(p["words"].as_array().unwrap().len(), 20);
    let reason = p["solver"]["not_computed"].as_str().unwrap();
    assert!(
        reason.contains("up to 16 words") && reason.contains("20"),
        "{reason}"
    );
    assert_eq!(p["difficulty"]["levels"].as_array().unwrap().len(), 4);

    // 3 themes x 3 words: 9 words, solved; levels spread from yellow to purple.
    let dir = tempfile::tempdir().unwrap();
    let (_, finals) = run_groups(dir.path(), &themes()[..3], 1, |y| {
        y.replace("words_per_theme: 4", "words_per_theme: 3")
            .replace("themes_per_puzzle: 4", "themes_per_puzzle: 3")
    });
    let p = &finals["puzzle_1"];
    let mut levels: Vec<u64> = p["difficulty"]["levels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_u64().unwrap())
        .collect();
    levels.sort();
    assert_eq!(levels, [0, 2, 3]);
    assert!(p["solver"]["groups_found"].as_u64().unwrap() <= 3);
}

#[test]
fn solve_agrees_with_the_run_and_refuses_bad_files_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (params, finals) = run_groups(dir.path(), &themes(), 2, |y| y);
    let finals_path = dir.path().join("out/final_puzzles.json");
    let out = puzzlegen(dir.path())
        .args(["solve", "--json", "--config"])
        .arg(&params)
        .arg(&finals_path)
        .assert()
        .success();
    let solved: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    for (key, p) in finals.as_object().unwrap() {
        let s = &solved[key];
        for field in ["groups_found", "unique", "gap"] {
            assert_eq!(s[field], p["solver"][field], "{key}.{field}");
        }
        let best: Vec<Vec<String>> = serde_json::from_value(s["best"].clone()).unwrap();
        assert_eq!(best.len(), 4);
        assert!(best.iter().all(|g| g.len() == 4));
    }

    // A plain list of puzzles, solved in text, with the local model and no config.
    let list = dir.path().join("list.json");
    std::fs::write(
        &list,
        r#"[["Mercury","Venus","Mars","Jupiter","Spoon","Fork","Ladle","Whisk",
             "Rook","Pawn","Bishop","Knight","Foot","Base","Basket","Snow"]]"#,
    )
    .unwrap();
    let model = crate::common::model_dir();
    let out = puzzlegen(dir.path())
        .args(["solve", "--model-dir"])
        .arg(&model)
        .arg(&list)
        .assert()
        .success();
    let text = String::from_utf8(out.get_output().stdout.clone()).unwrap();
    assert!(text.starts_with("puzzle 1: "), "{text}");
    assert!(text.contains("best split: "), "{text}");

    for (body, needle) in [
        ("[[\"a\",\n", "line 2"),
        (
            "{\"p\": {\"words\": [\"a\", 1]}}",
            "p.words: item 2: a number",
        ),
        ("[[\"a\",\"b\",\"c\"]]", "puzzle 1: 3 word(s)"),
    ] {
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, body).unwrap();
        let e = crate::common::assert_user_error(
            puzzlegen(dir.path()).args(["solve"]).arg(&bad),
            needle,
        );
        assert!(e.contains("bad.json"), "{e}");
    }
}

#[test]
fn red_herrings_and_one_solution_on_the_example() {
    let (finals, meta, page) = example_with("  require_unique: true\n  red_herrings: 2\n");
    assert_eq!(meta["puzzle_generation"]["require_unique"], true);
    assert_eq!(meta["puzzle_generation"]["red_herrings"], 2);
    let fewer: Vec<u64> = meta["red_herrings"]["puzzles_with_fewer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["puzzle_id"].as_u64().unwrap())
        .collect();
    let mut planted = 0;
    for (key, p) in finals.as_object().unwrap() {
        assert_eq!(p["solver"]["unique"], true, "{key}: one solution");
        let herrings = p["red_herrings"].as_array().unwrap();
        let id: u64 = key.strip_prefix("puzzle_").unwrap().parse().unwrap();
        assert_eq!(
            herrings.len() < 2,
            fewer.contains(&id),
            "{key}: fewer than asked is said in the metadata"
        );
        for h in herrings {
            let word = h["word"].as_str().unwrap();
            let at = p["words"]
                .as_array()
                .unwrap()
                .iter()
                .position(|w| w == word)
                .unwrap();
            assert_eq!(h["margin"], p["quality"]["word_margins"][at], "{key}: {h}");
            assert!(h["margin"].as_f64().unwrap() < 0.05, "{key}: {h}");
            let themes = p["themes"].as_array().unwrap();
            assert_eq!(h["group"], themes[at / 4]);
            assert!(themes.contains(&h["decoy_for"]) && h["decoy_for"] != h["group"]);
        }
        planted += herrings.len();
    }
    assert_eq!(meta["red_herrings"]["planted"], planted);
    assert!(planted >= 12, "most puzzles get their two: {planted}");
    assert_eq!(page.matches("red herring: pulls toward").count(), planted);
}

#[test]
fn wrong_values_for_the_design_keys_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), &themes());
    for (extra, needle) in [
        (
            "  red_herrings: 17\n",
            "puzzle_generation.red_herrings: expected an integer from 0 to 16",
        ),
        (
            "  red_herrings: -1\n",
            "puzzle_generation.red_herrings: expected an integer from 0 to 16",
        ),
        (
            "  require_unique: maybe\n",
            "puzzle_generation.require_unique",
        ),
    ] {
        let params = write_params(dir.path(), 1, "");
        let yaml = std::fs::read_to_string(&params).unwrap().replace(
            "themes_per_puzzle: 4\n",
            &format!("themes_per_puzzle: 4\n{extra}"),
        );
        std::fs::write(&params, yaml).unwrap();
        crate::common::assert_user_error(
            puzzlegen(dir.path()).args(["run", "--config"]).arg(&params),
            needle,
        );
    }
}

/// Runs the example with `extra` lines in puzzle_generation; its final_puzzles.json,
/// puzzle_metadata.json and review page.
fn example_with(extra: &str) -> (serde_json::Value, serde_json::Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let params = dir.path().join("params.yaml");
    let yaml = std::fs::read_to_string(repo_file("examples/params.yaml"))
        .unwrap()
        .replace(
            "  random_seed: 42\n",
            &format!("  random_seed: 42\n{extra}"),
        )
        .replace(
            "models/all-MiniLM-L6-v2",
            &crate::common::model_dir().display().to_string(),
        );
    std::fs::write(&params, yaml).unwrap();
    let out = dir.path().join("out");
    puzzlegen(dir.path())
        .args(["run", "--config"])
        .arg(&params)
        .arg("--themes")
        .arg(repo_file("examples/selected_themes.json"))
        .arg("--candidates")
        .arg(repo_file("examples/candidate_words.json"))
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    (
        read_json(&out.join("final_puzzles.json")),
        read_json(&out.join("puzzle_metadata.json")),
        std::fs::read_to_string(out.join("reports/puzzles.html")).unwrap(),
    )
}

#[test]
fn a_balanced_mix_regroups_the_same_themes_to_span_easy_to_hard() {
    let (in_order, meta_in_order, _) = example_with("");
    let (balanced, meta_balanced, _) = example_with("  difficulty_mix: balanced\n");
    assert_eq!(
        meta_in_order["puzzle_generation"]["difficulty_mix"],
        "in_order"
    );
    assert_eq!(
        meta_balanced["puzzle_generation"]["difficulty_mix"],
        "balanced"
    );
    let themes = |f: &serde_json::Value| {
        let mut all: Vec<String> = f
            .as_object()
            .unwrap()
            .values()
            .flat_map(|p| p["themes"].as_array().unwrap().clone())
            .map(|t| t.as_str().unwrap().to_owned())
            .collect();
        all.sort();
        all
    };
    assert_eq!(
        themes(&in_order),
        themes(&balanced),
        "the same themes, regrouped"
    );
    assert_ne!(in_order, balanced);
    for p in balanced.as_object().unwrap().values() {
        let mut t: Vec<&str> = p["themes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        t.sort();
        t.dedup();
        assert_eq!(t.len(), 4, "no theme twice in a puzzle: {p}");
    }
    let spread = |m: &serde_json::Value| m["difficulty"]["theme_spread"].as_f64().unwrap();
    assert!(
        spread(&meta_balanced) > spread(&meta_in_order),
        "{} vs {}",
        spread(&meta_balanced),
        spread(&meta_in_order)
    );
    // Deterministic.
    assert_eq!(example_with("  difficulty_mix: balanced\n").0, balanced);
}

/// Two themes over the same months: no choice of their words splits them apart, so only a
/// spare theme in place of one of them gives the puzzle a single solution.
#[test]
fn require_unique_puts_a_spare_theme_in_when_word_swaps_cannot_help() {
    const MONTHS: &[&str] = &[
        "January", "February", "March", "April", "May", "June", "July", "August",
    ];
    const REVERSED: &[&str] = &[
        "August", "July", "June", "May", "April", "March", "February", "January",
    ];
    let groups = [
        ("Words A", MONTHS),
        ("Words B", REVERSED),
        ("___ BALL", BALLS),
        ("Kitchen utensils", UTENSILS),
        ("Chess pieces", CHESS),
    ];
    let unique = |y: String| {
        y.replace(
            "themes_per_puzzle: 4\n",
            "themes_per_puzzle: 4\n  require_unique: true\n",
        )
    };

    // With the spare: it takes the first theme's place and the solver finds the intended split.
    let dir = tempfile::tempdir().unwrap();
    let (_, finals) = run_groups(dir.path(), &groups, 1, unique);
    let p = &finals["puzzle_1"];
    assert_eq!(
        p["themes"],
        serde_json::json!(["Chess pieces", "Words B", "___ BALL", "Kitchen utensils"])
    );
    assert_eq!(p["solver"]["unique"], true);
    let meta = read_json(&dir.path().join("out/puzzle_metadata.json"));
    assert_eq!(meta["successful_puzzles"], 1);
    let used = &meta["spare_themes_used"][0];
    assert_eq!(used["failed_theme"], "Words A");
    assert_eq!(used["spare_theme"], "Chess pieces");
    assert!(used["reason"].as_str().unwrap().contains("require_unique"));

    // Without it: the puzzle fails, and says that neither words nor spares could help.
    let dir = tempfile::tempdir().unwrap();
    let (_, finals) = run_groups(dir.path(), &groups[..4], 1, unique);
    assert!(finals.as_object().unwrap().is_empty(), "{finals}");
    let meta = read_json(&dir.path().join("out/puzzle_metadata.json"));
    let error = meta["failed_puzzles"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("no single solution") && error.contains("no spare theme"),
        "{error}"
    );
}
