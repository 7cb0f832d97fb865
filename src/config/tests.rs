use super::puzzle::budget_for;
use super::*;
use std::time::Duration;

#[test]
fn the_slot_budget_shrinks_with_the_memory_available() {
    let (slots, why) = budget_for(Some(1 << 30));
    assert_eq!(slots, (1 << 30) / BYTES_PER_SLOT as usize);
    assert!(why.contains("the 1024 MB of memory available"), "{why}");
    assert_eq!(budget_for(Some(1 << 40)).0, MAX_SLOTS);
    assert_eq!(budget_for(None).0, MAX_SLOTS);
}

fn load(yaml: &str) -> Result<Config, ConfigError> {
    let o = Overrides::default();
    Config::from_yaml_bytes(Path::new("params.yaml"), yaml.as_bytes(), &o)
}

const MINIMAL: &str = "paths:\n  outputs: out\n  themes: t.json\n  candidates: c.json\n";

#[test]
fn minimal_file_gets_original_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.puzzle.words_per_theme, 4);
    assert_eq!(c.puzzle.themes_per_puzzle, 4);
    let ProviderSettings::Gemini(g) = &c.provider else {
        panic!("{:?}", c.provider)
    };
    assert_eq!(g.model_id, "gemini-embedding-001");
    assert_eq!(g.dimension, 3072);
    assert_eq!(g.request_timeout, Duration::from_secs(60));
    assert_eq!(c.requests.limits.requests_per_minute, 3000.0);
    assert_eq!(c.requests.limits.max_concurrent_requests, 6);
    assert_eq!(c.requests.stall_timeout, Duration::from_secs(600));
    assert!(c.unknown_keys.is_empty());
}

#[test]
fn the_openai_timeout_is_its_own_key_with_the_gemini_one_as_fallback() {
    let openai = |extra: &str| {
        load(&format!(
            "{MINIMAL}gemini:\n  request_timeout: 7\nembedding:\n  provider: openai\n  \
             openai:\n    base_url: http://127.0.0.1:1\n    model: m\n{extra}"
        ))
    };
    let timeout = |c: Config| match c.provider {
        ProviderSettings::Openai(o) => o.request_timeout,
        other => panic!("{other:?}"),
    };
    assert_eq!(timeout(openai("").unwrap()), Duration::from_secs(7));
    let own = openai("    request_timeout: 2.5\n").unwrap();
    assert_eq!(timeout(own), Duration::from_millis(2500));
    let zero = openai("    request_timeout: 0\n").unwrap_err().to_string();
    assert!(
        zero.contains("embedding.openai.request_timeout: expected a number of seconds > 0"),
        "{zero}"
    );
}

#[test]
fn distributed_keys_are_known_and_the_password_is_never_shown() {
    let c = load(&format!(
        "{MINIMAL}distributed:\n  redis_url: redis://u:pw-secret@h:6379/1\n  \
         redis_password_env: REDIS_PW\n"
    ))
    .unwrap();
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    let url = c.distributed.redis_url.as_ref().unwrap();
    assert_eq!(url.expose(), "redis://u:pw-secret@h:6379/1");
    assert_eq!(url.shown(), "redis://u:***@h:6379/1");
    assert!(!format!("{c:?}").contains("pw-secret"));
    assert_eq!(
        c.distributed.redis_password_env.as_deref(),
        Some("REDIS_PW")
    );
    assert!(load(MINIMAL).unwrap().distributed.redis_url.is_none());
    for (url, shown) in [
        ("redis://:p@h:1", "redis://:***@h:1"),
        ("redis://h:1/0", "redis://h:1/0"),
        ("redis://user@h", "redis://user@h"),
        ("redis://u:p@ss:w@h/", "redis://u:***@h/"),
        (
            "redis://user:Top/Secret@127.0.0.1:6391/",
            "redis://user:***@127.0.0.1:6391/",
        ),
        ("redis://u:a?b#c/d@h:1/2", "redis://u:***@h:1/2"),
        ("rediss://:p/w@h", "rediss://:***@h"),
        ("redis:u:pw@h", "***@h"),
        ("not a url", "not a url"),
    ] {
        assert_eq!(RedisUrl::new(url).shown(), shown, "{url}");
    }
    assert!(
        load(&format!(
            "{MINIMAL}distributed:\n  redis_password_env: ''\n"
        ))
        .is_err()
    );
}

