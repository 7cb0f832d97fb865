//! What a `run` or `worker` process counts for Prometheus, and the `/metrics` endpoint that
//! serves it (`--metrics-addr HOST:PORT`, `distributed.metrics_addr`), in the Prometheus text
//! format written by the `prometheus` crate's encoder.
//!
//! The metrics are the process's own, kept in one registry ([`METRICS`]) and counted where
//! things happen: the service counts texts, requests, 429s, retries, cache hits and request
//! latency; the limiter, requests waiting; the work queue, tasks. Every name starts
//! `puzzlegen_`. The whole deployment's view (every worker, queue and limiter on a Redis) is
//! `puzzlegen status --prometheus`, built from what Redis holds (`crate::pipeline::status`).

use std::net::SocketAddr;
use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    /// Texts the provider answered correctly.
    pub texts_embedded: IntCounter,
    /// Requests to the provider by outcome: `ok`, or the error's cause (`rate_limited`,
    /// `transient`, `bad_answer`, `refused`, ...).
    pub requests: IntCounterVec,
    /// 429 answers.
    pub rate_limited: IntCounter,
    /// Retries by cause.
    pub retries: IntCounterVec,
    /// Texts answered without a request, by tier: `memory` (already asked for by another
    /// theme), `sqlite` (the process's cache), `redis` (the shared tier).
    pub cache_hits: IntCounterVec,
    /// Queue tasks this process finished, by outcome: `done`, `failed`, `reclaimed` (taken
    /// over from a worker that stopped touching it).
    pub tasks: IntCounterVec,
    /// Queue tasks in hand now.
    pub tasks_in_hand: IntGauge,
    /// Tasks of the run this process coordinates that have no result yet.
    pub queue_backlog: IntGauge,
    /// Requests waiting on the limiter now.
    pub limiter_waiting: IntGauge,
    /// Seconds of a request to the provider, sent to answered.
    pub request_seconds: Histogram,
}

/// The one registry of this process.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("a valid name");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let labelled = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &[label]).expect("a valid name");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("a valid name");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let request_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "puzzlegen_request_duration_seconds",
                "Seconds of a request to the embedding provider, sent to answered.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
        )
        .expect("valid buckets");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("registered once");
        Metrics {
            texts_embedded: counter(
                "puzzlegen_texts_embedded_total",
                "Texts the embedding provider answered correctly.",
            ),
            requests: labelled(
                "puzzlegen_requests_total",
                "Requests to the embedding provider, by outcome (ok, or the error's cause).",
                "outcome",
            ),
            rate_limited: counter(
                "puzzlegen_rate_limited_total",
                "HTTP 429 answers from the embedding provider.",
            ),
            retries: labelled(
                "puzzlegen_retries_total",
                "Requests retried, by cause.",
                "cause",
            ),
            cache_hits: labelled(
                "puzzlegen_cache_hits_total",
                "Texts answered without a request, by tier (memory, sqlite, redis).",
                "tier",
            ),
            tasks: labelled(
                "puzzlegen_tasks_total",
                "Queue tasks finished by this process, by outcome (done, failed, reclaimed).",
                "outcome",
            ),
            tasks_in_hand: gauge(
                "puzzlegen_tasks_in_hand",
                "Queue tasks this process is working on now.",
            ),
            queue_backlog: gauge(
                "puzzlegen_queue_backlog",
                "Tasks of the run this process coordinates that have no result yet.",
            ),
            limiter_waiting: gauge(
                "puzzlegen_limiter_waiting_requests",
                "Requests waiting on the rate limiter now.",
            ),
            request_seconds,
            registry,
        }
    }

    /// Everything, in the Prometheus text format.
    pub fn text(&self) -> String {
        encode(&self.registry)
    }
}

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("the text encoder writes to memory");
    String::from_utf8(out).expect("the text format is UTF-8")
}

/// Why `/metrics` could not be served.
#[derive(Debug, thiserror::Error)]
#[error(
    "metrics address {addr} (--metrics-addr, distributed.metrics_addr): cannot listen there: \
     {source} (give a free HOST:PORT, e.g. 127.0.0.1:9464)"
)]
pub struct BindError {
    addr: String,
    source: std::io::Error,
}

/// `/metrics`, listening already (a bad address fails before any work starts).
pub struct Exporter {
    listener: tokio::net::TcpListener,
}

impl Exporter {
    /// Listens on `addr` (`HOST:PORT`; port 0 picks a free one).
    pub async fn bind(addr: &str) -> Result<Exporter, BindError> {
        let err = |source| BindError {
            addr: addr.to_owned(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
        Ok(Exporter { listener })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `GET /metrics` until the process ends (on a task of the runtime).
    pub fn serve(self) -> tokio::task::JoinHandle<()> {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
                    METRICS.text(),
                )
            }),
        );
        tokio::spawn(async move {
            if let Err(e) = axum::serve(self.listener, app).await {
                tracing::warn!("/metrics stopped: {e}");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_is_named_for_puzzlegen_and_counts_what_it_is_given() {
        // Other tests of this process may count too: compare before and after.
        let value = |text: &str, name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0.0)
        };
        let hits = "puzzlegen_cache_hits_total{tier=\"sqlite\"}";
        let before = value(&METRICS.text(), hits);
        METRICS.requests.with_label_values(&["ok"]).inc();
        METRICS.cache_hits.with_label_values(&["sqlite"]).inc_by(3);
        METRICS.request_seconds.observe(0.2);
        let text = METRICS.text();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(line.starts_with("puzzlegen_"), "{line}");
        }
        assert!(value(&text, hits) >= before + 3.0, "{text}");
        assert!(
            text.contains("# TYPE puzzlegen_request_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE puzzlegen_texts_embedded_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE puzzlegen_tasks_in_hand gauge"),
            "{text}"
        );
    }
}
