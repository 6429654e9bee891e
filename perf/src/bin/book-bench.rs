//! `book-bench`: replays a synthetic stream through our book, then the common subset through our
//! book and the peers, and prints throughput and latency percentiles side by side.
//!
//! Flags: `--commands N` (default 1,000,000), `--symbols N` (4), `--depth N` (resting orders per
//! symbol, 5,000), `--window N` (client-id window per book; the engine default), `--runs N`
//! (throughput runs per book, 5), `--seed N`, `--no-peers`,
//! `--hgrm DIR` (write each latency histogram as an `.hgrm` percentile file).

use std::path::PathBuf;
use std::time::Instant;

use flags::*;
use perf::peers::{Book, Lobster, OrderbookRs, Ours};
use perf::report::{self, Result};
use perf::stream::{self, Mix, StreamSpec};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Minimal flag parsing: this binary takes only numbers and switches.
mod flags {
    pub struct Flags {
        pub commands: usize,
        pub symbols: u32,
        pub depth: usize,
        pub runs: usize,
        pub seed: u64,
        pub peers: bool,
        pub hgrm: Option<std::path::PathBuf>,
        pub window: Option<usize>,
    }

    pub fn parse() -> Result<Flags, String> {
        let mut f = Flags {
            commands: 1_000_000,
            symbols: 4,
            depth: 5_000,
            runs: 5,
            seed: 42,
            peers: true,
            hgrm: None,
            window: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            let num =
                |v: String, name: &str| v.parse::<u64>().map_err(|_| format!("{name}: not a number: {v}"));
            match arg.as_str() {
                "--commands" => f.commands = num(value("--commands")?, "--commands")? as usize,
                "--symbols" => f.symbols = num(value("--symbols")?, "--symbols")? as u32,
                "--depth" => f.depth = num(value("--depth")?, "--depth")? as usize,
                "--runs" => f.runs = num(value("--runs")?, "--runs")? as usize,
                "--seed" => f.seed = num(value("--seed")?, "--seed")?,
                "--window" => f.window = Some(num(value("--window")?, "--window")? as usize),
                "--no-peers" => f.peers = false,
                "--hgrm" => f.hgrm = Some(value("--hgrm")?.into()),
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown flag {other}")),
            }
        }
        if f.commands == 0 || f.symbols == 0 || f.runs == 0 {
            return Err("--commands, --symbols and --runs must be at least 1".into());
        }
        Ok(f)
    }
}

const USAGE: &str = "usage: book-bench [--commands N] [--symbols N] [--depth N] [--window N] [--runs N] [--seed N] [--no-peers] [--hgrm DIR]";

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
    println!(
        "# book-bench: {} commands, seed {}, {} CPUs, {profile} build\n",
        flags.commands, flags.seed, cpus
    );

    let full = StreamSpec {
        mix: Mix::Full,
        commands: flags.commands,
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
        "Engine capacity per book: {} resting orders, {} levels per side, client-id window of {} ended orders.",
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

    if flags.peers {
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
        eprintln!("replaying through trading-lab, lobster and orderbook-rs ({} interleaved runs + 1 timed per command each)...", flags.runs);
        let results = report::measure(
            &cmds,
            flags.runs,
            &mut [
                Box::new(|| Box::new(Ours::new(&table, capacity)) as Box<dyn Book>),
                Box::new(|| Box::new(Ours::without_window(&table, capacity)) as Box<dyn Book>),
                Box::new(|| Box::new(Lobster::new(capacity.orders)) as Box<dyn Book>),
                Box::new(|| Box::new(OrderbookRs::new()) as Box<dyn Book>),
            ],
        );
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
    println!(
        "Latency is per command, measured with one clock read between commands ({:.0} ns each, included).",
        report::clock_overhead_ns()
    );
}
