//! The matcher's metrics, in one registry: the shared per-route request metrics of its HTTP front
//! (`common::http`) and the pipeline's own — commands by type, rejects by reason, fills, each
//! book's resting orders and levels, the rings, the book thread's time per command, the I/O
//! thread's writes, batches and retries, each hop of a command's way, and the catch-up gauges
//! `/readyz` reads. Every thread gets the same `Arc`.
//!
//! The book thread records on every command, so what it touches is resolved once, up front:
//! labelled children sit in arrays indexed by [`CommandType`], [`RejectReason`] and symbol id
//! ([`BookGauges`]), and recording is an atomic add or a histogram observe — no lock, no lookup
//! by label, no allocation. Every labelled series therefore exists from the start, at zero.

use std::sync::Arc;

use common::http::{buckets, HttpMetrics};
use common::{CommandKind, RejectReason, Side, SymbolTable};
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts,
};

use super::ring::Hops;
use crate::book::Book;

/// What `matcher_commands_total{type}` counts: one per command variant, plus the messages that
/// could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandType {
    /// A new order.
    New,
    /// A cancel.
    Cancel,
    /// A cancel-replace.
    Replace,
    /// Admin: halt a symbol.
    Halt,
    /// Admin: resume a symbol.
    Resume,
    /// Admin: cancel an account's orders.
    MassCancel,
    /// Admin: move a reference price.
    SetReference,
    /// Not decoded (rejected without reaching the book).
    Malformed,
}

impl CommandType {
    /// Every type, in declaration order (`ALL[t as usize] == t`).
    pub const ALL: [CommandType; 8] = [
        CommandType::New,
        CommandType::Cancel,
        CommandType::Replace,
        CommandType::Halt,
        CommandType::Resume,
        CommandType::MassCancel,
        CommandType::SetReference,
        CommandType::Malformed,
    ];

    /// A decoded command's type.
    #[inline]
    pub fn of(kind: &CommandKind) -> CommandType {
        match kind {
            CommandKind::New(_) => CommandType::New,
            CommandKind::Cancel(_) => CommandType::Cancel,
            CommandKind::Replace(_) => CommandType::Replace,
            CommandKind::Halt { .. } => CommandType::Halt,
            CommandKind::Resume { .. } => CommandType::Resume,
            CommandKind::MassCancel { .. } => CommandType::MassCancel,
            CommandKind::SetReference { .. } => CommandType::SetReference,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandType::New => "new",
            CommandType::Cancel => "cancel",
            CommandType::Replace => "replace",
            CommandType::Halt => "halt",
            CommandType::Resume => "resume",
            CommandType::MassCancel => "mass_cancel",
            CommandType::SetReference => "set_reference",
            CommandType::Malformed => "malformed",
        }
    }
}

/// The legs of a command's way that `matcher_hop_seconds{hop}` measures, between the timestamps
/// of [`Hops`] and the moment its outputs were persisted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hop {
    /// The gateway received the request → order entry published the command.
    GatewayToPublished,
    /// Published → the matcher's consumer read it (the broker's part).
    PublishedToConsumed,
    /// Read → the book finished it (the input ring's wait and the book's time).
    ConsumedToMatched,
    /// Matched → its outputs were in Redis and Kafka (the output ring and the I/O thread).
    MatchedToPersisted,
}

impl Hop {
    /// Every hop, in a command's order (`ALL[h as usize] == h`).
    pub const ALL: [Hop; 4] =
        [Hop::GatewayToPublished, Hop::PublishedToConsumed, Hop::ConsumedToMatched, Hop::MatchedToPersisted];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Hop::GatewayToPublished => "gateway_to_published",
            Hop::PublishedToConsumed => "published_to_consumed",
            Hop::ConsumedToMatched => "consumed_to_matched",
            Hop::MatchedToPersisted => "matched_to_persisted",
        }
    }
}

