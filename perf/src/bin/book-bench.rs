//! `book-bench`: replays a synthetic stream through our book, then the common subset through our
//! book and the peers, then each market regime ([`perf::regime`]) through our book and the
//! peers, and prints throughput and latency percentiles side by side, each regime's message mix
//! and book shape, and the worst regime.
//!
//! Flags: `--commands N` (every stream; default 1,000,000 for the full mix and common subset,
//! 2,000,000 per regime), `--symbols N` (4), `--depth N` (resting orders per symbol, 5,000; per
//! regime book too), `--window N` (client-id window per book; the engine default), `--runs N`
//! (throughput runs per book, 5), `--seed N`, `--regime NAME[,NAME…]|all|none` (only these
//! regimes, without the full mix and common subset; `none`: no regimes), `--peers
//! lobster,orderbook-rs|all|none` (which peers run beside ours, default `all`; orderbook-rs takes
//! most of a run's time, so `--peers lobster` makes quick A/B rounds), `--no-peers` (`--peers none`),
//! `--hgrm DIR` (write each latency histogram as an `.hgrm` percentile file).

use std::path::PathBuf;
use std::time::Instant;

use flags::*;
use perf::feed::thousands;
use perf::peers::{Book, Ours};
use perf::regime::{self, RegimeSpec, RegimeStream, PROFILE_BUCKETS};
use perf::report::{self, RegimeLine, RegimeRow, Result};
use perf::stream::{self, Mix, StreamSpec};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Minimal flag parsing: this binary takes only numbers, switches, and regime and peer names.
mod flags {
    use perf::peers::Peers;
    use perf::regime::Regime;

    pub struct Flags {
        /// `--commands`, if given: every stream's length.
        pub commands: Option<usize>,
        pub symbols: u32,
        pub depth: usize,
        pub runs: usize,
        pub seed: u64,
        pub peers: Peers,
        pub hgrm: Option<std::path::PathBuf>,
        pub window: Option<usize>,
        /// The regimes to run.
        pub regimes: Vec<Regime>,
        /// Whether to run the full mix and the common subset (not when `--regime` names some).
        pub mixes: bool,
    }

