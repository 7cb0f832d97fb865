//! The review page (reports/puzzles.html) as people see it: rendered by headless Chromium after
//! its scripts ran, and rebuilt by `puzzlegen report` from a run's output files.
//!
//! Chromium is driven directly (`--dump-dom`, `--screenshot`, console messages on stderr with
//! `--enable-logging=stderr`), each time with a fresh profile in a temporary folder and
//! `--no-sandbox` (CI runs as root). `--dump-dom` writes the DOM once the page has loaded, so
//! the page's inline script (run synchronously at the end of the body) has run by then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{self, assert_user_error, puzzlegen, read_json};

/// The Chromium binary; fails with how to install it.
fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n)))
            .find(|p| p.is_file())
    });
    found.expect(
        "chromium is missing: install it with `apt-get install -y chromium` (Debian package \
         chromium; scripts/test installs it)",
    )
}

/// What Chromium made of a page: the DOM after its scripts ran, and its console messages.
struct Rendered {
    dom: String,
    console: Vec<String>,
}

/// Renders `page` (with `query`, `?...` or empty) in headless Chromium; writes a screenshot
/// to `screenshot` if given.
fn render(page: &Path, query: &str, screenshot: Option<&Path>) -> Rendered {
    let profile = tempfile::tempdir().unwrap();
    let mut cmd = assert_cmd::Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,2400",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg("--dump-dom");
    if let Some(png) = screenshot {
        cmd.arg(format!("--screenshot={}", png.display()));
    }
    let out = cmd
        .arg(format!(
            "file://{}{query}",
            page.canonicalize().unwrap().display()
        ))
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "chromium failed: {stderr}");
    Rendered {
        dom: String::from_utf8(out.stdout).unwrap(),
        console: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_owned)
            .collect(),
    }
}

