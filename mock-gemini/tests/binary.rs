mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_prints_its_address_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mock-gemini"))
        .args([
            "--port",
            "0",
            "--dimension",
            "5",
            "--api-key",
            "k1",
            "--quota-unit",
            "requests",
            "--quota-per-minute",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mock-gemini");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();

    let v = vectors(&gemini_with_key(addr, "k1", &["a", "b", "c"], None).await);
    assert_eq!((v.len(), v[0].len()), (3, 5));
    assert_eq!(gemini_with_key(addr, "k2", &["a"], None).await.status, 400);
    assert_eq!(gemini_with_key(addr, "k1", &["a"], None).await.status, 200);
    assert_eq!(gemini_with_key(addr, "k1", &["a"], None).await.status, 429);
    let stats = http(addr, "GET", "/stats", &[], "").await.json();
    assert_eq!(stats["requests"], 4);
    assert_eq!(stats["responses_ok"], 2);

    // SIGTERM stops it.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut waited = Duration::ZERO;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(
            waited < Duration::from_secs(10),
            "mock-gemini ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
}

#[test]
fn binary_rejects_bad_probability() {
    let out = Command::new(env!("CARGO_BIN_EXE_mock-gemini"))
        .args(["--rate-500", "1.5"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("probability"));
}