    pub fn parse() -> Result<Flags, String> {
        let mut f = Flags {
            commands: None,
            symbols: 4,
            depth: 5_000,
            runs: 5,
            seed: 42,
            peers: Peers::ALL,
            hgrm: None,
            window: None,
            regimes: Regime::ALL.to_vec(),
            mixes: true,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            let num =
                |v: String, name: &str| v.parse::<u64>().map_err(|_| format!("{name}: not a number: {v}"));
            match arg.as_str() {
                "--commands" => f.commands = Some(num(value("--commands")?, "--commands")? as usize),
                "--symbols" => f.symbols = num(value("--symbols")?, "--symbols")? as u32,
                "--depth" => f.depth = num(value("--depth")?, "--depth")? as usize,
                "--runs" => f.runs = num(value("--runs")?, "--runs")? as usize,
                "--seed" => f.seed = num(value("--seed")?, "--seed")?,
                "--window" => f.window = Some(num(value("--window")?, "--window")? as usize),
                "--regime" => match value("--regime")?.as_str() {
                    "none" => f.regimes.clear(),
                    list => {
                        f.regimes = Regime::parse_list(list).map_err(|e| e.to_string())?;
                        f.mixes = false;
                    }
                },
                "--peers" => f.peers = Peers::parse(&value("--peers")?)?,
                "--no-peers" => f.peers = Peers::NONE,
                "--hgrm" => f.hgrm = Some(value("--hgrm")?.into()),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        if f.commands == Some(0) || f.symbols == 0 || f.runs == 0 {
            return Err("--commands, --symbols and --runs must be at least 1".into());
        }
        Ok(f)
    }
}

const USAGE: &str = "usage: book-bench [--commands N] [--symbols N] [--depth N] [--window N] [--runs N] [--seed N] [--regime static|normal|swing|flash-crash[,…]|all|none] [--peers lobster,orderbook-rs|all|none] [--no-peers] [--hgrm DIR]";

/// Messages per regime unless `--commands` says otherwise (issue 12's scale).
const REGIME_COMMANDS: usize = 2_000_000;
/// Commands of the full mix and common subset unless `--commands` says otherwise.
const MIX_COMMANDS: usize = 1_000_000;

fn write_hgrm(dir: &PathBuf, results: &[Result], tag: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for r in results {
        // "trading-lab, window 0" → "trading-lab-window-0"
        let name = r.name.split(|c: char| !c.is_ascii_alphanumeric() && c != '.').filter(|w| !w.is_empty());
        let path = dir.join(format!("{tag}-{}.hgrm", name.collect::<Vec<_>>().join("-")));
        perf::report::write_hgrm(&path, &r.latency, 1000.0, "Value(us)")?;
        eprintln!("  wrote {}", path.display());
    }
    Ok(())
}

fn main() {
    let flags = match parse() {
        Ok(f) => f,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("book-bench: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let profile = if cfg!(debug_assertions) { "debug (numbers meaningless)" } else { "optimized" };
    let sizes = match flags.commands {
        Some(n) => format!("{n} commands per stream"),
        None if flags.mixes && !flags.regimes.is_empty() => {
            format!("{MIX_COMMANDS} commands per mix, {REGIME_COMMANDS} messages per regime")
        }
        None if flags.mixes => format!("{MIX_COMMANDS} commands"),
        None => format!("{REGIME_COMMANDS} messages per regime"),
    };
    println!("# book-bench: {sizes}, seed {}, {} CPUs, {profile} build\n", flags.seed, cpus);
    if flags.mixes {
        mixes(&flags);
    }
    if !flags.regimes.is_empty() {
        regimes(&flags);
    }
    println!(
        "Latency is per command, measured with one clock read between commands ({:.0} ns each, included).",
        report::clock_overhead_ns()
    );
}

/// The full mix through our book, then the common subset through ours and the peers.
fn mixes(flags: &Flags) {
    let full = StreamSpec {
        mix: Mix::Full,
        commands: flags.commands.unwrap_or(MIX_COMMANDS),
        symbols: flags.symbols,
        depth: flags.depth,
        seed: flags.seed,
    };
    eprint!("generating the full stream ({} commands, {} symbols)... ", full.commands, full.symbols);
    let t = Instant::now();
    let (cmds, stats) = stream::generate(&full);
    eprintln!("{:.1}s", t.elapsed().as_secs_f64());
    let n = cmds.len() as f64;
    println!(
        "Full mix: {} symbols; {:.0}% resting adds, {:.0}% cancels, {:.0}% marketable, {:.0}% IOC/replace; {} fills.",
        full.symbols,
        100.0 * stats.adds as f64 / n,
        100.0 * stats.cancels as f64 / n,
        100.0 * stats.marketable as f64 / n,
        100.0 * stats.other as f64 / n,
        stats.fills
    );
    let table = stream::table(full.symbols);
    let mut capacity = stream::capacity(&full);
    if let Some(window) = flags.window {
        capacity.client_window = window;
    }
    println!(
        "Engine capacity per book: {} resting orders, a level ring of {} ticks per side, client-id window of {} ended orders.",
        capacity.orders, capacity.levels, capacity.client_window
    );
    eprintln!("replaying through trading-lab ({} runs + 1 timed per command)...", flags.runs);
    let ours_full = report::measure(
        &cmds,
        flags.runs,
        &mut [Box::new(|| Box::new(Ours::new(&table, capacity)) as Box<dyn Book>)],
    );
    println!("\n{}", report::table(&ours_full));
    drop(cmds);

    if flags.peers.any() {
        let common = StreamSpec { mix: Mix::Common, symbols: 1, ..full };
        eprint!("generating the common stream... ");
        let (cmds, stats) = stream::generate(&common);
        eprintln!("done");
        let n = cmds.len() as f64;
        println!(
            "Common subset (what every book supports): 1 symbol; {:.0}% resting adds, {:.0}% cancels, {:.0}% marketable limits; {} fills.",
            100.0 * stats.adds as f64 / n,
            100.0 * stats.cancels as f64 / n,
            100.0 * stats.marketable as f64 / n,
            stats.fills
        );
        let table = stream::table(1);
        eprintln!(
            "replaying through trading-lab and {} ({} interleaved runs + 1 timed per command each)...",
            flags.peers.names().join(", "),
            flags.runs
        );
        let mut makers: Vec<report::Maker<'_>> = vec![
            Box::new(|| Box::new(Ours::new(&table, capacity)) as Box<dyn Book>),
            Box::new(|| Box::new(Ours::without_window(&table, capacity)) as Box<dyn Book>),
        ];
        makers.extend(flags.peers.makers(capacity.orders));
        let results = report::measure(&cmds, flags.runs, &mut makers);
        println!("\n{}", report::table(&results));
        if let Some(dir) = &flags.hgrm {
            if let Err(e) = write_hgrm(dir, &results, "common") {
                eprintln!("book-bench: writing histograms: {e}");
            }
        }
    }
    if let Some(dir) = &flags.hgrm {
        if let Err(e) = write_hgrm(dir, &ours_full, "full") {
            eprintln!("book-bench: writing histograms: {e}");
        }
    }
}

/// Each regime: its native form through our book, interleaved with its common form through ours
/// and the peers; its mix, shape and table; then all regimes side by side and the worst.
fn regimes(flags: &Flags) {
    let commands = flags.commands.unwrap_or(REGIME_COMMANDS);
    println!("## Market regimes\n");
    println!(
        "One symbol, ~{} resting orders; fair price a GBM on the tick grid (σ 3e-6 per message) times the regime's shape; \
         passive orders d ticks from it with P(d) ∝ (d+2)^-1.5 up to 500; see perf/src/regime.rs.",
        thousands(flags.depth as u64)
    );
    if flags.peers.any() {
        println!(
            "The peers' adapters take only GTC limits and cancels, so they replay each regime's **common** form: \
             an IOC is a limit then a cancel of what rests of it, a modify a cancel then a new limit \
             (both lose priority, as our replace does; the two forms leave the same book). \
             Ours replays both; \"time ×\" compares books on the same form. \
             Throughput counts the regime's messages whichever form was replayed.\n"
        );
    }
    let table = stream::table(1);
    let symbol = table.get(common::SymbolId(0)).expect("one symbol").clone();
    let price = |ticks: i64| symbol.price_decimal(common::Price(ticks)).to_string();
    let mut rows = Vec::new();
    for &regime in &flags.regimes {
        let spec = RegimeSpec { regime, commands, depth: flags.depth, seed: flags.seed };
        eprint!("generating the {} regime ({commands} messages)... ", regime.name());
        let t = Instant::now();
        let stream = regime::generate(&spec);
        eprintln!("{:.1}s", t.elapsed().as_secs_f64());
        println!("### {} — {}\n", regime.name(), regime.describe());
        describe(&stream, &price);
        let mut capacity = regime::capacity(&stream);
        if let Some(window) = flags.window {
            capacity.client_window = window;
        }
        let native: &[_] = &stream.native;
        let common: &[_] = &stream.common;
        let mut streams = vec![native];
        let mut makers: Vec<report::Maker<'_>> =
            vec![Box::new(|| Box::new(Ours::new(&table, capacity)) as Box<dyn Book>)];
        if flags.peers.any() {
            makers.push(Box::new(|| Box::new(Ours::new(&table, capacity)) as Box<dyn Book>));
            makers.extend(flags.peers.makers(capacity.orders));
            streams.resize(makers.len(), common);
        }
        let replaying = if flags.peers.any() {
            format!(
                "native through trading-lab, common through trading-lab, {}",
                flags.peers.names().join(", ")
            )
        } else {
            "native through trading-lab".to_string()
        };
        eprintln!("replaying {replaying} ({} interleaved runs + 1 timed per command each)...", flags.runs);
        let results = report::measure_each(&streams, flags.runs, &mut makers);
        let msgs = stream.native.len() as f64;
        let lines: Vec<RegimeLine<'_>> = results
            .iter()
            .zip(&streams)
            .enumerate()
            .map(|(i, (r, s))| RegimeLine {
                form: if i == 0 { "native" } else { "common" },
                result: r,
                msgs_per_s: r.throughput * msgs / s.len() as f64,
            })
            .collect();
        println!("{}", report::regime_table(&lines));
        rows.push(RegimeRow {
            regime: regime.name(),
            native: lines[0].msgs_per_s,
            common: lines[1..].iter().map(|l| (l.result.name, l.msgs_per_s)).collect(),
            paired: results.iter().skip(2).map(|peer| report::paired_range(&results[1], peer)).collect(),
        });
        if let Some(dir) = &flags.hgrm {
            if let Err(e) = write_hgrm(dir, &results[..1], &format!("{}-native", regime.name())) {
                eprintln!("book-bench: writing histograms: {e}");
            }
            if let Err(e) = write_hgrm(dir, &results[1..], &format!("{}-common", regime.name())) {
                eprintln!("book-bench: writing histograms: {e}");
            }
        }
    }
    if flags.peers.any() {
        println!("### Every regime, M msg/s (ours ÷ peer: on the same common form)\n");
        println!("{}", report::regime_summary(&rows));
    } else if let Some(worst) = rows.iter().min_by(|a, b| a.native.total_cmp(&b.native)) {
        println!("Worst regime: {} at {:.2} M msg/s.\n", worst.regime, worst.native / 1e6);
    }
}

/// Prints a regime stream's message mix, order lifecycle, book shape and mid price.
fn describe(stream: &RegimeStream, price: &dyn Fn(i64) -> String) {
    let s = &stream.stats;
    let n = stream.native.len().max(1) as f64;
    let pct = |k: usize| 100.0 * k as f64 / n;
    println!(
        "Mix: {} messages: {:.1} % new ({:.1} % GTC limit, {:.1} % IOC — {:.0} % of new), {:.1} % cancel, {:.1} % modify \
         (reprice or size up, {:.0} per 100 new); {} fills. Of resting orders that ended, {:.1} % were canceled, {:.1} % filled.",
        thousands(stream.native.len() as u64),
        pct(s.new_orders()),
        pct(s.limits),
        pct(s.iocs),
        100.0 * s.ioc_share(),
        pct(s.cancels),
        pct(s.modifies),
        100.0 * s.modify_share(),
        thousands(s.fills as u64),
        100.0 * s.canceled_share(),
        100.0 * (1.0 - s.canceled_share()),
    );
    let sh = &s.shape;
    let spread = |v: &regime::Spread| {
        format!("{} (max {})", thousands(v.mean.round() as u64), thousands(v.max as u64))
    };
    let buckets: Vec<String> = PROFILE_BUCKETS
        .iter()
        .map(|&(from, to)| if to - from == 1 { format!("{from}") } else { format!("{from}–{}", to - 1) })
        .collect();
    let profile: Vec<String> = sh.profile.iter().map(|v| format!("{v:.1}")).collect();
    println!(
        "Book (after a {}-message warm-up), mean per side: bids {} orders on {} levels, asks {} orders on {} levels. \
         Lots per price tick at {} ticks from the touch: {}.",
        thousands(s.warm_up as u64),
        spread(&sh.orders[0]),
        spread(&sh.levels[0]),
        spread(&sh.orders[1]),
        spread(&sh.levels[1]),
        buckets.join(" | "),
        profile.join(" | "),
    );
    let m = &s.mid;
    println!(
        "Mid: {} after the warm-up, low {} (message {}), high {} (message {}), {} at the end. Common form: {} commands.\n",
        price(m.start),
        price(m.low.0),
        thousands(m.low.1 as u64),
        price(m.high.0),
        thousands(m.high.1 as u64),
        price(m.end),
        thousands(stream.common.len() as u64),
    );
}