/// Runs the example job (12 puzzles, local model) into `out`, with `extra` appended to a copy
/// of examples/params.yaml.
fn example_run(dir: &Path, out: &Path, extra: &str) {
    let params = dir.join("params.yaml");
    let yaml = std::fs::read_to_string(common::repo_file("examples/params.yaml")).unwrap();
    std::fs::write(&params, format!("{yaml}\n{extra}")).unwrap();
    puzzlegen(dir)
        .args(["run", "--quiet", "--config"])
        .arg(&params)
        .arg("--themes")
        .arg(common::repo_file("examples/selected_themes.json"))
        .arg("--candidates")
        .arg(common::repo_file("examples/candidate_words.json"))
        .arg("--out")
        .arg(out)
        .arg("--model-dir")
        .arg(common::model_dir())
        .assert()
        .success();
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// A grid as the page shows it or as final_puzzles.json says it should: its words, group by
/// group in the page's order; those flagged ambiguous; each group's colour class (level).
type Grid = (Vec<String>, Vec<String>, Vec<u8>);

/// Per puzzle section of the DOM (by id): its words, those flagged ambiguous (marked `amb` and
/// carrying the text "ambiguous"), and the colour class of each group's word list.
fn grids(dom: &str) -> BTreeMap<String, Grid> {
    let mut grids = BTreeMap::new();
    for section in dom.split("<section class=\"puzzle\" id=\"").skip(1) {
        let id = section[..section.find('"').unwrap()].to_owned();
        let mut words = Vec::new();
        let mut flagged = Vec::new();
        let colours = section
            .split("<ul class=\"words g")
            .skip(1)
            .map(|g| g[..1].parse::<u8>().unwrap())
            .collect();
        for cell in section.split("<li class=\"word").skip(1) {
            let cell = &cell[..cell.find("</li>").unwrap()];
            let word = cell
                .split("<b>")
                .nth(1)
                .unwrap()
                .split("</b>")
                .next()
                .unwrap();
            let word = unescape(word);
            if cell.starts_with(" amb\"") {
                assert!(
                    cell.contains("ambiguous"),
                    "{id}: {word} flagged by colour alone"
                );
                flagged.push(word.clone());
            }
            words.push(word);
        }
        grids.insert(id, (words, flagged, colours));
    }
    grids
}

/// Per puzzle of final_puzzles.json: its words with the groups in the order of
/// `difficulty.levels` (yellow to purple), those with a margin below `threshold`, and the
/// levels in that order.
fn expected(puzzles: &serde_json::Value, threshold: f64) -> BTreeMap<String, Grid> {
    let mut all = BTreeMap::new();
    for (id, p) in puzzles.as_object().unwrap() {
        let words: Vec<String> = p["words"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect();
        let margins = p["quality"]["word_margins"].as_array().unwrap();
        let levels: Vec<u8> = p["difficulty"]["levels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_u64().unwrap() as u8)
            .collect();
        let per_group = words.len() / levels.len();
        let mut order: Vec<usize> = (0..levels.len()).collect();
        order.sort_by_key(|&g| levels[g]);
        let positions: Vec<usize> = order
            .iter()
            .flat_map(|&g| g * per_group..(g + 1) * per_group)
            .collect();
        let flagged = positions
            .iter()
            .filter(|&&i| margins[i].as_f64().unwrap() < threshold)
            .map(|&i| words[i].clone())
            .collect();
        let shown = positions.iter().map(|&i| words[i].clone()).collect();
        let colours = order.iter().map(|&g| levels[g]).collect();
        all.insert(id.clone(), (shown, flagged, colours));
    }
    all
}

#[test]
fn the_review_page_renders_in_chromium_with_every_grid_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    example_run(dir.path(), &out, "");
    let page = out.join("reports/puzzles.html");
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("review");
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("puzzles.png");
    let _ = std::fs::remove_file(&png);
    let rendered = render(&page, "", Some(&png));
    let dom = &rendered.dom;

    // The script ran: it marks the document and counts the flags.
    assert!(
        dom.contains("data-ready=\"1\""),
        "the page's script did not run"
    );
    assert!(dom.contains("data-render-ms=\""), "no render time recorded");

    let puzzles = read_json(&out.join("final_puzzles.json"));
    let meta = read_json(&out.join("puzzle_metadata.json"));
    let threshold = meta["puzzle_generation"]["ambiguity_margin"]
        .as_f64()
        .unwrap();
    assert_eq!(threshold, 0.05);
    assert!(dom.contains(&format!("<strong id=\"threshold\">{threshold:.3}</strong>")));
    let want = expected(&puzzles, threshold);
    let got = grids(dom);
    assert_eq!(got.len(), 12, "one grid per puzzle");
    for (id, (words, _, colours)) in &got {
        assert_eq!(words.len(), 16, "{id}: {words:?}");
        assert_eq!(
            colours,
            &[0, 1, 2, 3],
            "{id}: yellow to purple, one of each"
        );
    }
    assert_eq!(
        got, want,
        "the grids, their order by level and flags differ from final_puzzles.json"
    );
    let flagged: usize = want.values().map(|(_, f, _)| f.len()).sum();
    assert!(
        flagged > 0,
        "the example has ambiguous words: the check must see some"
    );
    assert!(dom.contains(&format!("<output id=\"flag-count\">{flagged}</output>")));

    // Charts, as SVG with bars.
    assert!(
        dom.matches("<svg class=\"chart\"").count() >= 2,
        "charts missing"
    );
    assert!(dom.contains("<rect class=\"bar\""));
    // A heat map per puzzle (on demand).
    assert_eq!(dom.matches("<table class=\"heat\">").count(), 12);

    // Nothing may leave the file: the policy forbids every fetch, the links are in-page, and
    // the console (where a blocked request would be reported) is silent.
    assert!(dom.contains("default-src 'none'"), "no CSP");
    assert!(!dom.contains(" src="), "a resource is loaded");
    for href in dom.split("href=\"").skip(1) {
        assert!(
            href.starts_with('#'),
            "a link leaves the page: {}",
            &href[..40.min(href.len())]
        );
    }
    assert!(
        rendered.console.is_empty(),
        "console: {:#?}",
        rendered.console
    );

    let shot = std::fs::read(&png).unwrap();
    assert!(
        shot.starts_with(b"\x89PNG"),
        "no screenshot at {}",
        png.display()
    );
    eprintln!("screenshot: {}", png.display());

    check_sort_and_filter(&page, &puzzles);
}

/// The controls' script: `?sort=margin&theme=...` sets them as a click and typing would;
/// the puzzles are then weakest first, and only those with a matching theme are shown.
fn check_sort_and_filter(page: &Path, puzzles: &serde_json::Value) {
    let puzzles = puzzles.as_object().unwrap();
    let theme = puzzles["puzzle_2"]["themes"][0]
        .as_str()
        .unwrap()
        .to_lowercase();
    let word = theme.split_whitespace().next().unwrap().to_owned();
    let rendered = render(page, &format!("?sort=margin&theme={word}"), None);
    assert!(
        rendered.console.is_empty(),
        "console: {:#?}",
        rendered.console
    );
    let mut order = Vec::new();
    let mut shown = Vec::new();
    for section in rendered
        .dom
        .split("<section class=\"puzzle\" id=\"")
        .skip(1)
    {
        let tag = &section[..section.find('>').unwrap()];
        let id = tag[..tag.find('"').unwrap()].to_owned();
        order.push(puzzles[&id]["quality"]["min_margin"].as_f64().unwrap());
        if !tag.contains(" hidden") {
            shown.push(id);
        }
    }
    assert_eq!(order.len(), puzzles.len());
    assert!(order.is_sorted(), "not weakest first: {order:?}");
    let mut want: Vec<String> = puzzles
        .iter()
        .filter(|(_, p)| {
            p["themes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t.as_str().unwrap().to_lowercase().contains(&word))
        })
        .map(|(id, _)| id.clone())
        .collect();
    shown.sort();
    want.sort();
    assert!(
        !want.is_empty() && want.len() < puzzles.len(),
        "{word}: {want:?}"
    );
    assert_eq!(shown, want, "filter {word:?}");
    let line = format!("{} of {} puzzles shown", want.len(), puzzles.len());
    assert!(rendered.dom.contains(&line), "{line}");
    assert!(
        rendered
            .dom
            .contains("id=\"sort-margin\" aria-pressed=\"true\"")
    );
}

#[test]
fn the_chromium_check_sees_console_errors_and_blocked_requests() {
    // The harness above must be able to fail: a page that logs an error and tries a request.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" \
         content=\"default-src 'none'\"></head><body><img src=\"http://192.0.2.1/x.png\">\
         </body></html>",
    )
    .unwrap();
    let blocked = render(&page, "", None);
    assert!(
        blocked.console.iter().any(|l| l.contains("192.0.2.1")),
        "a blocked request went unseen: {:?}",
        blocked.console
    );
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><script>console.error('boom')</script></body></html>",
    )
    .unwrap();
    let logged = render(&page, "", None);
    assert!(
        logged.console.iter().any(|l| l.contains("boom")),
        "a console error went unseen: {:?}",
        logged.console
    );
}

#[test]
fn report_rebuilds_the_page_from_the_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    example_run(dir.path(), &out, "");
    let page = out.join("reports/puzzles.html");
    let from_run = std::fs::read_to_string(&page).unwrap();
    std::fs::remove_file(&page).unwrap();
    // No model, no cache, no inputs needed: only the three output files.
    std::fs::remove_file(out.join("puzzle_embeddings.csv")).unwrap();
    std::fs::remove_dir_all(dir.path().join("cache")).unwrap();
    puzzlegen(dir.path())
        .args(["report", "--out"])
        .arg(&out)
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&page).unwrap(), from_run);

    // The config's threshold and page path win; --out moves the page like the other outputs.
    let params = dir.path().join("params.yaml");
    let yaml = std::fs::read_to_string(&params)
        .unwrap()
        .replace("  ambiguity_margin: 0.05\n", "  ambiguity_margin: 0.3\n")
        .replace(
            "output:\n",
            "output:\n  review_page: elsewhere/review.html\n",
        );
    std::fs::write(&params, yaml).unwrap();
    puzzlegen(dir.path())
        .args(["report", "--config"])
        .arg(&params)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let strict = std::fs::read_to_string(out.join("reports/review.html")).unwrap();
    assert!(strict.contains("<strong id=\"threshold\">0.300</strong>"));
    let puzzles = read_json(&out.join("final_puzzles.json"));
    let want: usize = expected(&puzzles, 0.3)
        .values()
        .map(|(_, f, _)| f.len())
        .sum();
    assert_eq!(strict.matches("<li class=\"word amb\"").count(), want);
    assert!(want > from_run.matches("<li class=\"word amb\"").count());
}

