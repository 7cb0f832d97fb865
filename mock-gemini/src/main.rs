//! `mock-gemini`: serves the mock on 127.0.0.1 until SIGINT/SIGTERM.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mock_gemini::{MockConfig, QuotaUnit};

fn probability(s: &str) -> Result<f64, String> {
    let p: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability in [0, 1]"))
    }
}

/// Mock of the Gemini batchEmbedContents API (and an OpenAI-compatible
/// /v1/embeddings) with deterministic vectors, quotas and fault injection.
#[derive(Parser, Debug)]
#[command(name = "mock-gemini", version)]
struct Args {
    /// Port on 127.0.0.1 (0 = any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Vector size when a request names none.
    #[arg(long, default_value_t = 3072)]
    dimension: usize,
    /// Delay added to every embedding answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Expected API key (default: accept any).
    #[arg(long)]
    api_key: Option<String>,
    /// Sliding-window quota per window (see --quota-window-ms).
    #[arg(long)]
    quota_per_minute: Option<u64>,
    /// What the quotas count: texts or requests.
    #[arg(long, default_value = "texts")]
    quota_unit: QuotaUnit,
    /// Length of the per-minute quota window, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    quota_window_ms: u64,
    /// Quota over the server's life.
    #[arg(long)]
    quota_per_day: Option<u64>,
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    rate_429: f64,
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    rate_500: f64,
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    rate_503: f64,
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    rate_hang: f64,
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    rate_truncated: f64,
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    rate_wrong_count: f64,
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    rate_wrong_dimension: f64,
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    rate_nan: f64,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Batch API: milliseconds from a job's creation to its end.
    #[arg(long, default_value_t = 300)]
    batch_latency_ms: u64,
    /// Batch API: most jobs running at once (0: no cap); a create beyond is a 429.
    #[arg(long, default_value_t = 0)]
    batch_max_active: usize,
    /// Batch API: every n-th distinct text fails as an item the first time (0: never).
    #[arg(long, default_value_t = 0)]
    batch_item_error_every: u64,
    /// Batch API: how the first jobs end, in creation order (later ones succeed), e.g.
    /// `failed,expired,cancelled`.
    #[arg(long, value_delimiter = ',', value_parser = ending)]
    batch_endings: Vec<mock_gemini::batch::BatchEnding>,
    /// Batch API: every n-th Batch or Files API call is answered 503 without being done (0:
    /// never).
    #[arg(long, default_value_t = 0)]
    batch_fail_every: u64,
    /// Batch API: answers quote the request's key (error messages, item errors, a header).
    #[arg(long)]
    batch_echo_key: bool,
}

fn ending(s: &str) -> Result<mock_gemini::batch::BatchEnding, String> {
    use mock_gemini::batch::BatchEnding;
    match s {
        "succeeded" => Ok(BatchEnding::Succeeded),
        "failed" => Ok(BatchEnding::Failed),
        "expired" => Ok(BatchEnding::Expired),
        "cancelled" => Ok(BatchEnding::Cancelled),
        _ => Err(format!(
            "{s:?}: expected succeeded, failed, expired or cancelled"
        )),
    }
}

impl Args {
    fn config(&self) -> MockConfig {
        MockConfig {
            dimension: self.dimension,
            latency: Duration::from_millis(self.latency_ms),
            api_key: self.api_key.clone(),
            quota_per_minute: self.quota_per_minute,
            quota_unit: self.quota_unit,
            quota_window: Duration::from_millis(self.quota_window_ms.max(1)),
            quota_per_day: self.quota_per_day,
            rate_429: self.rate_429,
            storm_retry_delay: Duration::from_secs(1),
            rate_500: self.rate_500,
            rate_503: self.rate_503,
            rate_hang: self.rate_hang,
            rate_truncated: self.rate_truncated,
            rate_wrong_count: self.rate_wrong_count,
            rate_wrong_dimension: self.rate_wrong_dimension,
            rate_nan: self.rate_nan,
            seed: self.seed,
            fixed_answer: None,
            batch: mock_gemini::batch::BatchMock {
                latency: Duration::from_millis(self.batch_latency_ms),
                max_active: self.batch_max_active,
                item_error_every: self.batch_item_error_every,
                endings: self.batch_endings.clone(),
                fail_every: self.batch_fail_every,
                echo_key: self.batch_echo_key,
                ..mock_gemini::batch::BatchMock::default()
            },
        }
    }
}

async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let server = match mock_gemini::start_on(args.config(), addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mock-gemini: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {}", server.base_url());
        let _ = out.flush();
    }
    stop_signal().await;
    server.shutdown().await;
    ExitCode::SUCCESS
}
