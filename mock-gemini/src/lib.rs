//! A deterministic mock of Google's Gemini embedding API
//! (`POST /v1beta/models/{model}:batchEmbedContents`) and of an
//! OpenAI-compatible `POST /v1/embeddings`, with quotas, fault injection and
//! statistics, for testing embedding clients without the network.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let server = mock_gemini::start(mock_gemini::MockConfig::default()).await?;
//! let url = format!(
//!     "{}/v1beta/models/gemini-embedding-001:batchEmbedContents",
//!     server.base_url()
//! );
//! // ... point the client at `url` ...
//! assert_eq!(server.stats().requests, 0);
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
pub mod batch;
mod state;
pub mod vectors;

use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use vectors::{
    GEMINI_NATIVE_DIMENSION, gemini_embedding, normalised_embedding, openai_embedding,
    raw_embedding,
};

use state::Shared;

/// Most entries Gemini accepts in one `batchEmbedContents` call.
pub const MAX_BATCH: usize = 100;

/// What the quotas count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuotaUnit {
    /// Each HTTP request counts 1.
    Requests,
    /// Each text (batch entry / input string) counts 1.
    #[default]
    Texts,
}

impl FromStr for QuotaUnit {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "requests" | "request" => Ok(Self::Requests),
            "texts" | "text" => Ok(Self::Texts),
            other => Err(format!(
                "unknown quota unit {other:?} (expected texts or requests)"
            )),
        }
    }
}

/// Configuration of a mock server. Every field has a neutral default: full
/// 3072-dim vectors, no latency, any key accepted, no quota, no faults.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Vector size when the request names none (Gemini `outputDimensionality`,
    /// OpenAI `dimensions`).
    pub dimension: usize,
    /// Added before every answer of the embedding endpoints.
    pub latency: Duration,
    /// Expected API key; `None` accepts anything (or nothing).
    pub api_key: Option<String>,
    /// Sliding-window quota over `quota_window`, in `quota_unit`s.
    pub quota_per_minute: Option<u64>,
    pub quota_unit: QuotaUnit,
    /// Length of the per-minute window (60 s; tests may shorten it). Also the
    /// window of `Stats::max_requests_in_any_60s` / `max_texts_in_any_60s`.
    pub quota_window: Duration,
    /// Quota over the server's life; once a request is refused for it, every
    /// later request is refused too.
    pub quota_per_day: Option<u64>,
    /// Probability of a "429 storm" answer (quota-shaped, RetryInfo of `storm_retry_delay`).
    pub rate_429: f64,
    /// The retry delay a storm 429 asks for (1 s; tests may shorten it).
    pub storm_retry_delay: Duration,
    pub rate_500: f64,
    pub rate_503: f64,
    /// Probability of never answering (until shutdown or client disconnect).
    pub rate_hang: f64,
    /// Probability of a 200 whose JSON body is cut in half.
    pub rate_truncated: f64,
    /// Probability of a 200 with one embedding fewer than asked.
    pub rate_wrong_count: f64,
    /// Probability of a 200 whose first vector is one value short.
    pub rate_wrong_dimension: f64,
    /// Probability of a 200 whose first value is the bare token `NaN`.
    pub rate_nan: f64,
    /// Seed of the per-request fault RNG.
    pub seed: u64,
    /// Answers every embedding request with this status and body instead (after counting it),
    /// e.g. a 431 with an HTML page, as a proxy in front of the API might.
    pub fixed_answer: Option<FixedAnswer>,
    /// The Batch API's switches (job latency, endings, per-item errors, a cap on jobs).
    pub batch: batch::BatchMock,
}

/// A canned answer for every embedding request (see [`MockConfig::fixed_answer`]).
#[derive(Clone, Debug)]
pub struct FixedAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// Extra response headers (name, value).
    pub headers: Vec<(String, String)>,
}

impl FixedAnswer {
    /// `status` with an HTML page of about `lines` lines, as nginx or a CDN sends.
    pub fn html(status: u16, title: &str, lines: usize) -> FixedAnswer {
        let mut body = format!(
            "<!DOCTYPE html>\n<html>\n<head><title>{status} {title}</title></head>\n<body>\n<center><h1>{status} {title}</h1></center>\n"
        );
        for i in 0..lines {
            body.push_str(&format!("<p>padding line {i}</p>\n"));
        }
        body.push_str("<hr><center>nginx</center>\n</body>\n</html>\n");
        FixedAnswer {
            status,
            content_type: "text/html".into(),
            body,
            headers: Vec::new(),
        }
    }
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            dimension: GEMINI_NATIVE_DIMENSION,
            latency: Duration::ZERO,
            api_key: None,
            quota_per_minute: None,
            quota_unit: QuotaUnit::Texts,
            quota_window: Duration::from_secs(60),
            quota_per_day: None,
            rate_429: 0.0,
            storm_retry_delay: Duration::from_secs(1),
            rate_500: 0.0,
            rate_503: 0.0,
            rate_hang: 0.0,
            rate_truncated: 0.0,
            rate_wrong_count: 0.0,
            rate_wrong_dimension: 0.0,
            rate_nan: 0.0,
            seed: 0,
            fixed_answer: None,
            batch: batch::BatchMock::default(),
        }
    }
}