/// Each hop's duration in ns, in [`Hop::ALL`] order, for a command persisted at `persisted`: a hop
/// whose start was not stamped (0: no gateway, or a message that was never decoded) is `None`;
/// clocks of different processes that disagree give 0, never a negative time.
pub fn hop_spans(hops: &Hops, persisted: u64) -> [Option<u64>; 4] {
    let span = |from: u64, to: u64| (from > 0 && to > 0).then(|| to.saturating_sub(from));
    [
        span(hops.gateway, hops.published),
        span(hops.published, hops.consumed),
        span(hops.consumed, hops.matched),
        span(hops.matched, persisted),
    ]
}

/// Nanoseconds as the seconds a histogram takes.
#[inline]
pub fn seconds(ns: u64) -> f64 {
    ns as f64 * 1e-9
}

/// Book-thread buckets: 100 ns … ~1.6 ms, doubling (a command takes well under a microsecond
/// unless it sweeps many levels).
fn book_buckets() -> Vec<f64> {
    exponential_buckets(100e-9, 2.0, 15).unwrap_or_default()
}

/// Hop buckets: 10 µs … ~10 s, doubling (a hop in memory takes microseconds, one through the
/// broker milliseconds, and a backlog seconds).
fn hop_buckets() -> Vec<f64> {
    exponential_buckets(10e-6, 2.0, 21).unwrap_or_default()
}

