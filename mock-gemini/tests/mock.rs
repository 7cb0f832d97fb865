mod common;

use std::time::{Duration, Instant};

use common::*;
use mock_gemini::{MockConfig, QuotaUnit, Stats};
use serde_json::{Value, json};

async fn server(config: MockConfig) -> mock_gemini::MockServer {
    mock_gemini::start(config).await.expect("start mock")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_batch_count_dimension_and_normalisation() {
    let s = server(MockConfig::default()).await;
    assert!(s.base_url().starts_with("http://127.0.0.1:"));
    assert_eq!(s.base_url(), format!("http://{}", s.addr()));

    let full = vectors(&gemini(s.addr(), &["cat", "dog", "cat"], None).await);
    assert_eq!(full.len(), 3);
    assert!(full.iter().all(|v| v.len() == 3072));
    for v in &full {
        assert!((norm(v) - 1.0).abs() < 1e-3, "3072-dim norm {}", norm(v));
    }
    assert_eq!(full[0], full[2], "same text, same vector");
    assert_ne!(full[0], full[1]);
    assert_eq!(full[0], mock_gemini::gemini_embedding("cat", 3072));

    let small = vectors(&gemini(s.addr(), &["cat", "dog"], Some(768)).await);
    assert_eq!(small.len(), 2);
    assert!(small.iter().all(|v| v.len() == 768));
    for v in &small {
        // Uniform [-1,1] values: expected norm about sqrt(768/3) = 16.
        assert!(norm(v) > 5.0, "768-dim must not be normalised: {}", norm(v));
        assert!(v.iter().all(|x| (-1.0..=1.0).contains(x)));
    }
    assert_eq!(small[0], mock_gemini::raw_embedding("cat", 768));
    assert_eq!(
        small[0],
        vectors(&gemini(s.addr(), &["cat"], Some(768)).await)[0]
    );

    // Configured default dimension applies when the request names none.
    let s8 = server(MockConfig {
        dimension: 8,
        ..MockConfig::default()
    })
    .await;
    let v = vectors(&gemini(s8.addr(), &["a", "b", "c", "d"], None).await);
    assert_eq!(v.len(), 4);
    assert!(v.iter().all(|x| x.len() == 8));
    s.shutdown().await;
    s8.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_validation_and_not_found() {
    let s = server(MockConfig::default()).await;
    let texts: Vec<String> = (0..101).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let r = gemini(s.addr(), &refs, Some(8)).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(r.json()["error"]["code"], 400);
    assert_eq!(
        vectors(&gemini(s.addr(), &refs[..100], Some(8)).await).len(),
        100
    );

    let r = http(
        s.addr(),
        "POST",
        &format!("/v1beta/models/{MODEL}:embedContent"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");
    let r = http(s.addr(), "POST", "/v1beta/nothing/here", &[], "{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["status"], "NOT_FOUND");

    let r = http(s.addr(), "POST", &gemini_path(), &[], "{not json").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    let bad_field = json!({"requests":[{"model":format!("models/{MODEL}"),"content":{"parts":[{"text":"x"}]},"outputDimension":8}]});
    let r = http(
        s.addr(),
        "POST",
        &gemini_path(),
        &[],
        &bad_field.to_string(),
    )
    .await;
    assert_eq!(
        r.status, 400,
        "unknown fields are rejected like Google does"
    );
    let wrong_model =
        json!({"requests":[{"model":"models/other","content":{"parts":[{"text":"x"}]}}]});
    let r = http(
        s.addr(),
        "POST",
        &gemini_path(),
        &[],
        &wrong_model.to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    // snake_case field names are accepted, as by the real API.
    let snake = json!({"requests":[{"model":format!("models/{MODEL}"),"content":{"parts":[{"text":"x"}]},"task_type":"CLUSTERING","output_dimensionality":5}]});
    let r = http(s.addr(), "POST", &gemini_path(), &[], &snake.to_string()).await;
    assert_eq!(vectors(&r)[0].len(), 5);

    // The unrouted /v1beta/nothing/here is not an embedding request.
    let st = s.stats();
    assert_eq!(st.requests, 7);
    assert_eq!(st.responses_ok, 2);
    assert_eq!(st.responses_4xx_other, 5);
    assert_eq!(st.texts, 101 + 100 + 1 + 1);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_minute_quota_answers_google_429_and_recovers() {
    let window = Duration::from_secs(2);
    let s = server(MockConfig {
        dimension: 4,
        quota_per_minute: Some(5),
        quota_window: window,
        ..MockConfig::default()
    })
    .await;
    let t0 = Instant::now();
    assert_eq!(
        vectors(&gemini(s.addr(), &["a", "b", "c"], None).await).len(),
        3
    );
    let r = gemini(s.addr(), &["d", "e", "f"], None).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let err = r.json();
    assert_eq!(err["error"]["code"], 429);
    assert_eq!(err["error"]["status"], "RESOURCE_EXHAUSTED");
    let details = err["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 3);
    assert_eq!(details[0]["@type"], "type.googleapis.com/google.rpc.Help");
    assert_eq!(
        details[0]["links"][0]["url"],
        "https://ai.google.dev/gemini-api/docs/rate-limits"
    );
    let violation = &detail(&err, "google.rpc.QuotaFailure")["violations"][0];
    assert_eq!(
        violation["quotaMetric"],
        "generativelanguage.googleapis.com/embed_content_requests"
    );
    assert_eq!(
        violation["quotaId"],
        "EmbedContentRequestsPerMinutePerProjectPerModel"
    );
    assert_eq!(violation["quotaDimensions"]["model"], MODEL);
    assert_eq!(violation["quotaDimensions"]["location"], "global");
    assert_eq!(violation["quotaValue"], "5");
    let delay = parse_delay(
        detail(&err, "google.rpc.RetryInfo")["retryDelay"]
            .as_str()
            .unwrap(),
    );
    let elapsed = t0.elapsed().as_secs_f64();
    assert!(delay > 0.0 && delay <= 2.0, "delay {delay}");
    assert!(
        delay >= 2.0 - elapsed - 0.05,
        "delay {delay} elapsed {elapsed}"
    );

    // The refused request did not count: two more texts still fit.
    assert_eq!(vectors(&gemini(s.addr(), &["d", "e"], None).await).len(), 2);
    let r = gemini(s.addr(), &["f"], None).await;
    assert_eq!(r.status, 429);

    tokio::time::sleep(Duration::from_secs_f64(delay + 0.05)).await;
    assert_eq!(vectors(&gemini(s.addr(), &["f"], None).await).len(), 1);

    let st = s.stats();
    assert_eq!(st.requests, 5);
    assert_eq!(st.texts, 10);
    assert_eq!(st.responses_ok, 3);
    assert_eq!(st.responses_429, 2);
    assert_eq!(st.texts_embedded, 6);
    assert_eq!(st.max_requests_in_any_60s, 4);
    assert_eq!(st.max_texts_in_any_60s, 9);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_in_requests_unit() {
    let s = server(MockConfig {
        dimension: 4,
        quota_per_minute: Some(2),
        quota_unit: QuotaUnit::Requests,
        ..MockConfig::default()
    })
    .await;
    assert_eq!(gemini(s.addr(), &["a", "b", "c"], None).await.status, 200);
    assert_eq!(gemini(s.addr(), &["a", "b", "c"], None).await.status, 200);
    let r = gemini(s.addr(), &["a"], None).await;
    assert_eq!(r.status, 429);
    let delay = parse_delay(
        detail(&r.json(), "RetryInfo")["retryDelay"]
            .as_str()
            .unwrap(),
    );
    assert!(delay > 55.0 && delay <= 60.0, "{delay}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_api_key_invalid() {
    let s = server(MockConfig {
        dimension: 4,
        api_key: Some("secret".into()),
        ..MockConfig::default()
    })
    .await;
    for r in [
        gemini_with_key(s.addr(), "wrong", &["a"], None).await,
        gemini(s.addr(), &["a"], None).await,
    ] {
        assert_eq!(r.status, 400);
        let err = r.json();
        assert_eq!(err["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(
            err["error"]["message"],
            "API key not valid. Please pass a valid API key."
        );
        let info = detail(&err, "google.rpc.ErrorInfo");
        assert_eq!(info["reason"], "API_KEY_INVALID");
        assert_eq!(info["domain"], "googleapis.com");
        assert_eq!(
            info["metadata"]["service"],
            "generativelanguage.googleapis.com"
        );
    }
    assert_eq!(
        vectors(&gemini_with_key(s.addr(), "secret", &["a"], None).await).len(),
        1
    );
    let r = http(
        s.addr(),
        "POST",
        &format!("{}?key=secret", gemini_path()),
        &[],
        &gemini_body(&["a"], None),
    )
    .await;
    assert_eq!(r.status, 200, "key in the query string is accepted");

    // OpenAI endpoint: 401.
    let body = json!({"model":"m","input":["a"]}).to_string();
    let r = http(
        s.addr(),
        "POST",
        "/v1/embeddings",
        &[("Authorization", "Bearer nope")],
        &body,
    )
    .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    assert_eq!(r.json()["error"]["message"], "Incorrect API key provided");
    let r = http(
        s.addr(),
        "POST",
        "/v1/embeddings",
        &[("Authorization", "Bearer secret")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    let st = s.stats();
    assert_eq!((st.responses_4xx_other, st.responses_ok), (3, 3));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_day_quota_is_sticky() {
    let s = server(MockConfig {
        dimension: 4,
        quota_per_day: Some(4),
        quota_per_minute: Some(1000),
        ..MockConfig::default()
    })
    .await;
    assert_eq!(gemini(s.addr(), &["a", "b", "c"], None).await.status, 200);
    for texts in [&["d", "e"][..], &["f"][..]] {
        let r = gemini(s.addr(), texts, None).await;
        assert_eq!(r.status, 429);
        let err = r.json();
        assert_eq!(err["error"]["status"], "RESOURCE_EXHAUSTED");
        let id = detail(&err, "QuotaFailure")["violations"][0]["quotaId"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(id.contains("PerDay"), "{id}");
        assert_eq!(
            detail(&err, "RetryInfo")["retryDelay"].as_str().unwrap(),
            "3600s"
        );
    }
    assert_eq!(s.stats().responses_429, 2);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_endpoint_shape_and_rate_limit() {
    let s = server(MockConfig {
        dimension: 16,
        quota_per_minute: Some(3),
        ..MockConfig::default()
    })
    .await;
    let body = json!({"model":"text-embedding-3-small","input":["x","y"]}).to_string();
    let r = http(s.addr(), "POST", "/v1/embeddings", &[], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "text-embedding-3-small");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        let e: Vec<f32> = d["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(e.len(), 16);
        assert!((norm(&e) - 1.0).abs() < 1e-4);
    }
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() >= 2);
    assert_eq!(v["usage"]["prompt_tokens"], v["usage"]["total_tokens"]);

    let r = http(s.addr(), "POST", "/v1/embeddings", &[], &body).await;
    assert_eq!(r.status, 429);
    let retry: u64 = r
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(
        r.json(),
        json!({"error":{"message":"Rate limit reached","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}})
    );
    s.shutdown().await;
}

/// Sends one 2-text Gemini request to a fresh server with `config`.
async fn one_faulty(config: MockConfig) -> (Reply, Stats) {
    let s = server(MockConfig {
        dimension: 6,
        ..config
    })
    .await;
    let r = gemini(s.addr(), &["alpha", "beta"], None).await;
    let st = s.stats();
    s.shutdown().await;
    (r, st)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_switches_produce_their_faults() {
    let base = MockConfig::default;

    let (r, st) = one_faulty(MockConfig {
        rate_429: 1.0,
        ..base()
    })
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(
        detail(&r.json(), "RetryInfo")["retryDelay"]
            .as_str()
            .unwrap(),
        "1s"
    );
    assert_eq!(r.json()["error"]["details"].as_array().unwrap().len(), 3);
    assert_eq!(st.responses_429, 1);

    let (r, st) = one_faulty(MockConfig {
        rate_500: 1.0,
        ..base()
    })
    .await;
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"]["status"], "INTERNAL");
    assert_eq!(st.responses_5xx, 1);

    let (r, st) = one_faulty(MockConfig {
        rate_503: 1.0,
        ..base()
    })
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["status"], "UNAVAILABLE");
    assert_eq!(st.responses_5xx, 1);

    let (r, st) = one_faulty(MockConfig {
        rate_truncated: 1.0,
        ..base()
    })
    .await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert!(r.text().starts_with("{\"embeddings\":[{\"values\":["));
    assert_eq!(st.faults_injected, 1);
    assert_eq!(st.responses_ok, 0);
    assert_eq!(st.texts_embedded, 0);

    let (r, st) = one_faulty(MockConfig {
        rate_wrong_count: 1.0,
        ..base()
    })
    .await;
    let v = vectors(&r);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].len(), 6);
    assert_eq!(st.faults_injected, 1);

    let (r, st) = one_faulty(MockConfig {
        rate_wrong_dimension: 1.0,
        ..base()
    })
    .await;
    let v = vectors(&r);
    assert_eq!(v.len(), 2);
    assert_eq!((v[0].len(), v[1].len()), (5, 6));
    assert_eq!(st.faults_injected, 1);

    let (r, st) = one_faulty(MockConfig {
        rate_nan: 1.0,
        ..base()
    })
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text().starts_with("{\"embeddings\":[{\"values\":[NaN,"),
        "{}",
        r.text()
    );
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    assert_eq!(st.faults_injected, 1);

    // Order: a 500 wins over a truncation when both are certain.
    let (r, _) = one_faulty(MockConfig {
        rate_500: 1.0,
        rate_truncated: 1.0,
        ..base()
    })
    .await;
    assert_eq!(r.status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hang_never_answers_until_shutdown() {
    let s = server(MockConfig {
        dimension: 4,
        rate_hang: 1.0,
        ..MockConfig::default()
    })
    .await;
    let addr = s.addr();
    let pending = tokio::spawn(async move {
        http(
            addr,
            "POST",
            &gemini_path(),
            &[],
            &gemini_body(&["a"], None),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pending.is_finished(),
        "a hung request must not be answered"
    );
    let st = s.stats();
    assert_eq!((st.hangs, st.in_flight, st.requests), (1, 1, 1));

    // A client that gives up frees the slot.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        http(
            addr,
            "POST",
            &gemini_path(),
            &[],
            &gemini_body(&["b"], None),
        ),
    )
    .await;
    assert!(gave_up.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let st = s.stats();
    assert_eq!(st.hangs, 2);
    assert_eq!(st.peak_concurrency, 2);
    assert_eq!(
        st.in_flight, 1,
        "the abandoned request is no longer in flight"
    );

    let t = Instant::now();
    s.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    let r = tokio::time::timeout(Duration::from_secs(3), pending)
        .await
        .expect("hung request ended by shutdown")
        .unwrap();
    assert_eq!(r.status, 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_requests_duplicates_and_peak_concurrency() {
    let s = server(MockConfig {
        dimension: 4,
        latency: Duration::from_millis(200),
        ..MockConfig::default()
    })
    .await;
    let addr = s.addr();
    let t = Instant::now();
    let tasks: Vec<_> = [["a", "b"], ["b", "c"], ["a", "d"]]
        .into_iter()
        .map(|texts| tokio::spawn(async move { gemini(addr, &texts, None).await }))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().status, 200);
    }
    assert!(t.elapsed() >= Duration::from_millis(200));
    let st = s.stats();
    assert_eq!(st.requests, 3);
    assert_eq!(st.texts, 6);
    assert_eq!(st.texts_embedded, 6);
    assert_eq!(st.distinct_texts_embedded, 4);
    assert_eq!(st.duplicate_texts, 2);
    assert_eq!(st.responses_ok, 3);
    assert_eq!(st.peak_concurrency, 3);
    assert_eq!(st.in_flight, 0);
    assert_eq!(st.max_requests_in_any_60s, 3);
    assert_eq!(st.max_texts_in_any_60s, 6);
    let (first, last) = (
        st.first_request_unix_ms.unwrap(),
        st.last_request_unix_ms.unwrap(),
    );
    assert!(first <= last && first > 1_600_000_000_000);

    // GET /stats says the same.
    let r = http(addr, "GET", "/stats", &[], "").await;
    assert_eq!(r.status, 200);
    let over_http: Stats = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(over_http, st);

    // Sequential requests: peak stays 1 after a reset.
    let r = http(addr, "POST", "/stats/reset", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(s.stats(), Stats::default());
    gemini(addr, &["a"], None).await;
    gemini(addr, &["a"], None).await;
    let st = s.stats();
    assert_eq!(
        (st.requests, st.peak_concurrency, st.duplicate_texts),
        (2, 1, 1)
    );
    s.reset_stats();
    assert_eq!(s.stats().requests, 0);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_deterministic_for_a_seed() {
    async fn pattern(seed: u64) -> Vec<u16> {
        let s = server(MockConfig {
            dimension: 2,
            rate_500: 0.5,
            seed,
            ..MockConfig::default()
        })
        .await;
        let mut out = Vec::new();
        for _ in 0..24 {
            out.push(gemini(s.addr(), &["x"], None).await.status);
        }
        s.shutdown().await;
        out
    }
    let a = pattern(42).await;
    assert!(a.contains(&200) && a.contains(&500), "{a:?}");
    assert_eq!(a, pattern(42).await);
    assert_ne!(a, pattern(43).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_server_stops_it() {
    let s = server(MockConfig::default()).await;
    let addr = s.addr();
    assert_eq!(gemini(addr, &["a"], Some(2)).await.status, 200);
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn blocking_server_runs_on_its_own_thread() {
    use std::io::{Read, Write};
    let s = mock_gemini::start_blocking(MockConfig {
        dimension: 3,
        ..MockConfig::default()
    })
    .unwrap();
    let addr = s.addr();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .write_all(&request_bytes(
            "POST",
            &gemini_path(),
            &[],
            &gemini_body(&["q", "r"], None),
        ))
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let v = vectors(&parse_reply(&raw));
    assert_eq!((v.len(), v[0].len()), (2, 3));
    assert_eq!(s.stats().responses_ok, 1);
    assert_eq!(s.base_url(), format!("http://{addr}"));
    drop(s);
    assert!(std::net::TcpStream::connect(addr).is_err());
}
