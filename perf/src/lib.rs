//! Trading Lab's measurements (DESIGN.md §6).
//!
//! # Layout
//! - [`stream`]: the synthetic order flow, full or restricted to what every peer supports.
//! - [`regime`]: regime streams (static, normal, swing, flash crash): a GBM fair price, power-law
//!   depth, a realistic order lifecycle; in our native form and in the peers' common subset.
//! - [`peers`]: our engine and the crates.io books we compare against, behind one trait.
//! - [`prom`]: histograms from the services' own `/metrics`, their difference over a run and its
//!   quantiles (`src/bin/svc-latency.rs`, the load report's view of the ack from inside).
//! - [`report`]: throughput and HdrHistogram latency of a replay, and the Markdown table.
//! - [`feed`]: a minimal stack of the benchmarks' own (broker, Redis, release matcher), the
//!   bounded-book command flow produced straight to `orders`, and the exact caught-up wait; used
//!   by `src/bin/mem-bench.rs` and `src/bin/recovery-bench.rs`. `src/bin/edge-mem.rs` sends the
//!   same [`feed::Flow`] through nginx to the full stack and samples the edge's memory with its
//!   helpers (`group_rss_kb`, `metric_sum`, `RunDir`).
//! - `src/bin/book-bench.rs`: the book benchmark binary; `benches/book.rs`: its criterion twin.
#![forbid(unsafe_code)]

pub mod feed;
pub mod peers;
pub mod prom;
pub mod regime;
pub mod report;
pub mod stream;

/// True if a WebSocket read only ran into its socket's read timeout (no frame yet): the caller
/// reads again (tungstenite keeps a partial frame for the next read).
pub fn read_timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut))
}

/// The value after `--name` in `args`, else `default` (the probes' simple flags).
pub fn flag(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}