#[test]
fn cluster_seed_nodes_are_urls_and_stand_for_the_url_when_alone() {
    let c = load(&format!(
        "{MINIMAL}distributed:\n  redis_url: redis://a:7000/\n  \
         redis_nodes: [redis://b:7000/, 'redis://:pw-secret@c:7000/']\n"
    ))
    .unwrap();
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    let nodes: Vec<String> = c
        .distributed
        .redis_nodes
        .iter()
        .map(|u| u.shown())
        .collect();
    assert_eq!(nodes, ["redis://b:7000/", "redis://:***@c:7000/"]);
    assert!(!format!("{c:?}").contains("pw-secret"));
    let alone = load(&format!(
        "{MINIMAL}distributed:\n  redis_nodes: [redis://b:7000/, redis://c:7000/]\n"
    ))
    .unwrap();
    assert_eq!(
        alone.distributed.redis_url.unwrap().shown(),
        "redis://b:7000/"
    );
    assert_eq!(alone.distributed.redis_nodes.len(), 1);
    let empty = load(&format!(
        "{MINIMAL}distributed:\n  redis_nodes: [redis://b:7000/, '  ']\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        empty.contains("distributed.redis_nodes[1]: expected a Redis URL"),
        "{empty}"
    );
    let not_a_list = load(&format!(
        "{MINIMAL}distributed:\n  redis_nodes: redis://b/\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        not_a_list.contains("distributed.redis_nodes"),
        "{not_a_list}"
    );
}

#[test]
fn the_old_queue_key_is_deprecated_not_fatal() {
    for value in ["true", "false", "'yes please'"] {
        let c = load(&format!("{MINIMAL}distributed:\n  queue: {value}\n")).unwrap();
        assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
        assert_eq!(c.deprecated.len(), 1, "{value}");
        assert!(c.deprecated[0].contains("distributed.queue is deprecated"));
    }
    assert!(load(MINIMAL).unwrap().deprecated.is_empty());
}

#[test]
fn unknown_keys_are_collected_not_fatal() {
    let c = load(&format!(
        "{MINIMAL}gemini:\n  colour: blue\nextra_section: 1\n"
    ))
    .unwrap();
    assert_eq!(c.unknown_keys, vec!["gemini.colour", "extra_section"]);
}

#[test]
fn zero_words_per_theme_names_the_key() {
    let e = load(&format!(
        "{MINIMAL}puzzle_generation:\n  words_per_theme: 0\n"
    ))
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "params.yaml: puzzle_generation.words_per_theme: expected an integer >= 1, got 0"
    );
}

#[test]
fn assembly_weights_default_and_must_be_finite_and_not_negative() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.puzzle.coherence_weight, DEFAULT_COHERENCE_WEIGHT);
    assert_eq!(c.puzzle.ambiguity_weight, DEFAULT_AMBIGUITY_WEIGHT);
    let c = load(&format!(
        "{MINIMAL}puzzle_generation:\n  coherence_weight: 0\n  ambiguity_weight: 2.5\n"
    ))
    .unwrap();
    assert_eq!(
        (c.puzzle.coherence_weight, c.puzzle.ambiguity_weight),
        (0.0, 2.5)
    );
    for (key, value, got) in [
        ("coherence_weight", "-0.5", "-0.5"),
        ("ambiguity_weight", ".inf", "inf"),
        ("coherence_weight", ".nan", "NaN"),
    ] {
        let e = load(&format!("{MINIMAL}puzzle_generation:\n  {key}: {value}\n"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            format!("params.yaml: puzzle_generation.{key}: expected a number >= 0, got {got}")
        );
    }
    let e = load(&format!(
        "{MINIMAL}puzzle_generation:\n  ambiguity_weight: high\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("line 6") && e.contains("puzzle_generation.ambiguity_weight"),
        "{e}"
    );
}

#[test]
fn negative_interval_is_rejected() {
    let e = load(&format!("{MINIMAL}gemini:\n  min_request_interval: -0.5\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gemini.min_request_interval"), "{e}");
    assert!(e.contains("-0.5"), "{e}");
}

#[test]
fn missing_outputs_is_rejected_unless_out_given() {
    let yaml = "paths:\n  themes: t.json\n  candidates: c.json\n";
    let e = load(yaml).unwrap_err().to_string();
    assert!(e.contains("paths.outputs"), "{e}");
    let o = Overrides {
        out: Some(PathBuf::from("x")),
        ..Overrides::default()
    };
    let c = Config::from_yaml_bytes(Path::new("p.yaml"), yaml.as_bytes(), &o).unwrap();
    assert_eq!(c.output.outputs_dir, PathBuf::from("x"));
    assert_eq!(c.output.reports_dir, PathBuf::from("x/reports"));
}

#[test]
fn ambiguity_margin_defaults_and_is_checked() {
    assert_eq!(
        load(MINIMAL).unwrap().puzzle.ambiguity_margin,
        DEFAULT_AMBIGUITY_MARGIN
    );
    let ok = load(&format!(
        "{MINIMAL}puzzle_generation:\n  ambiguity_margin: 0.1\n"
    ))
    .unwrap();
    assert_eq!(ok.puzzle.ambiguity_margin, 0.1);
    for bad in ["-0.01", "2.5", ".nan", ".inf"] {
        let e = load(&format!(
            "{MINIMAL}puzzle_generation:\n  ambiguity_margin: {bad}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("puzzle_generation.ambiguity_margin: expected a number from 0 to 2"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn review_page_follows_reports_and_out() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(
        c.output.review_page,
        PathBuf::from("out/reports/puzzles.html")
    );
    let own = load(&format!("{MINIMAL}output:\n  review_page: pages/r.html\n")).unwrap();
    assert_eq!(own.output.review_page, PathBuf::from("pages/r.html"));
    let o = Overrides {
        out: Some(PathBuf::from("x")),
        ..Overrides::default()
    };
    let yaml = format!("{MINIMAL}output:\n  review_page: pages/r.html\n");
    let moved = Config::from_yaml_bytes(Path::new("p.yaml"), yaml.as_bytes(), &o).unwrap();
    assert_eq!(moved.output.review_page, PathBuf::from("x/reports/r.html"));
}

#[test]
fn malformed_yaml_names_file_and_line() {
    let e = load("paths:\n  outputs: out\n  themes: [unclosed\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("params.yaml: "), "{e}");
    assert!(e.contains("line"), "{e}");
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn wrong_type_names_line() {
    let e = load(&format!(
        "{MINIMAL}puzzle_generation:\n  words_per_theme: lots\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("line 6"), "{e}");
}

#[test]
fn a_wrong_type_anywhere_names_the_dotted_key_and_the_type_expected() {
    let cases = [
        (
            "puzzle_generation:\n  words_per_theme: [1,2]\n",
            "line 2: puzzle_generation.words_per_theme: expected an integer, got a list",
        ),
        (
            "puzzle_generation:\n  words_per_theme:\n    - 1\n",
            "line 3: puzzle_generation.words_per_theme: expected an integer, got a list",
        ),
        (
            "gemini:\n  model_id:\n    a: b\n",
            "line 3: gemini.model_id: expected a string, got a mapping",
        ),
        (
            "paths: {outputs: out}\ngemini: {requests_per_minute: fast}\n",
            "line 2: gemini.requests_per_minute: expected a number, got fast",
        ),
        (
            "paths:\n  outputs: 12\n",
            "line 2: paths.outputs: expected a string, got 12 (put it in quotes if it is \
             meant as text)",
        ),
        (
            "embedding:\n  local:\n    model_dir: {a: 1}\n",
            "line 3: embedding.local.model_dir: expected a string, got a mapping",
        ),
        (
            "embedding:\n  provider: [a]\n",
            "line 2: embedding.provider: expected one of local, gemini, openai, got a list",
        ),
        (
            "gemini:\n  rpm_counts: 5\n",
            "line 2: gemini.rpm_counts: expected items or requests, got 5",
        ),
        (
            "multiprocessing:\n  enabled: maybe\n",
            "line 2: multiprocessing.enabled: expected true or false, got maybe",
        ),
        (
            "paths: [1]\n",
            "line 1: paths: expected a mapping (keys indented under it), got a list",
        ),
    ];
    for (yaml, message) in cases {
        let e = load(yaml).unwrap_err().to_string();
        assert_eq!(e, format!("params.yaml: {message}"), "{yaml}");
    }
}

#[test]
fn non_utf8_names_line() {
    let mut bytes = MINIMAL.as_bytes().to_vec();
    bytes.extend_from_slice(b"# caf\xe9\n");
    let e = Config::from_yaml_bytes(Path::new("p.yaml"), &bytes, &Overrides::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "p.yaml: not valid UTF-8 (line 5): save the file as UTF-8"
    );
}

#[test]
fn local_provider_from_embedding_section_or_flag() {
    let c = load(&format!(
        "{MINIMAL}embedding:\n  provider: local\n  local:\n    model_dir: m\n"
    ))
    .unwrap();
    assert!(
        matches!(c.provider, ProviderSettings::Local { ref model_dir } if model_dir == Path::new("m"))
    );
    let o = Overrides {
        provider: Some(ProviderKind::Local),
        ..Overrides::default()
    };
    let c = Config::from_yaml_bytes(Path::new("p"), MINIMAL.as_bytes(), &o).unwrap();
    assert!(
        matches!(c.provider, ProviderSettings::Local { ref model_dir } if model_dir == Path::new(DEFAULT_MODEL_DIR))
    );
}

#[test]
fn the_originals_file_has_no_unknown_key_and_its_paths_mean_what_they_meant() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dvc/params.yaml");
    let c = Config::load(&path, &Overrides::default()).unwrap();
    assert!(c.unknown_keys.is_empty(), "{:?}", c.unknown_keys);
    // Folders, as the original names them: its file names inside.
    assert_eq!(c.themes_file, Path::new("data/themes/selected_themes.json"));
    assert_eq!(
        c.candidates_file,
        Path::new("data/candidates/candidate_words.json")
    );
    // Output CSV paths as written, not joined under paths.*.
    assert_eq!(
        c.output.embedding_cache_file,
        Path::new("data/cache/all_embeddings.csv")
    );
    assert_eq!(
        c.output.puzzle_embeddings_file,
        Path::new("data/embeddings/puzzle_embeddings.csv")
    );
    assert_eq!(
        c.output.cache_db,
        Path::new("data/cache/embeddings.sqlite3")
    );
    assert_eq!(c.engine.worker_count, 8);
    assert_eq!(c.requests.limits.requests_per_minute, 2880.0);
}

#[test]
fn an_existing_folder_gets_the_originals_file_name_a_file_is_kept() {
    let d = tempfile::tempdir().unwrap();
    let folder = d.path().join("themes");
    std::fs::create_dir(&folder).unwrap();
    let yaml = format!(
        "paths:\n  outputs: out\n  themes: {}\n  candidates: c.json\n",
        folder.display()
    );
    let c = load(&yaml).unwrap();
    assert_eq!(c.themes_file, folder.join(THEMES_FILE_NAME));
    assert_eq!(c.candidates_file, Path::new("c.json"));
}

#[test]
fn words_per_puzzle_is_the_older_name_of_words_per_theme() {
    let c = load(&format!(
        "{MINIMAL}puzzle_generation:\n  words_per_puzzle: 3\n"
    ))
    .unwrap();
    assert_eq!(c.puzzle.words_per_theme, 3);
    assert!(c.unknown_keys.is_empty());
}
#[test]
fn wrong_integer_names_key_and_line() {
    let e = load("puzzle_generation:\n  total_puzzle_count: 12x\n")
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "params.yaml: line 2: puzzle_generation.total_puzzle_count: expected an integer, got 12x"
    );
}

#[test]
fn duplicate_key_is_named_plainly() {
    let e = load(&format!(
        "{MINIMAL}puzzle_generation:\n  words_per_theme: 3\n  words_per_theme: 4\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("line 7: duplicate key puzzle_generation.words_per_theme"),
        "{e}"
    );
    assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
}

#[test]
fn yaml_bomb_is_refused_plainly() {
    // The classic "billion laughs": 10^9 nodes from a few lines, under a section the tool
    // reads whole (`themes`).
    // Each of the anchors b1..b8 refers ten times to the one before it.
    let mut y = String::from("themes:\n  b0: &b0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let refs = vec![format!("*b{}", i - 1); 10].join(", ");
        y.push_str(&format!("  b{i}: &b{i} [{refs}]\n"));
    }
    let e = load(&format!("{MINIMAL}{y}")).unwrap_err().to_string();
    assert_eq!(
        e,
        "params.yaml: too large or too deeply nested (alias expansion)"
    );
}

#[test]
fn huge_numbers_are_not_echoed_in_full() {
    let e = load(&format!("{MINIMAL}gemini:\n  retry_base_delay: 1e308\n"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("got 1e308"), "{e}");
    assert!(e.len() < 200, "{e}");
}

#[test]
fn a_plan_that_cannot_fit_names_the_key_and_the_largest_value() {
    let e = load(&format!(
        "{MINIMAL}puzzle_generation:\n  total_puzzle_count: 1000000000000\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("puzzle_generation.total_puzzle_count: expected at most 2500000 with 4"),
        "{e}"
    );
    let e = load(&format!(
        "{MINIMAL}multiprocessing:\n  worker_count: 1000000000\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("multiprocessing.worker_count: expected an integer from 1 to 10000"),
        "{e}"
    );
    let c = load(&format!(
        "{MINIMAL}puzzle_generation:\n  total_puzzle_count: 2500000\n"
    ))
    .unwrap();
    assert_eq!(c.puzzle.total_puzzle_count, 2_500_000);
}

#[test]
fn an_endless_config_file_is_refused_without_reading_it_all() {
    let e = Config::load(Path::new("/dev/zero"), &Overrides::default())
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "/dev/zero: too large: a configuration file may hold at most 1 MB (is this the right file?)"
    );
}