/// The matcher's metrics: the shared per-route request metrics plus the pipeline's.
pub struct Metrics {
    /// The registry and the request metrics (served by the middleware).
    pub http: Arc<HttpMetrics>,
    /// `matcher_commands_total{type}`, by [`CommandType`] (replays included: the book applies them).
    pub commands: [IntCounter; CommandType::ALL.len()],
    /// `matcher_rejects_total{reason}`, by [`RejectReason`] (`reason as usize`; replays included).
    pub rejects: [IntCounter; RejectReason::ALL.len()],
    /// `matcher_trades_total`.
    pub trades: IntCounter,
    /// `matcher_resting_orders{symbol}`: set per book by the book thread ([`BookGauges`]).
    pub resting: IntGaugeVec,
    /// `matcher_book_levels{symbol,side}`: set per book by the book thread ([`BookGauges`]).
    pub levels: IntGaugeVec,
    /// `matcher_book_command_seconds`: the book's time to apply one command.
    pub book_command: Histogram,
    /// `matcher_consumed_total`.
    pub consumed: IntCounter,
    /// `matcher_consumer_lag_messages{partition}`: messages in an owned partition not read yet
    /// (set by the consumer thread).
    pub consumer_lag: IntGaugeVec,
    /// `matcher_ring_full_total`: pushes that found a ring full and waited.
    pub ring_full: IntCounter,
    /// `matcher_input_ring_occupancy`: commands waiting for the book thread.
    pub ring_in: IntGauge,
    /// `matcher_output_ring_occupancy`: events waiting for the I/O thread.
    pub ring_out: IntGauge,
    /// `matcher_redis_write_seconds`: one batch's Redis transaction, retries included.
    pub redis_write: Histogram,
    /// `matcher_kafka_write_seconds`: one batch's messages, enqueued to every acknowledgement.
    pub kafka_write: Histogram,
    /// `matcher_hop_seconds{hop}`, by [`Hop`]: emitted commands only, once persisted.
    pub hops: [Histogram; Hop::ALL.len()],
    /// `matcher_persisted_batches_total`.
    pub persisted_batches: IntCounter,
    /// `matcher_io_retries_total`.
    pub io_retries: IntCounter,
    /// `matcher_consumer_pauses_total`: the orders consumer went to sleep (`common::wake`).
    pub pauses: IntCounter,
    /// `matcher_consumer_paused`: 1 while it sleeps.
    pub paused: IntGauge,
    /// `matcher_consumer_resumes_total{cause}`: woken by order-svc (`wake`), or on its own
    /// (`recheck`).
    pub resumes: [IntCounter; 2],
    /// `matcher_catch_up_remaining`: commands that were in the log at start and are not read yet.
    pub catch_up_remaining: IntGauge,
    /// `matcher_caught_up`: 1 once everything the log held at start has gone through the whole
    /// pipeline (replayed, or emitted and persisted); the matcher is ready only then.
    pub caught_up: IntGauge,
    /// `matcher_snapshot_pause_seconds`: the book thread's time to take a snapshot's image.
    pub snapshot_pause: Histogram,
    /// `matcher_snapshots_written_total`.
    pub snapshots_written: IntCounter,
    /// `matcher_snapshot_write_failures_total`.
    pub snapshot_failures: IntCounter,
    /// `matcher_snapshot_bytes`: the size of the last snapshot written.
    pub snapshot_bytes: IntGauge,
    /// `matcher_snapshot_restored`: 1 if this run started from a snapshot (0: from the log's start).
    pub snapshot_restored: IntGauge,
    /// `matcher_rebalances_total`: partitions assigned or revoked by the group.
    pub rebalances: IntCounter,
    /// `matcher_owned_partitions`: the orders partitions this matcher owns.
    pub owned_partitions: IntGauge,
    /// `matcher_owns_partition{partition}`: 1 while this matcher owns that orders partition.
    pub owns_partition: IntGaugeVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> prometheus::Result<Metrics> {
        let http = HttpMetrics::new("matcher")?;
        let registry = &http.registry;
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counters = |name: &str, help: &str, label: &str| -> prometheus::Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| -> prometheus::Result<Histogram> {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            registry.register(Box::new(h.clone()))?;
            Ok(h)
        };

        let by_type = counters(
            "matcher_commands_total",
            "Commands applied by the book, by type (replays included)",
            "type",
        )?;
        let commands = CommandType::ALL.map(|t| by_type.with_label_values(&[t.as_str()]));
        let by_reason = counters(
            "matcher_rejects_total",
            "Commands the book refused, by reason (replays included)",
            "reason",
        )?;
        let rejects = RejectReason::ALL.map(|r| by_reason.with_label_values(&[r.as_str()]));
        let by_hop = HistogramVec::new(
            HistogramOpts::new(
                "matcher_hop_seconds",
                "Time of each leg of an emitted command's way, from the gateway to persisted outputs",
            )
            .buckets(hop_buckets()),
            &["hop"],
        )?;
        registry.register(Box::new(by_hop.clone()))?;
        let hops = Hop::ALL.map(|h| by_hop.with_label_values(&[h.as_str()]));
        let by_cause = counters(
            "matcher_consumer_resumes_total",
            "Times the dozing orders consumer resumed, by cause",
            "cause",
        )?;
        let resumes = ["wake", "recheck"].map(|c| by_cause.with_label_values(&[c]));

        Ok(Metrics {
            commands,
            rejects,
            trades: counter("matcher_trades_total", "Fills produced by the book (replays included)")?,
            resting: gauges("matcher_resting_orders", "Orders resting in the book, by symbol", &["symbol"])?,
            levels: gauges(
                "matcher_book_levels",
                "Price levels in the book, by symbol and side",
                &["symbol", "side"],
            )?,
            book_command: histogram(
                "matcher_book_command_seconds",
                "The book thread's time to apply one command",
                book_buckets(),
            )?,
            consumed: counter("matcher_consumed_total", "Messages read from the orders topic")?,
            consumer_lag: gauges(
                "matcher_consumer_lag_messages",
                "Messages in an owned orders partition not read yet",
                &["partition"],
            )?,
            ring_full: counter("matcher_ring_full_total", "Ring pushes that waited for space")?,
            ring_in: gauge("matcher_input_ring_occupancy", "Commands waiting for the book thread")?,
            ring_out: gauge("matcher_output_ring_occupancy", "Events waiting for the I/O thread")?,
            redis_write: histogram(
                "matcher_redis_write_seconds",
                "One output batch's Redis transaction, retries included",
                buckets(),
            )?,
            kafka_write: histogram(
                "matcher_kafka_write_seconds",
                "One output batch's Kafka messages, enqueued to the last acknowledgement, retries included",
                buckets(),
            )?,
            hops,
            persisted_batches: counter(
                "matcher_persisted_batches_total",
                "Output batches written to Redis and Kafka",
            )?,
            io_retries: counter("matcher_io_retries_total", "Redis or Kafka writes retried")?,
            pauses: counter(
                "matcher_consumer_pauses_total",
                "Times the orders consumer gave up its partitions, idle (it takes them again on a wake-up)",
            )?,
            paused: gauge(
                "matcher_consumer_paused",
                "1 while the orders consumer has given up its partitions, idle",
            )?,
            resumes,
            catch_up_remaining: gauge(
                "matcher_catch_up_remaining",
                "Commands in the orders log at start not read yet",
            )?,
            caught_up: gauge(
                "matcher_caught_up",
                "1 once what the log held at start has gone through the pipeline",
            )?,
            snapshot_pause: histogram(
                "matcher_snapshot_pause_seconds",
                "The book thread's pause to take a snapshot's image (written by another thread)",
                hop_buckets(),
            )?,
            snapshots_written: counter("matcher_snapshots_written_total", "Book snapshots written")?,
            snapshot_failures: counter(
                "matcher_snapshot_write_failures_total",
                "Book snapshots that could not be written",
            )?,
            snapshot_bytes: gauge("matcher_snapshot_bytes", "Size of the last book snapshot written")?,
            snapshot_restored: gauge(
                "matcher_snapshot_restored",
                "1 if this run rebuilt its books from a snapshot, 0 if from the start of the log",
            )?,
            rebalances: counter(
                "matcher_rebalances_total",
                "Rebalances of the matchers' group that assigned or revoked partitions here",
            )?,
            owned_partitions: gauge("matcher_owned_partitions", "The orders partitions this matcher owns")?,
            owns_partition: gauges(
                "matcher_owns_partition",
                "1 while this matcher owns the orders partition",
                &["partition"],
            )?,
            http: Arc::new(http),
        })
    }

