//! Issue 11's fault harness, short form (CI): a steady flow through nginx while the matcher, a
//! gateway, an order-svc and nginx are SIGKILLed and Redis and the broker are stopped for 3 s;
//! after each fault nothing acknowledged is lost, no trade is there twice, the books equal the
//! ones rebuilt from the log, and no client got a wrong answer. `cargo test -p itest --test faults
//! -- --nocapture` shows the table; `fault-harness` (src/bin) is the longer run.

use itest::faults::{self, Config};

#[test]
fn every_fault_loses_nothing_and_doubles_nothing() {
    // The stack's logs outlive its run directory, for a failure to be read.
    let logs = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults-logs");
    let config = Config { keep_logs: Some(logs), ..Config::short() };
    let table = faults::run(&config).expect("the harness ran");
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