/// Counters since start or the last reset. "Requests" are the POSTs to the
/// two embedding endpoints (including ones answered 404/400/401); every
/// finished request lands in exactly one of `responses_ok`, `responses_429`,
/// `responses_5xx`, `responses_4xx_other`, `hangs`, `faults_injected`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Embedding requests received.
    pub requests: u64,
    /// Texts in all requests received (0 for a body that did not parse).
    pub texts: u64,
    /// Texts in requests answered with a correct 200.
    pub texts_embedded: u64,
    /// Distinct texts among `texts_embedded`.
    pub distinct_texts_embedded: u64,
    /// `texts_embedded - distinct_texts_embedded`.
    pub duplicate_texts: u64,
    /// Correct 200 answers (faulty 200s count in `faults_injected` only).
    pub responses_ok: u64,
    /// All 429s: per-day, per-minute and injected storms.
    pub responses_429: u64,
    /// Injected 500s and 503s.
    pub responses_5xx: u64,
    /// 400 (invalid request, wrong key, batch too large), 401, 404.
    pub responses_4xx_other: u64,
    /// Requests that got the hang fault.
    pub hangs: u64,
    /// 200s with a truncated body, a wrong count, a wrong dimension or NaN.
    pub faults_injected: u64,
    /// Most embedding requests in progress at one moment (latency and hangs
    /// included).
    pub peak_concurrency: u64,
    /// Embedding requests in progress now.
    pub in_flight: u64,
    /// Most requests received within any window of `quota_window` length.
    pub max_requests_in_any_60s: u64,
    /// Most texts received within any window of `quota_window` length.
    pub max_texts_in_any_60s: u64,
    pub first_request_unix_ms: Option<u64>,
    pub last_request_unix_ms: Option<u64>,
    /// The Batch API's counters (its texts are not in the counters above, which are the
    /// interactive endpoints').
    pub batch: batch::BatchStats,
}

/// A running mock on 127.0.0.1, served by tasks of the caller's tokio
/// runtime. Dropping it stops the server (listener task aborted, hung
/// requests released); `shutdown` stops it gracefully.
pub struct MockServer {
    handle: Handle,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// Starts a mock on `127.0.0.1` at a free port. Must be called inside a
/// tokio runtime (use the multi-thread flavour if the test blocks).
pub async fn start(config: MockConfig) -> std::io::Result<MockServer> {
    start_on(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
}

/// Like [`start`] on a given address (port 0 = any free port).
pub async fn start_on(config: MockConfig, addr: SocketAddr) -> std::io::Result<MockServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared::new(config, shutdown_rx.clone()));
    let app = api::router(shared.clone());
    let mut signal = shutdown_rx;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await;
    });
    Ok(MockServer {
        handle: Handle { addr, shared },
        shutdown_tx,
        task: Some(task),
    })
}

/// What both server flavours answer: address, counters, settings. Reached through `Deref`.
pub struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Handle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Zeroes the statistics (quota state is kept).
    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }

    pub fn config(&self) -> &MockConfig {
        &self.shared.config
    }

    /// Answers at most `limit` requests successfully (counted since start or the last
    /// [`reset_stats`](Self::reset_stats)); later ones wait, unanswered and uncounted, until
    /// the client goes away, the server stops or the limit changes; then they get a 503 (a
    /// client still there retries). Tests use it to stop a client at a known point before
    /// killing it: requests the killed client left waiting are never counted as embedded.
    pub fn hold_after(&self, limit: Option<u64>) {
        self.shared.hold_after(limit);
    }

    /// Requests waiting at the [`hold_after`](Self::hold_after) gate now.
    pub fn held(&self) -> u64 {
        self.shared.held()
    }
}

impl std::ops::Deref for MockServer {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl std::ops::Deref for BlockingMockServer {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl MockServer {
    /// Stops accepting, releases hung requests (they get a 503) and waits
    /// up to 5 s for open connections to finish before aborting.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A mock running on its own thread with its own tokio runtime, for tests
/// that are not async (e.g. ones that run a client binary as a child
/// process). Dropping it stops the server and joins the thread.
pub struct BlockingMockServer {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts a mock on a background thread; returns once it is listening.
pub fn start_blocking(config: MockConfig) -> std::io::Result<BlockingMockServer> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("mock-gemini".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            runtime.block_on(async move {
                match start(config).await {
                    Ok(server) => {
                        let _ = ready_tx.send(Ok((server.addr, server.shared.clone())));
                        let _ = stop_rx.await;
                        server.shutdown().await;
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })?;
    match ready_rx.recv() {
        Ok(Ok((addr, shared))) => Ok(BlockingMockServer {
            handle: Handle { addr, shared },
            stop: Some(stop_tx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(std::io::Error::other("mock-gemini server thread died"))
        }
    }
}

impl BlockingMockServer {
    /// Stops the server and joins its thread (same as dropping it).
    pub fn shutdown(self) {}
}

impl Drop for BlockingMockServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