    /// Counts a command the book thread finished.
    #[inline]
    pub fn command(&self, t: CommandType) {
        self.commands[t as usize].inc();
    }

    /// Counts a rejection.
    #[inline]
    pub fn reject(&self, reason: RejectReason) {
        self.rejects[reason as usize].inc();
    }

    /// Records the hops of a command whose outputs were persisted at `persisted` (ns).
    pub fn observe_hops(&self, hops: &Hops, persisted: u64) {
        for (histogram, span) in self.hops.iter().zip(hop_spans(hops, persisted)) {
            if let Some(ns) = span {
                histogram.observe(seconds(ns));
            }
        }
    }

    /// Every symbol's book gauges, resolved once (for the book thread), indexed by symbol id.
    pub fn book_gauges(&self, table: &SymbolTable) -> Vec<BookGauges> {
        table
            .iter()
            .map(|(_, spec)| {
                let name = spec.name.as_str();
                BookGauges {
                    resting: self.resting.with_label_values(&[name]),
                    bids: self.levels.with_label_values(&[name, Side::Buy.as_str()]),
                    asks: self.levels.with_label_values(&[name, Side::Sell.as_str()]),
                }
            })
            .collect()
    }
}

/// One book's gauges: `matcher_resting_orders` and `matcher_book_levels` of its symbol.
pub struct BookGauges {
    /// `matcher_resting_orders{symbol}`.
    resting: IntGauge,
    /// `matcher_book_levels{symbol,side="buy"}`.
    bids: IntGauge,
    /// `matcher_book_levels{symbol,side="sell"}`.
    asks: IntGauge,
}

