//! The matcher's metrics, in one registry: the shared per-route request metrics of its HTTP front
//! (`common::http`) and the pipeline's own — commands, fills, the rings, the I/O thread's batches
//! and retries, and the catch-up gauges `/readyz` reads. Every thread gets the same `Arc`.

use std::sync::Arc;

use common::http::HttpMetrics;
use prometheus::{IntCounter, IntGauge};

/// The matcher's metrics: the shared per-route request metrics plus the pipeline's.
pub struct Metrics {
    /// The registry and the request metrics (served by the middleware).
    pub http: Arc<HttpMetrics>,
    /// `matcher_commands_total`.
    pub commands: IntCounter,
    /// `matcher_trades_total`.
    pub trades: IntCounter,
    /// `matcher_consumed_total`.
    pub consumed: IntCounter,
    /// `matcher_ring_full_total`: pushes that found a ring full and waited.
    pub ring_full: IntCounter,
    /// `matcher_input_ring_occupancy`: commands waiting for the book thread.
    pub ring_in: IntGauge,
    /// `matcher_persisted_batches_total`.
    pub persisted_batches: IntCounter,
    /// `matcher_io_retries_total`.
    pub io_retries: IntCounter,
    /// `matcher_catch_up_remaining`: commands that were in the log at start and are not read yet.
    pub catch_up_remaining: IntGauge,
    /// `matcher_caught_up`: 1 once everything the log held at start has gone through the whole
    /// pipeline (replayed, or emitted and persisted); the matcher is ready only then.
    pub caught_up: IntGauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let http = HttpMetrics::new("matcher")?;
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            http.registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let commands = counter("matcher_commands_total", "Commands applied by the book")?;
        let trades = counter("matcher_trades_total", "Fills produced by the book (replays included)")?;
        let consumed = counter("matcher_consumed_total", "Messages read from the orders topic")?;
        let ring_full = counter("matcher_ring_full_total", "Ring pushes that waited for space")?;
        let persisted_batches =
            counter("matcher_persisted_batches_total", "Output batches written to Redis and Kafka")?;
        let io_retries = counter("matcher_io_retries_total", "Redis or Kafka writes retried")?;
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            http.registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let ring_in = gauge("matcher_input_ring_occupancy", "Commands waiting for the book thread")?;
        let catch_up_remaining =
            gauge("matcher_catch_up_remaining", "Commands in the orders log at start not read yet")?;
        let caught_up =
            gauge("matcher_caught_up", "1 once what the log held at start has gone through the pipeline")?;
        Ok(Metrics {
            http: Arc::new(http),
            commands,
            trades,
            consumed,
            ring_full,
            ring_in,
            persisted_batches,
            io_retries,
            catch_up_remaining,
            caught_up,
        })
    }
}
