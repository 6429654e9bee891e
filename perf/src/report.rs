//! Measuring a replay and printing the numbers: throughput over whole runs, per-command latency
//! from an HdrHistogram; the regimes' tables (each regime, then all side by side with the worst).

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
    /// Commands per second of each throughput run, in the order they ran: run `k` of every book
    /// measured together is one interleaved round.
    pub runs: Vec<f64>,
    /// Per-command latency in nanoseconds (includes one clock read, see [`clock_overhead_ns`]).
    pub latency: Histogram<u64>,
}

/// A named way to make a fresh book.
pub type Maker<'a> = Box<dyn FnMut() -> Box<dyn Book> + 'a>;

/// Replays `cmds` through fresh books from each maker: `runs` timed whole replays each for
/// throughput, interleaved (book A, book B, …, then …, B, A: the order alternates every round) so
/// that a noisy neighbour slows every book alike; then one replay per book timing every command.
pub fn measure(cmds: &[Command], runs: usize, makers: &mut [Maker<'_>]) -> Vec<Result> {
    measure_with(runs, makers, |_| cmds)
}

/// [`measure`] with a stream of its own for each maker (`streams[i]` for `makers[i]`): one
/// regime's native form through our book, interleaved with its common form through every book.
pub fn measure_each(streams: &[&[Command]], runs: usize, makers: &mut [Maker<'_>]) -> Vec<Result> {
    assert_eq!(streams.len(), makers.len(), "one stream per book");
    measure_with(runs, makers, |i| streams[i])
}

fn measure_with<'c>(
    runs: usize,
    makers: &mut [Maker<'_>],
    stream: impl Fn(usize) -> &'c [Command],
) -> Vec<Result> {
    let mut rates = vec![Vec::with_capacity(runs); makers.len()];
    let mut names = vec![""; makers.len()];
    for round in 0..runs.max(1) {
        for i in round_order(round, makers.len()) {
            let make = &mut makers[i];
            let cmds = stream(i);
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
        for cmd in stream(i) {
            book.apply(cmd);
            let now = Instant::now();
            latency.saturating_record((now.duration_since(last).as_nanos() as u64).max(1));
            last = now;
        }
        let runs = rates[i].clone();
        rates[i].sort_by(f64::total_cmp);
        results.push(Result { name: names[i], throughput: rates[i][rates[i].len() / 2], runs, latency });
    }
    results
}

/// The order the books run in a round: as given, then reversed the next round. A book's place in
/// the round matters a little (the one run after another may find the caches and the allocator as
/// that one left them; two copies of the same book measured a few per cent apart in fixed order),
/// so alternating puts every book first and last equally often.
fn round_order(round: usize, books: usize) -> Vec<usize> {
    let order = 0..books;
    if round.is_multiple_of(2) {
        order.collect()
    } else {
        order.rev().collect()
    }
}

/// The lowest and highest of `ours ÷ peer` over the rounds both ran (round `k`: our run `k` over
/// the peer's run `k`, the same stream): how far one round's ratio can stray from the medians'.
/// `None` without a common round.
pub fn paired_range(ours: &Result, peer: &Result) -> Option<(f64, f64)> {
    ours.runs.iter().zip(&peer.runs).map(|(o, p)| o / p).fold(None, |range, r| match range {
        None => Some((r, r)),
        Some((lo, hi)) => Some((r.min(lo), r.max(hi))),
    })
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

/// One row of a regime's table: a book's result on one form of the regime's stream.
pub struct RegimeLine<'a> {
    /// Which form it replayed (`native`, `common`).
    pub form: &'static str,
    /// What it did.
    pub result: &'a Result,
    /// Its throughput in the regime's messages per second (the form's length aside).
    pub msgs_per_s: f64,
}

/// A Markdown table of one regime's results. "time ×" is each book's time for the regime over
/// our book's on the same form; latency is per command of the form replayed.
pub fn regime_table(lines: &[RegimeLine<'_>]) -> String {
    let mut s = String::from(
        "| book | form | M msg/s | time × | p50 µs | p99 µs | p99.9 µs | p99.99 µs | max µs |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for l in lines {
        let ours = lines.iter().find(|o| o.form == l.form).map_or(l.msgs_per_s, |o| o.msgs_per_s);
        let h = &l.result.latency;
        s += &format!(
            "| {} | {} | {:.2} | {:.2}× | {} | {} | {} | {} | {} |\n",
            l.result.name,
            l.form,
            l.msgs_per_s / 1e6,
            ours / l.msgs_per_s,
            us(h.value_at_quantile(0.50)),
            us(h.value_at_quantile(0.99)),
            us(h.value_at_quantile(0.999)),
            us(h.value_at_quantile(0.9999)),
            us(h.max()),
        );
    }
    s
}

/// One regime's throughput per book, in the regime's messages per second.
pub struct RegimeRow {
    /// The regime's name.
    pub regime: &'static str,
    /// Our book on the native form.
    pub native: f64,
    /// Every book on the common form, ours first: (name, messages per second).
    pub common: Vec<(&'static str, f64)>,
    /// Per peer (in `common`'s order, ours left out), [`paired_range`] of ours ÷ it.
    pub paired: Vec<Option<(f64, f64)>>,
}

/// The regimes side by side, M msg/s, and our speed over each peer's on the same (common) form
/// (the ratio of medians, then the lowest and highest single round's); then the worst case of
/// each column, named.
pub fn regime_summary(rows: &[RegimeRow]) -> String {
    let Some(first) = rows.first() else { return String::new() };
    let ours = first.common.first().map_or("ours", |c| c.0);
    let peers: Vec<&str> = first.common.iter().skip(1).map(|c| c.0).collect();
    let mut s = format!("| regime | {ours}, native | {ours}, common |");
    for p in first.common.iter().skip(1) {
        s += &format!(" {} |", p.0);
    }
    for p in &peers {
        s += &format!(" ours ÷ {p} |");
    }
    s += "\n|---|";
    s += &"---:|".repeat(2 + 2 * peers.len());
    s += "\n";
    // Every column's value per row: throughputs in M msg/s, then ratios with their rounds' range.
    let columns = |r: &RegimeRow| {
        let mut v: Vec<(f64, Option<(f64, f64)>)> = vec![(r.native / 1e6, None)];
        v.extend(r.common.iter().map(|c| (c.1 / 1e6, None)));
        let base = r.common.first().map_or(0.0, |c| c.1);
        v.extend(
            r.common
                .iter()
                .skip(1)
                .enumerate()
                .map(|(i, c)| (base / c.1, r.paired.get(i).copied().flatten())),
        );
        v
    };
    let ratio_from = 1 + first.common.len();
    // A cell, with a note in its parentheses (the worst row's regime) before the rounds' range.
    let cell = |k: usize, (v, range): (f64, Option<(f64, f64)>), note: Option<&str>| {
        let value = if k < ratio_from { format!("{v:.2}") } else { format!("{v:.2}×") };
        match (note, range) {
            (Some(note), Some((lo, hi))) => format!("{value} ({note}; {lo:.2}–{hi:.2})"),
            (Some(note), None) => format!("{value} ({note})"),
            (None, Some((lo, hi))) => format!("{value} ({lo:.2}–{hi:.2})"),
            (None, None) => value,
        }
    };
    for r in rows {
        s += &format!("| {} |", r.regime);
        for (k, v) in columns(r).into_iter().enumerate() {
            s += &format!(" {} |", cell(k, v, None));
        }
        s += "\n";
    }
    s += "| **worst** |";
    for k in 0..ratio_from + peers.len() {
        let worst = rows
            .iter()
            .map(|r| (columns(r).get(k).copied().unwrap_or((f64::NAN, None)), r.regime))
            .min_by(|a, b| a.0 .0.total_cmp(&b.0 .0));
        if let Some((v, regime)) = worst {
            s += &format!(" {} |", cell(k, v, Some(regime)));
        }
    }
    s + "\n"
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

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &'static str) -> Result {
        Result { name, throughput: 0.0, runs: Vec::new(), latency: Histogram::new(3).expect("valid") }
    }

    #[test]
    fn the_summary_names_the_worst_regime_of_each_column() {
        let row = |regime, native: f64, ours: f64, peer: f64| RegimeRow {
            regime,
            native: native * 1e6,
            common: vec![("trading-lab", ours * 1e6), ("lobster 0.7", peer * 1e6)],
            paired: vec![Some((ours / peer - 0.25, ours / peer + 0.5))],
        };
        let s = regime_summary(&[row("static", 3.0, 2.5, 2.0), row("flash-crash", 2.0, 1.8, 2.4)]);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines[0],
            "| regime | trading-lab, native | trading-lab, common | lobster 0.7 | ours ÷ lobster 0.7 |"
        );
        assert_eq!(lines[2], "| static | 3.00 | 2.50 | 2.00 | 1.25× (1.00–1.75) |");
        assert_eq!(
            lines[4],
            "| **worst** | 2.00 (flash-crash) | 1.80 (flash-crash) | 2.00 (static) | 0.75× (flash-crash; 0.50–1.25) |"
        );
        let no_rounds = RegimeRow { paired: vec![None], ..row("static", 3.0, 2.5, 2.0) };
        assert!(regime_summary(&[no_rounds]).contains("| 1.25× |"));
    }

    #[test]
    fn rounds_alternate_the_order_books_run_in() {
        assert_eq!(round_order(0, 3), [0, 1, 2]);
        assert_eq!(round_order(1, 3), [2, 1, 0]);
        assert_eq!(round_order(2, 3), [0, 1, 2]);
        assert!(round_order(1, 0).is_empty());
    }

    #[test]
    fn paired_ranges_compare_runs_of_the_same_round() {
        let with = |name, runs: &[f64]| Result { runs: runs.to_vec(), ..result(name) };
        let (ours, peer) = (with("trading-lab", &[10.0, 12.0, 9.0]), with("lobster 0.7", &[5.0, 8.0, 6.0]));
        // Rounds: 2.0, 1.5, 1.5; sorted medians alone would give 10 ÷ 6.
        assert_eq!(paired_range(&ours, &peer), Some((1.5, 2.0)));
        assert_eq!(paired_range(&ours, &with("none", &[])), None);
    }

    #[test]
    fn a_regime_table_compares_books_on_the_same_form() {
        let (a, b, c) = (result("trading-lab"), result("trading-lab"), result("lobster 0.7"));
        let lines = [
            RegimeLine { form: "native", result: &a, msgs_per_s: 3e6 },
            RegimeLine { form: "common", result: &b, msgs_per_s: 2e6 },
            RegimeLine { form: "common", result: &c, msgs_per_s: 1e6 },
        ];
        let s = regime_table(&lines);
        assert!(s.contains("| trading-lab | common | 2.00 | 1.00× |"), "{s}");
        assert!(s.contains("| lobster 0.7 | common | 1.00 | 2.00× |"), "{s}");
    }
}
