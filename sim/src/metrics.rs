//! The simulator's metrics (Prometheus conventions, DESIGN.md §6), in the registry of the shared
//! HTTP metrics that `/metrics` renders: what it did (`sim_actions_total{kind}`), what went wrong
//! (`sim_errors_total{kind}`), how long the API took to answer it (`sim_request_seconds{kind}`)
//! and how many quotes it believes rest (`sim_quotes_resting`).

use std::sync::Arc;

use common::http::{buckets, HttpMetrics};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

/// The kinds of action `sim_actions_total` counts. A cancel-replace without `PATCH` counts as a
/// `cancel` and a `place`.
pub const ACTIONS: [&str; 4] = ["place", "amend", "cancel", "cross"];

/// The kinds of error `sim_errors_total` counts: a `429`, no answer or a `5xx`, a `401`, a halted
/// symbol, another `4xx`, and an order the book rejected (seen on its status).
pub const ERRORS: [&str; 6] =
    ["rate_limited", "unavailable", "unauthorized", "halted", "refused", "rejected"];

/// The kinds of request `sim_request_seconds` times.
pub const REQUESTS: [&str; 7] = ["place", "amend", "cancel", "cross", "check", "read", "auth"];

/// Every metric of the simulator.
pub struct Metrics {
    /// The registry and the shared request metrics of its own endpoints.
    pub http: Arc<HttpMetrics>,
    /// `sim_actions_total{kind}`: orders placed, amended, canceled, and crosses sent (`202`s).
    pub actions: IntCounterVec,
    /// `sim_errors_total{kind}`.
    pub errors: IntCounterVec,
    /// `sim_request_seconds{kind}`: request → answer through the public API.
    pub request: HistogramVec,
    /// `sim_quotes_resting`: quotes the simulator believes rest on the books.
    pub quotes: IntGauge,
}

impl Metrics {
    /// Registers every metric, each label value at zero from the start.
    pub fn new() -> prometheus::Result<Metrics> {
        let http = HttpMetrics::new("market-sim")?;
        let actions = IntCounterVec::new(
            Opts::new("sim_actions_total", "Orders placed, amended, canceled; crosses"),
            &["kind"],
        )?;
        let errors = IntCounterVec::new(Opts::new("sim_errors_total", "Errors by kind"), &["kind"])?;
        let request = HistogramVec::new(
            HistogramOpts::new("sim_request_seconds", "Public API request latency by kind")
                .buckets(buckets()),
            &["kind"],
        )?;
        let quotes = IntGauge::new("sim_quotes_resting", "Quotes believed to rest on the books")?;
        http.registry.register(Box::new(actions.clone()))?;
        http.registry.register(Box::new(errors.clone()))?;
        http.registry.register(Box::new(request.clone()))?;
        http.registry.register(Box::new(quotes.clone()))?;
        for kind in ACTIONS {
            actions.with_label_values(&[kind]);
        }
        for kind in ERRORS {
            errors.with_label_values(&[kind]);
        }
        for kind in REQUESTS {
            request.with_label_values(&[kind]);
        }
        Ok(Metrics { http: Arc::new(http), actions, errors, request, quotes })
    }

    /// Counts one action.
    pub fn action(&self, kind: &str) {
        self.actions.with_label_values(&[kind]).inc();
    }

    /// Counts one error.
    pub fn error(&self, kind: &str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// The count of one action so far.
    pub fn actions_of(&self, kind: &str) -> u64 {
        self.actions.with_label_values(&[kind]).get()
    }

    /// Every error so far.
    pub fn errors_total(&self) -> u64 {
        ERRORS.iter().map(|k| self.errors.with_label_values(&[k]).get()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_shows_from_the_start() {
        let m = Metrics::new().unwrap();
        m.action("place");
        m.error("halted");
        let text = m.http.render();
        for needle in [
            r#"sim_actions_total{kind="place",service="market-sim"} 1"#,
            r#"sim_actions_total{kind="cross",service="market-sim"} 0"#,
            r#"sim_errors_total{kind="halted",service="market-sim"} 1"#,
            r#"sim_request_seconds_count{kind="auth",service="market-sim"} 0"#,
            "sim_quotes_resting",
        ] {
            assert!(text.contains(needle), "{needle} missing:\n{text}");
        }
        assert_eq!((m.actions_of("place"), m.errors_total()), (1, 1));
    }
}