#[test]
fn report_names_a_missing_or_malformed_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("reports")).unwrap();
    assert_user_error(
        puzzlegen(dir.path()).args(["report", "--out", "out"]),
        "out/final_puzzles.json: cannot read",
    );
    std::fs::write(out.join("final_puzzles.json"), "{}\n").unwrap();
    std::fs::write(
        out.join("puzzle_metadata.json"),
        "{\n  \"processing_time\": \"soon\"\n}\n",
    )
    .unwrap();
    std::fs::write(out.join("reports/embedding_analysis.json"), "{}").unwrap();
    assert_user_error(
        puzzlegen(dir.path()).args(["report", "--out", "out"]),
        "out/puzzle_metadata.json: line 2: invalid type",
    );
    assert_user_error(puzzlegen(dir.path()).arg("report"), "--config FILE");
    assert!(!out.join("reports/puzzles.html").exists());
}

/// The example's own layout (outputs/ and reports/ side by side): the run's summary names the
/// page, and `report --out outputs`, or a bare `report` next to the params.yaml, finds every
/// file where the run put it.
#[test]
fn report_finds_the_files_where_the_run_put_them() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(common::repo_file("examples/params.yaml")).unwrap();
    std::fs::write(dir.path().join("params.yaml"), yaml).unwrap();
    let run = puzzlegen(dir.path())
        .args(["run", "--config", "params.yaml", "--themes"])
        .arg(common::repo_file("examples/selected_themes.json"))
        .arg("--candidates")
        .arg(common::repo_file("examples/candidate_words.json"))
        .arg("--model-dir")
        .arg(common::model_dir())
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&run.get_output().stdout).into_owned();
    assert!(
        stdout.contains("\nreview page: reports/puzzles.html\n"),
        "{stdout}"
    );
    let page = dir.path().join("reports/puzzles.html");
    let from_run = std::fs::read_to_string(&page).unwrap();
    let meta = read_json(&dir.path().join("outputs/puzzle_metadata.json"));
    assert_eq!(
        meta["output_files"]["analysis"],
        "../reports/embedding_analysis.json"
    );

    std::fs::remove_file(&page).unwrap();
    puzzlegen(dir.path())
        .args(["report", "--out", "outputs"])
        .assert()
        .success();
    assert_eq!(std::fs::read_to_string(&page).unwrap(), from_run);

    std::fs::remove_file(&page).unwrap();
    puzzlegen(dir.path()).arg("report").assert().success();
    assert_eq!(std::fs::read_to_string(&page).unwrap(), from_run);

    let elsewhere = tempfile::tempdir().unwrap();
    assert_user_error(
        puzzlegen(elsewhere.path()).arg("report"),
        "no params.yaml here: give --config FILE",
    );
}