impl BookGauges {
    /// Sets them from `book`: three lengths read and three stores.
    #[inline]
    pub fn set(&self, book: &Book) {
        self.resting.set(book.len() as i64);
        self.bids.set(book.levels(Side::Buy) as i64);
        self.asks.set(book.levels(Side::Sell) as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series `name` whose labels include every one of `labels`, as rendered.
    fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|l| rest.contains(l))).then(|| value.parse().ok())?
        })
    }

    #[test]
    fn the_label_arrays_are_indexed_by_their_enums() {
        for (i, t) in CommandType::ALL.into_iter().enumerate() {
            assert_eq!(t as usize, i, "{t:?}");
        }
        for (i, r) in RejectReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?}");
        }
        for (i, h) in Hop::ALL.into_iter().enumerate() {
            assert_eq!(h as usize, i, "{h:?}");
        }
    }

    #[test]
    fn every_labelled_series_exists_from_the_start_and_counts_where_it_should() {
        let m = Metrics::new().unwrap();
        let table = SymbolTable::default();
        let _gauges = m.book_gauges(&table);
        m.command(CommandType::Replace);
        m.command(CommandType::Replace);
        m.reject(RejectReason::PriceBand);
        m.observe_hops(
            &Hops { gateway: 1_000, published: 3_000, consumed: 10_000, matched: 10_500 },
            2_010_500,
        );
        let text = m.http.render();

        assert_eq!(value(&text, "matcher_commands_total", &[r#"type="replace""#]), Some(2.0));
        assert_eq!(value(&text, "matcher_commands_total", &[r#"type="new""#]), Some(0.0));
        assert_eq!(value(&text, "matcher_commands_total", &[r#"type="mass_cancel""#]), Some(0.0));
        assert_eq!(value(&text, "matcher_rejects_total", &[r#"reason="price_band""#]), Some(1.0));
        assert_eq!(value(&text, "matcher_rejects_total", &[r#"reason="not_owner""#]), Some(0.0));
        assert_eq!(value(&text, "matcher_resting_orders", &[r#"symbol="XYZ""#]), Some(0.0));
        assert_eq!(value(&text, "matcher_book_levels", &[r#"symbol="DEF""#, r#"side="sell""#]), Some(0.0));
        for hop in Hop::ALL {
            let label = format!(r#"hop="{}""#, hop.as_str());
            assert_eq!(value(&text, "matcher_hop_seconds_count", &[&label]), Some(1.0), "{hop:?}");
        }
        // 2 ms from matched to persisted: above the 1.28 ms bucket, within the 2.56 ms one.
        let persisted = r#"hop="matched_to_persisted""#;
        assert_eq!(value(&text, "matcher_hop_seconds_bucket", &[persisted, r#"le="0.00128""#]), Some(0.0));
        assert_eq!(value(&text, "matcher_hop_seconds_bucket", &[persisted, r#"le="0.00256""#]), Some(1.0));
        for name in [
            "matcher_book_command_seconds_count",
            "matcher_redis_write_seconds_count",
            "matcher_kafka_write_seconds_count",
            "matcher_output_ring_occupancy",
            "matcher_input_ring_occupancy",
        ] {
            assert_eq!(value(&text, name, &[]), Some(0.0), "{name}");
        }
        for line in text.lines().filter(|l| l.starts_with("matcher_")) {
            assert!(line.contains(r#"service="matcher""#), "{line}");
        }
    }

    #[test]
    fn a_hop_is_measured_only_from_a_stamped_start() {
        let all = Hops { gateway: 100, published: 250, consumed: 1_000, matched: 1_200 };
        assert_eq!(hop_spans(&all, 5_000), [Some(150), Some(750), Some(200), Some(3_800)]);
        // Straight to order entry: no gateway leg.
        let direct = Hops { gateway: 0, ..all };
        assert_eq!(hop_spans(&direct, 5_000), [None, Some(750), Some(200), Some(3_800)]);
        // A message that was never decoded: only the book and I/O legs.
        let bad = Hops { matched: 1_200, ..Hops::default() };
        assert_eq!(hop_spans(&bad, 5_000), [None, None, None, Some(3_800)]);
        // Another process's clock ahead of ours: 0, not a wrap-around.
        let skewed = Hops { published: 2_000, ..all };
        assert_eq!(hop_spans(&skewed, 5_000)[1], Some(0));
        assert_eq!(hop_spans(&skewed, 5_000)[0], Some(1_900));
    }
}
