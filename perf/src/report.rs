//! Measuring a replay and printing the numbers: throughput over whole runs, per-command latency
//! from an HdrHistogram.

use std::time::{Duration, Instant};

use common::Command;
use hdrhistogram::Histogram;

use crate::peers::Book;

/// What one book did with one stream.
#[derive(Clone, Debug)]
pub struct Result {
    /// The book.
    pub name: &'static str,
    /// Median commands per second over the throughput runs.
    pub throughput: f64,
    /// Per-command latency in nanoseconds (includes one clock read, see [`clock_overhead_ns`]).
    pub latency: Histogram<u64>,
}

/// A named way to make a fresh book.
pub type Maker<'a> = Box<dyn FnMut() -> Box<dyn Book> + 'a>;

/// Replays `cmds` through fresh books from each maker: `runs` timed whole replays each for
/// throughput, interleaved (book A, book B, …, A, B, …) so that a noisy neighbour slows every
/// book alike; then one replay per book timing every command.
pub fn measure(cmds: &[Command], runs: usize, makers: &mut [Maker<'_>]) -> Vec<Result> {
    let mut rates = vec![Vec::with_capacity(runs); makers.len()];
    let mut names = vec![""; makers.len()];
    for _ in 0..runs.max(1) {
        for (i, make) in makers.iter_mut().enumerate() {
            let mut book = make();
            names[i] = book.name();
            let start = Instant::now();
            for cmd in cmds {
                book.apply(cmd);
            }
            let took = start.elapsed();
            rates[i].push(cmds.len() as f64 / took.as_secs_f64());
        }
    }
    let mut results = Vec::with_capacity(makers.len());
    for (i, make) in makers.iter_mut().enumerate() {
        let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds");
        let mut book = make();
        let mut last = Instant::now();
        for cmd in cmds {
            book.apply(cmd);
            let now = Instant::now();
            latency.saturating_record((now.duration_since(last).as_nanos() as u64).max(1));
            last = now;
        }
        rates[i].sort_by(f64::total_cmp);
        results.push(Result { name: names[i], throughput: rates[i][rates[i].len() / 2], latency });
    }
    results
}

/// What one `Instant::now()` between commands adds to each latency sample, in nanoseconds.
pub fn clock_overhead_ns() -> f64 {
    let n = 1_000_000;
    let start = Instant::now();
    let mut last = start;
    for _ in 0..n {
        let now = Instant::now();
        std::hint::black_box(now.duration_since(last));
        last = now;
    }
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn us(ns: u64) -> String {
    format!("{:.3}", Duration::from_nanos(ns).as_secs_f64() * 1e6)
}

/// A Markdown table of results; "time ×" is each book's time for the stream over the first row's.
pub fn table(results: &[Result]) -> String {
    let mut s = String::from(
        "| book | commands/s | time × | p50 µs | p99 µs | p99.9 µs | p99.99 µs | max µs |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let base = results.first().map_or(1.0, |r| r.throughput);
    for r in results {
        let h = &r.latency;
        s += &format!(
            "| {} | {:.2} M | {:.2}× | {} | {} | {} | {} | {} |\n",
            r.name,
            r.throughput / 1e6,
            base / r.throughput,
            us(h.value_at_quantile(0.50)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.value_at_quantile(0.9999)),
            us(h.max()),
        );
    }
    s
}

/// Writes `h` as an `.hgrm` percentile file (HdrHistogram's text format), values divided by
/// `divisor` (1e3 for µs from ns, 1e6 for ms) under the column `header`.
pub fn write_hgrm(
    path: &std::path::Path,
    h: &hdrhistogram::Histogram<u64>,
    divisor: f64,
    header: &str,
) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(file, "{header:>12} {:>14} {:>10} {:>14}", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    for v in h.iter_quantiles(1) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 { 1.0 / (1.0 - q) } else { f64::INFINITY };
        writeln!(
            file,
            "{:>12.3} {:>14.12} {:>10} {:>14.2}",
            v.value_iterated_to() as f64 / divisor,
            q,
            v.count_since_last_iteration(),
            inv
        )?;
    }
    file.flush()
}
