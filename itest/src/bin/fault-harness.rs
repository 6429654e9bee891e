//! Issue 11's fault harness, the longer run: starts a whole native stack on free loopback ports
//! (binaries from the same `target/<profile>` directory as this one), drives a steady two-sided
//! flow through nginx, injects each fault in turn, checks after each, and prints the table. Exits
//! 1 if any invariant broke (the problems follow the table), 2 if the harness could not run.
//!
//! ```text
//! cargo build --release -p matcher -p order-svc -p gateway
//! cargo run --release -p itest --bin fault-harness -- --outage-secs 10
//! cargo run --release -p itest --bin fault-harness -- --matchers 2   # two matchers sharing
//! ```
//! (or the same without `--release` for the debug binaries the tests use).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use itest::faults::{self, Config, Fault};

/// Issue 11's fault harness: every fault under a steady flow, then the checks.
#[derive(Parser)]
#[command(name = "fault-harness")]
struct Args {
    /// How long Redis or the broker stays down.
    #[arg(long, default_value_t = 10.0)]
    outage_secs: f64,
    /// New orders a second, all senders together.
    #[arg(long, default_value_t = 80.0)]
    rate: f64,
    /// How long the flow runs before each fault, and again once the stack is ready.
    #[arg(long, default_value_t = 10.0)]
    settle_secs: f64,
    /// Sender threads, one user each (even ones sell, odd ones buy).
    #[arg(long, default_value_t = 4)]
    senders: usize,
    /// How long the stack may take to be ready again after a fault.
    #[arg(long, default_value_t = 180.0)]
    recover_timeout_secs: f64,
    /// The faults, comma-separated, in order (default: issue 11's six, and kill-matcher-2 after
    /// kill-matcher with two matchers): kill-matcher, kill-matcher-2 (needs --matchers 2),
    /// kill-gateway, kill-order-svc, kill-nginx, stop-redis, stop-broker, pause-redis,
    /// pause-broker.
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Matchers in the stack; with 2 or more they share the orders partitions by leases in
    /// Redis (`./lab up --matchers N`).
    #[arg(long, default_value_t = 1)]
    matchers: usize,
    /// Copy the stack's logs here when the run ends (its run directory is removed).
    #[arg(long)]
    keep_logs: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut list = Vec::new();
    for name in &args.faults {
        match Fault::parse(name) {
            Some(f) => list.push(f),
            None => {
                let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                eprintln!("unknown fault {name:?}; known: {}", known.join(", "));
                return ExitCode::from(2);
            }
        }
    }
    let config = Config {
        rate: args.rate,
        senders: args.senders,
        settle: Duration::from_secs_f64(args.settle_secs),
        outage: Duration::from_secs_f64(args.outage_secs),
        recover_timeout: Duration::from_secs_f64(args.recover_timeout_secs),
        faults: if list.is_empty() { Fault::issue(args.matchers) } else { list },
        matchers: args.matchers,
        progress: true,
        keep_logs: args.keep_logs,
    };
    let table = match faults::run(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("fault-harness: {e:#}");
            return ExitCode::from(2);
        }
    };
    println!("{table}");
    for note in table.notes() {
        println!("note: {note}");
    }
    if table.holds() {
        println!("every invariant held");
        ExitCode::SUCCESS
    } else {
        println!("\nbroken:");
        for p in table.problems() {
            println!("- {p}");
        }
        ExitCode::from(1)
    }
}