#[test]
fn a_puzzle_made_many_times_is_said_and_shown_once() {
    // 8 themes for 6 puzzles of 4: the plan cycles, so puzzles 1, 3, 5 and 2, 4, 6 are the
    // same two puzzles (as the original's params: 80 puzzles from 32 themes).
    let dir = tempfile::tempdir().unwrap();
    common::write_workload(dir.path(), 8, 8);
    common::write_params(dir.path(), 6, "");
    let out = puzzlegen(dir.path())
        .args(["run", "--config", "params.yaml"])
        .assert()
        .success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(
        stderr.contains("only 2 of the 6 puzzles differ"),
        "{stderr}"
    );
    let puzzles = read_json(&dir.path().join("out/final_puzzles.json"));
    assert_eq!(
        puzzles.as_object().unwrap().len(),
        6,
        "the outputs keep every copy"
    );
    assert_eq!(puzzles["puzzle_1"], puzzles["puzzle_5"]);
    let page = std::fs::read_to_string(dir.path().join("out/reports/puzzles.html")).unwrap();
    assert_eq!(
        page.matches("<section class=\"puzzle\"").count(),
        2,
        "{page}"
    );
    assert!(page.contains("6 puzzles (2 distinct, each shown once)"));
    assert!(page.contains("Also made as puzzle_3, puzzle_5 (3 identical puzzles in all"));
    assert!(page.contains("Also made as puzzle_4, puzzle_6 (3 identical puzzles in all"));
    // The weakest table names each distinct puzzle once.
    let weakest = &page[page.find("Weakest puzzles first").unwrap()..];
    let weakest = &weakest[..weakest.find("</table>").unwrap()];
    assert_eq!(weakest.matches("<tr><td>").count(), 2, "{weakest}");
}
