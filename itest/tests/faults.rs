//! Issue 11's fault harness, short form (CI): a steady flow through nginx while the matcher, a
//! gateway, an order-svc and nginx are SIGKILLed and Redis and the broker are stopped for 3 s;
//! after each fault nothing acknowledged is lost, no trade is there twice, the books equal the
//! ones rebuilt from the log, and no client got a wrong answer. The second test does the same on
//! a stack of two matchers sharing the partitions, killing one of them, then the other.
//! `cargo test -p itest --test faults -- --nocapture` shows the tables; `fault-harness` (src/bin)
//! is the longer run.

use std::sync::Mutex;

use itest::faults::{self, Config, Fault, Table};

/// One stack at a time: two whole stacks side by side on a small machine would time each other's
/// recoveries, not their own.
static ONE_STACK: Mutex<()> = Mutex::new(());

/// Runs `config` (the stack's logs kept under `logs`, outliving its run directory, for a failure
/// to be read) and requires every invariant.
fn run_and_check(config: Config, logs: &str) {
    let _one = ONE_STACK.lock().unwrap_or_else(|p| p.into_inner());
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(logs);
    let config = Config { keep_logs: Some(logs), ..config };
    let table: Table = faults::run(&config).expect("the harness ran");
    println!("\n{table}");
    for note in table.notes() {
        println!("note: {note}");
    }
    for row in &table.rows {
        assert_eq!(row.lost, 0, "{}: acknowledged orders lost\n{table}", row.fault);
        assert_eq!(row.duplicate_trades, 0, "{}: duplicate trades\n{table}", row.fault);
        assert_eq!(row.wrong, 0, "{}: wrong answers\n{table}", row.fault);
    }
    assert!(table.holds(), "{table}\n{}", table.problems().join("\n"));
}

#[test]
fn every_fault_loses_nothing_and_doubles_nothing() {
    run_and_check(Config::short(), "faults-logs");
}

#[test]
fn two_matchers_one_killed_loses_nothing_and_doubles_nothing() {
    let config =
        Config { matchers: 2, faults: vec![Fault::KillMatcher2, Fault::KillMatcher], ..Config::short() };
    run_and_check(config, "faults-two-matchers-logs");
}
